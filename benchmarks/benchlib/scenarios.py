"""What is measured: the payloads (request + expected answer) and the scenario table.

A scenario is one row of the results: a transport, a payload and a concurrency. Every server
that has the payload's model runs every scenario whose transport has a driver (see
``drivers.DRIVERS``). Adding gRPC is adding a driver: the gRPC rows are already in the table and
are reported as skipped until then.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

__all__ = [
    "PAYLOADS",
    "SCENARIOS",
    "TRANSPORT_NAMES",
    "Payload",
    "Request",
    "Scenario",
    "build_requests",
]

#: How transports are written in the results.
TRANSPORT_NAMES: Mapping[str, str] = {"rest": "REST", "grpc": "gRPC"}

#: Elements of the large tensor.
LARGE_ELEMENTS = 1_000_000


@dataclass(frozen=True)
class Payload:
    """A kind of request: which model answers it and how it is described in the table."""

    key: str
    model: str
    label: str


@dataclass(frozen=True)
class Request:
    """One prepared request: its V2 JSON body and the answer every server must give."""

    payload: Payload
    body: bytes
    #: The first output's data, flattened.
    expected: tuple[float, ...]
    #: Relative tolerance of the comparison (0: exact, for class labels).
    rtol: float = 0.0


@dataclass(frozen=True)
class Scenario:
    """One row of the results: a transport, a payload and a closed-loop concurrency."""

    key: str
    transport: str
    payload: str
    concurrency: int
    #: A request slower than this counts as an error (timeout).
    timeout_s: float = 10.0

    def label(self) -> str:
        """``REST sum [1,16] FP32, c=32``."""
        transport = TRANSPORT_NAMES.get(self.transport, self.transport)
        return f"{transport} {PAYLOADS[self.payload].label}, c={self.concurrency}"


PAYLOADS: Mapping[str, Payload] = {
    p.key: p
    for p in (
        Payload("sum-16", "sum", "sum [1,16] FP32"),
        Payload("digits-svc", "digits-svc", "digits SVC [1,64] FP32"),
        Payload("digits-xgb", "digits-xgb", "digits XGBoost [1,64] FP32"),
        Payload("sum-1m", "sum", "sum [1,1000000] FP32"),
    )
}

SCENARIOS: Sequence[Scenario] = (
    Scenario("rest-sum16-c1", "rest", "sum-16", 1),
    Scenario("rest-sum16-c32", "rest", "sum-16", 32),
    Scenario("rest-svc-c32", "rest", "digits-svc", 32),
    Scenario("rest-xgb-c32", "rest", "digits-xgb", 32),
    # About 19 MB of JSON per request: a few in flight keep one server CPU busy.
    Scenario("rest-sum1m-c4", "rest", "sum-1m", 4, timeout_s=60.0),
    # gRPC: the same payloads (the large one as raw_input_contents). They run once
    # drivers.DRIVERS has a "grpc" driver; until then they are reported as skipped.
    Scenario("grpc-sum16-c1", "grpc", "sum-16", 1),
    Scenario("grpc-sum16-c32", "grpc", "sum-16", 32),
    Scenario("grpc-svc-c32", "grpc", "digits-svc", 32),
    Scenario("grpc-xgb-c32", "grpc", "digits-xgb", 32),
    Scenario("grpc-sum1m-c4", "grpc", "sum-1m", 4, timeout_s=60.0),
)


def _v2_body(values: Sequence[float], shape: list[int]) -> bytes:
    # As a V2 client sends it (tritonclient, requests): a flat list of the floats' full repr.
    request = {"inputs": [{"name": "x", "shape": shape, "datatype": "FP32", "data": values}]}
    return json.dumps(request, separators=(",", ":")).encode()


def build_requests(artifacts: Mapping[str, Any]) -> dict[str, Request]:
    """Every payload's request; digits payloads need the sample from ``artifacts.json``.

    A digits payload whose artefact could not be built is left out.
    """
    small = np.arange(1, 17, dtype=np.float32) / 8  # exact in binary: the sum is exactly 17
    large = np.random.default_rng(0).random(LARGE_ELEMENTS, dtype=np.float32)
    requests = {
        "sum-16": Request(
            PAYLOADS["sum-16"], _v2_body(small.tolist(), [1, 16]), (float(small.sum()),)
        ),
        "sum-1m": Request(
            PAYLOADS["sum-1m"],
            _v2_body(large.tolist(), [1, LARGE_ELEMENTS]),
            (float(large.astype(np.float64).sum()),),
            # float32 accumulation (pairwise in numpy) drifts a little from the float64 sum.
            rtol=1e-4,
        ),
    }
    for key in ("digits-svc", "digits-xgb"):
        built = artifacts.get(key, {})
        if "input" in built:
            body = _v2_body(built["input"], [1, len(built["input"])])
            requests[key] = Request(PAYLOADS[key], body, tuple(built["predict"]))
    return requests

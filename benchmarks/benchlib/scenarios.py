"""What is measured: the payloads (request + expected answer) and the scenario table.

A scenario is one row of the results: a transport, a payload and a concurrency. Every server
that has the payload's model and speaks the transport runs it, when the transport has a driver
here (see ``drivers.drivers``; without one its rows are skipped with a note). A request carries
its tensor as well as its V2 JSON body, so the gRPC driver builds its protobuf message from the
same numbers.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
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
#: Every request has one FP32 input of this name.
INPUT_NAME = "x"
INPUT_DATATYPE = "FP32"


@dataclass(frozen=True)
class Payload:
    """A kind of request: which model answers it and how it is described in the table."""

    key: str
    model: str
    label: str
    #: Over gRPC, send the tensor as ``raw_input_contents`` (else typed ``contents``).
    grpc_raw: bool = False


@dataclass(frozen=True)
class Request:
    """One prepared request: its V2 JSON body and the answer every server must give."""

    payload: Payload
    body: bytes
    #: The first output's data, flattened.
    expected: tuple[float, ...]
    #: Relative tolerance of the comparison (0: exact, for class labels).
    rtol: float = 0.0
    #: The input tensor (FP32, with its shape); the JSON body holds the same values.
    tensor: np.ndarray[Any, np.dtype[np.float32]] | None = field(default=None, compare=False)


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
        payload = PAYLOADS[self.payload]
        raw = " raw" if self.transport == "grpc" and payload.grpc_raw else ""
        return f"{transport} {payload.label}{raw}, c={self.concurrency}"


PAYLOADS: Mapping[str, Payload] = {
    p.key: p
    for p in (
        Payload("sum-16", "sum", "sum [1,16] FP32"),
        Payload("digits-svc", "digits-svc", "digits SVC [1,64] FP32"),
        Payload("digits-xgb", "digits-xgb", "digits XGBoost [1,64] FP32"),
        Payload("sum-1m", "sum", "sum [1,1000000] FP32", grpc_raw=True),
    )
}

SCENARIOS: Sequence[Scenario] = (
    Scenario("rest-sum16-c1", "rest", "sum-16", 1),
    Scenario("rest-sum16-c32", "rest", "sum-16", 32),
    Scenario("rest-svc-c32", "rest", "digits-svc", 32),
    Scenario("rest-xgb-c32", "rest", "digits-xgb", 32),
    # About 19 MB of JSON per request: a few in flight keep one server CPU busy.
    Scenario("rest-sum1m-c4", "rest", "sum-1m", 4, timeout_s=60.0),
    # gRPC: the same payloads, typed `contents` except the large one (raw_input_contents, about
    # 4 MB per request).
    Scenario("grpc-sum16-c1", "grpc", "sum-16", 1),
    Scenario("grpc-sum16-c32", "grpc", "sum-16", 32),
    Scenario("grpc-svc-c32", "grpc", "digits-svc", 32),
    Scenario("grpc-xgb-c32", "grpc", "digits-xgb", 32),
    Scenario("grpc-sum1m-c4", "grpc", "sum-1m", 4, timeout_s=60.0),
)


def _v2_body(tensor: np.ndarray[Any, np.dtype[np.float32]]) -> bytes:
    # As a V2 client sends it (tritonclient, requests): a flat list of the floats' full repr.
    data = tensor.ravel().tolist()
    tensor_input = {"name": INPUT_NAME, "shape": list(tensor.shape), "datatype": INPUT_DATATYPE}
    request = {"inputs": [{**tensor_input, "data": data}]}
    return json.dumps(request, separators=(",", ":")).encode()


def _request(
    key: str,
    tensor: np.ndarray[Any, np.dtype[np.float32]],
    expected: Sequence[float],
    rtol: float = 0.0,
) -> Request:
    return Request(PAYLOADS[key], _v2_body(tensor), tuple(expected), rtol, tensor)


def build_requests(artifacts: Mapping[str, Any]) -> dict[str, Request]:
    """Every payload's request; digits payloads need the sample from ``artifacts.json``.

    A digits payload whose artefact could not be built is left out.
    """
    small = np.arange(1, 17, dtype=np.float32).reshape(1, 16) / np.float32(8)  # sum: 17
    large = np.random.default_rng(0).random((1, LARGE_ELEMENTS), dtype=np.float32)
    requests = {
        "sum-16": _request("sum-16", small, (float(small.sum()),)),
        # float32 accumulation (pairwise in numpy) drifts a little from the float64 sum.
        "sum-1m": _request("sum-1m", large, (float(large.astype(np.float64).sum()),), 1e-4),
    }
    for key in ("digits-svc", "digits-xgb"):
        built = artifacts.get(key, {})
        if "input" in built:
            row = np.asarray(built["input"], dtype=np.float32).reshape(1, -1)
            requests[key] = _request(key, row, built["predict"])
    return requests

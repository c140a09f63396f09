"""What is measured: the payloads (request + expected answer) and the scenario table.

A scenario is one row of the results: a transport, a payload and a concurrency. Every server
that has the payload's model and speaks the transport runs it, when the transport has a driver
here (see ``drivers.drivers``; without one its rows are skipped with a note). A request carries
its tensor as well as its V2 JSON body, so the gRPC driver builds its protobuf message from the
same numbers.

One payload uses Triton's binary tensor data extension (``inferkit.transports.binary``): the
body is a JSON header of ``Inference-Header-Content-Length`` bytes followed by the tensor's raw
little-endian bytes, the input carrying ``parameters.binary_data_size``, exactly as
``tritonclient.http`` builds it. It asks for its output as JSON (``binary_data: false``), so
its answer is checked like every other one.

The adaptive batching payloads send one row ([1, 4] FP32) to the ``batch-on`` / ``batch-off``
models (5 ms plus 20 us per row of busy compute per call, ``repositories``); their scenarios come
in pairs, the same load with batching on and off, which :data:`BATCH_PAIRS` names for the
*Adaptive batching* table of the results.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

__all__ = [
    "BATCH_PAIRS",
    "PAYLOADS",
    "SCENARIOS",
    "TRANSPORT_NAMES",
    "BatchPair",
    "Payload",
    "Request",
    "Scenario",
    "binary_body",
    "build_requests",
]

#: How transports are written in the results.
TRANSPORT_NAMES: Mapping[str, str] = {"rest": "REST", "grpc": "gRPC"}

#: Elements of the large tensor.
LARGE_ELEMENTS = 1_000_000
#: Every request has one FP32 input of this name.
INPUT_NAME = "x"
INPUT_DATATYPE = "FP32"
#: The sum model's output, requested by name (as JSON) in the binary request.
OUTPUT_NAME = "total"
#: The header of the binary extension: where the JSON part of the body ends.
HEADER_LENGTH = "Inference-Header-Content-Length"


@dataclass(frozen=True)
class Payload:
    """A kind of request: which model answers it and how it is described in the table."""

    key: str
    model: str
    label: str
    #: Over gRPC, send the tensor as ``raw_input_contents`` (else typed ``contents``).
    grpc_raw: bool = False
    #: Over REST, send the tensor with the binary data extension (else as V2 JSON).
    binary: bool = False


def _json_headers() -> dict[str, str]:
    return {"Content-Type": "application/json"}


@dataclass(frozen=True)
class Request:
    """One prepared request: its REST body and the answer every server must give."""

    payload: Payload
    #: The V2 JSON body, or the binary extension's body (see ``headers``).
    body: bytes
    #: The first output's data, flattened.
    expected: tuple[float, ...]
    #: Relative tolerance of the comparison (0: exact, for class labels).
    rtol: float = 0.0
    #: The input tensor (FP32, with its shape); the JSON body holds the same values.
    tensor: np.ndarray[Any, np.dtype[np.float32]] | None = field(default=None, compare=False)
    #: The REST request's headers besides Host and Content-Length.
    headers: Mapping[str, str] = field(default_factory=_json_headers)


@dataclass(frozen=True)
class Scenario:
    """One row of the results: a transport, a payload and a closed-loop concurrency."""

    key: str
    transport: str
    payload: str
    concurrency: int
    #: A request slower than this counts as an error (timeout).
    timeout_s: float = 10.0
    #: The scenario whose MLServer figure the *vs MLServer* ratio divides by when MLServer
    #: cannot run this one (it has no binary extension: compared with its JSON row).
    mlserver_fallback: str | None = None

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
        Payload("sum-1m-binary", "sum", "sum [1,1000000] FP32 binary", binary=True),
        Payload("batch-on", "batch-on", "5 ms model [1,4] FP32, batching on"),
        Payload("batch-off", "batch-off", "5 ms model [1,4] FP32, batching off"),
    )
}

SCENARIOS: Sequence[Scenario] = (
    Scenario("rest-sum16-c1", "rest", "sum-16", 1),
    Scenario("rest-sum16-c32", "rest", "sum-16", 32),
    Scenario("rest-svc-c32", "rest", "digits-svc", 32),
    Scenario("rest-xgb-c32", "rest", "digits-xgb", 32),
    # About 19 MB of JSON per request: a few in flight keep one server CPU busy.
    Scenario("rest-sum1m-c4", "rest", "sum-1m", 4, timeout_s=60.0),
    # The same tensor with the binary extension: 4,000,000 raw bytes behind a small JSON header.
    # MLServer has no binary extension: its ratio is against MLServer's JSON row above.
    Scenario(
        "rest-sum1m-bin-c4",
        "rest",
        "sum-1m-binary",
        4,
        timeout_s=60.0,
        mlserver_fallback="rest-sum1m-c4",
    ),
    # gRPC: the same payloads, typed `contents` except the large one (raw_input_contents, about
    # 4 MB per request).
    Scenario("grpc-sum16-c1", "grpc", "sum-16", 1),
    Scenario("grpc-sum16-c32", "grpc", "sum-16", 32),
    Scenario("grpc-svc-c32", "grpc", "digits-svc", 32),
    Scenario("grpc-xgb-c32", "grpc", "digits-xgb", 32),
    Scenario("grpc-sum1m-c4", "grpc", "sum-1m", 4, timeout_s=60.0),
    # Adaptive batching: one row per request to a model costing 5 ms + 20 us per row per call,
    # with batching on (max_batch_size 32, max_batch_time 10 ms) and off; c=32 for throughput,
    # c=1 for the latency batching adds when there is nothing to batch with.
    Scenario("rest-batch-on-c32", "rest", "batch-on", 32),
    Scenario("rest-batch-off-c32", "rest", "batch-off", 32),
    Scenario("rest-batch-on-c1", "rest", "batch-on", 1),
    Scenario("rest-batch-off-c1", "rest", "batch-off", 1),
    Scenario("grpc-batch-on-c32", "grpc", "batch-on", 32),
    Scenario("grpc-batch-off-c32", "grpc", "batch-off", 32),
)


@dataclass(frozen=True)
class BatchPair:
    """The batching scenarios of one transport, by key: c=32 with batching on and off, and the
    c=1 pair (None where the transport has none)."""

    transport: str
    on: str
    off: str
    on_c1: str | None = None
    off_c1: str | None = None


#: The rows of the *Adaptive batching* table, one per transport.
BATCH_PAIRS: Sequence[BatchPair] = (
    BatchPair(
        "rest", "rest-batch-on-c32", "rest-batch-off-c32", "rest-batch-on-c1", "rest-batch-off-c1"
    ),
    BatchPair("grpc", "grpc-batch-on-c32", "grpc-batch-off-c32"),
)


def _v2_body(tensor: np.ndarray[Any, np.dtype[np.float32]]) -> bytes:
    # As a V2 client sends it (tritonclient, requests): a flat list of the floats' full repr.
    data = tensor.ravel().tolist()
    tensor_input = {"name": INPUT_NAME, "shape": list(tensor.shape), "datatype": INPUT_DATATYPE}
    request = {"inputs": [{**tensor_input, "data": data}]}
    return json.dumps(request, separators=(",", ":")).encode()


def binary_body(tensor: np.ndarray[Any, np.dtype[np.float32]]) -> tuple[bytes, int]:
    """The binary extension's body for ``tensor`` and the length of its JSON header.

    The same bytes as ``tritonclient.http`` sends for one binary FP32 input with the output
    ``total`` requested as JSON (``InferRequestedOutput("total", binary_data=False)``).
    """
    raw = np.ascontiguousarray(tensor, dtype="<f4").tobytes()
    tensor_input = {"name": INPUT_NAME, "shape": list(tensor.shape), "datatype": INPUT_DATATYPE}
    request = {
        "inputs": [{**tensor_input, "parameters": {"binary_data_size": len(raw)}}],
        "outputs": [{"name": OUTPUT_NAME, "parameters": {"binary_data": False}}],
    }
    header = json.dumps(request, separators=(",", ":")).encode()
    return header + raw, len(header)


def _request(
    key: str,
    tensor: np.ndarray[Any, np.dtype[np.float32]],
    expected: Sequence[float],
    rtol: float = 0.0,
) -> Request:
    if not PAYLOADS[key].binary:
        return Request(PAYLOADS[key], _v2_body(tensor), tuple(expected), rtol, tensor)
    body, header_length = binary_body(tensor)
    headers = {"Content-Type": "application/octet-stream", HEADER_LENGTH: str(header_length)}
    return Request(PAYLOADS[key], body, tuple(expected), rtol, tensor, headers)


def build_requests(artifacts: Mapping[str, Any]) -> dict[str, Request]:
    """Every payload's request; digits payloads need the sample from ``artifacts.json``.

    A digits payload whose artefact could not be built is left out.
    """
    small = np.arange(1, 17, dtype=np.float32).reshape(1, 16) / np.float32(8)  # sum: 17
    large = np.random.default_rng(0).random((1, LARGE_ELEMENTS), dtype=np.float32)
    large_sum = (float(large.astype(np.float64).sum()),)
    row = np.arange(1, 5, dtype=np.float32).reshape(1, 4) / np.float32(2)  # doubled: 1 2 3 4
    doubled = tuple(float(value) for value in (row * 2).ravel())
    requests = {
        "sum-16": _request("sum-16", small, (float(small.sum()),)),
        "batch-on": _request("batch-on", row, doubled),
        "batch-off": _request("batch-off", row, doubled),
        # float32 accumulation (pairwise in numpy) drifts a little from the float64 sum.
        "sum-1m": _request("sum-1m", large, large_sum, 1e-4),
        "sum-1m-binary": _request("sum-1m-binary", large, large_sum, 1e-4),
    }
    for key in ("digits-svc", "digits-xgb"):
        built = artifacts.get(key, {})
        if "input" in built:
            row = np.asarray(built["input"], dtype=np.float32).reshape(1, -1)
            requests[key] = _request(key, row, built["predict"])
    return requests

"""The real ``inferkit start`` with ``tracing_server``: spans reach an OTLP/gRPC collector.

The collector is a stub in this process: a grpcio server on a free loopback port answering
OpenTelemetry's ``TraceService/Export`` (the stubs ship with ``opentelemetry-proto``) and
keeping what it receives. The server is called over REST (httpx) and gRPC (tritonclient) with
a W3C ``traceparent``, and the spans the collector got are checked: names, trace ids, parents,
status, and that the model saw the server span as its parent.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc  # type: ignore[import-untyped, unused-ignore]
import httpx
import numpy as np
import pytest
import tritonclient.grpc as triton
from harness import inferkit_start, write_repository
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2, trace_service_pb2_grpc
from opentelemetry.proto.common.v1.common_pb2 import KeyValue
from opentelemetry.proto.trace.v1.trace_pb2 import Span, Status
from tritonclient.utils import InferenceServerException

pytestmark = pytest.mark.e2e

#: Upper bound for spans to reach the collector; generous for a loaded 2-core CI machine.
ARRIVAL_TIMEOUT_S = 30.0

SEEN_MODEL = '''
from inferkit import InferenceRequest, InferenceResponse, Model


class Seen(Model):
    """Answers, as a response header, the traceparent it was given."""

    async def predict(self, payload: InferenceRequest) -> InferenceResponse:
        headers = (payload.parameters or {}).get("headers", {})
        seen = {"x-model-traceparent": headers.get("traceparent", "")}
        return InferenceResponse(model_name=self.name, outputs=[], parameters={"headers": seen})
'''

MODELS: dict[str, dict[str, Any]] = {
    "echo": {"name": "echo", "implementation": "model.Echo"},
    "boom": {"name": "boom", "implementation": "model.Boom"},
    "seen": {"name": "seen", "implementation": "seen.Seen"},
}
BODY = {"inputs": [{"name": "x", "shape": [1, 1], "datatype": "INT32", "data": [1]}]}
REST_TRACE, REST_PARENT = "0af7651916cd43dd8448eb211c80319c", "b7ad6b7169203331"
GRPC_TRACE, GRPC_PARENT = "4bf92f3577b34da6a3ce929d0e0e4736", "00f067aa0ba902b7"


@dataclass(frozen=True)
class Received:
    """One span as the collector got it, ids in hex."""

    service: str
    name: str
    kind: int
    trace_id: str
    span_id: str
    parent_span_id: str
    status: int
    status_message: str
    attributes: dict[str, Any]


class Collector(trace_service_pb2_grpc.TraceServiceServicer):  # type: ignore[misc]
    """Keeps every span exported to it; :meth:`wait_for` blocks (bounded) until enough came."""

    def __init__(self) -> None:
        self._spans: list[Received] = []
        self._arrived = threading.Condition()

    def Export(
        self, request: trace_service_pb2.ExportTraceServiceRequest, context: Any
    ) -> trace_service_pb2.ExportTraceServiceResponse:
        received = [
            Received(
                service=_attributes(resource_spans.resource.attributes)["service.name"],
                name=span.name,
                kind=span.kind,
                trace_id=span.trace_id.hex(),
                span_id=span.span_id.hex(),
                parent_span_id=span.parent_span_id.hex(),
                status=span.status.code,
                status_message=span.status.message,
                attributes=_attributes(span.attributes),
            )
            for resource_spans in request.resource_spans
            for scope_spans in resource_spans.scope_spans
            for span in scope_spans.spans
        ]
        with self._arrived:
            self._spans.extend(received)
            self._arrived.notify_all()
        return trace_service_pb2.ExportTraceServiceResponse()

    def spans(self) -> list[Received]:
        with self._arrived:
            return list(self._spans)

    def wait_for(self, count: int) -> list[Received]:
        with self._arrived:
            self._arrived.wait_for(lambda: len(self._spans) >= count, ARRIVAL_TIMEOUT_S)
            return list(self._spans)


def _attributes(pairs: Any) -> dict[str, Any]:
    def value(pair: KeyValue) -> Any:
        field = pair.value.WhichOneof("value")
        return getattr(pair.value, field) if field else None

    return {pair.key: value(pair) for pair in pairs}


@contextmanager
def collector() -> Iterator[tuple[Collector, str]]:
    """A stub OTLP/gRPC collector on a free 127.0.0.1 port, and its ``host:port``."""
    server = grpc.server(ThreadPoolExecutor(max_workers=2))
    stub = Collector()
    trace_service_pb2_grpc.add_TraceServiceServicer_to_server(stub, server)
    port = server.add_insecure_port("127.0.0.1:0")  # the OS picks: no race for a free port
    server.start()
    try:
        yield stub, f"127.0.0.1:{port}"
    finally:
        server.stop(grace=None)


def repository(root: Path, **settings: Any) -> Path:
    write_repository(root, MODELS, **settings)
    (root / "seen" / "seen.py").write_text(SEEN_MODEL)
    return root


def grpc_infer(address: str, model: str, traceparent: str) -> None:
    client = triton.InferenceServerClient(address)
    try:
        tensor = triton.InferInput("x", [1, 1], "INT32")
        tensor.set_data_from_numpy(np.ones((1, 1), dtype=np.int32))
        client.infer(model, [tensor], request_id=f"{model}-1", headers={"traceparent": traceparent})
    finally:
        client.close()


def test_spans_of_rest_and_grpc_inference_reach_the_collector(tmp_path: Path) -> None:
    with collector() as (stub, address):
        # The batch processor sends every 100 ms instead of every 5 s (OpenTelemetry's
        # variable), so spans arrive while the server runs; the setting comes from the env.
        env = {"MLSERVER_TRACING_SERVER": address, "OTEL_BSP_SCHEDULE_DELAY": "100"}
        with inferkit_start(repository(tmp_path), env=env) as server:
            response = httpx.post(
                f"{server.url}/v2/models/seen/infer",
                json={**BODY, "id": "rest-1"},
                headers={"traceparent": f"00-{REST_TRACE}-{REST_PARENT}-01"},
                timeout=10,
            )
            assert response.status_code == 200
            grpc_infer(server.grpc, "echo", f"00-{GRPC_TRACE}-{GRPC_PARENT}-01")
            with pytest.raises(InferenceServerException, match="failed to run inference"):
                grpc_infer(server.grpc, "boom", f"00-{GRPC_TRACE}-{GRPC_PARENT}-01")
            spans = stub.wait_for(3)
    by_model = {span.attributes["inferkit.model.name"]: span for span in spans}
    assert sorted(by_model) == ["boom", "echo", "seen"] and len(spans) == 3

    rest = by_model["seen"]
    assert (rest.name, rest.kind) == ("POST /v2/models/{name}/infer", Span.SPAN_KIND_SERVER)
    assert (rest.trace_id, rest.parent_span_id) == (REST_TRACE, REST_PARENT)
    assert rest.attributes["http.response.status_code"] == 200
    assert rest.attributes["inferkit.request.id"] == "rest-1"
    # The model was handed the server span as parent, not the client's.
    assert response.headers["x-model-traceparent"] == f"00-{REST_TRACE}-{rest.span_id}-01"

    for model in ("echo", "boom"):
        span = by_model[model]
        assert (span.name, span.kind) == (
            "inference.GRPCInferenceService/ModelInfer",
            Span.SPAN_KIND_SERVER,
        )
        assert (span.trace_id, span.parent_span_id) == (GRPC_TRACE, GRPC_PARENT)
        assert span.attributes["inferkit.request.id"] == f"{model}-1"
    assert by_model["echo"].status == Status.STATUS_CODE_UNSET
    assert (by_model["boom"].status, by_model["boom"].status_message) == (
        Status.STATUS_CODE_ERROR,
        "INFERENCE_FAILED",
    )
    assert by_model["boom"].attributes["rpc.grpc.status_code"] == 13  # INTERNAL
    assert {span.service for span in spans} == {"inferkit"}


def test_spans_still_batched_are_flushed_on_sigterm(tmp_path: Path) -> None:
    with collector() as (stub, address):
        # The batch processor would wait ten minutes: only the flush at shutdown sends spans.
        root = repository(tmp_path, tracing_server=address, server_name="scorer")
        env = {"OTEL_BSP_SCHEDULE_DELAY": "600000"}
        with inferkit_start(root, env=env) as server:
            response = httpx.post(
                f"{server.url}/v2/models/echo/infer",
                json=BODY,
                headers={"traceparent": f"00-{REST_TRACE}-{REST_PARENT}-01"},
                timeout=10,
            )
            assert response.status_code == 200
            assert stub.spans() == []
            code, log = server.stop()  # SIGTERM
        assert code == 0, log
        (span,) = stub.wait_for(1)
    assert (span.service, span.name) == ("scorer", "POST /v2/models/{name}/infer")
    assert (span.trace_id, span.parent_span_id) == (REST_TRACE, REST_PARENT)
    assert "Tracing: exporting spans to" in log

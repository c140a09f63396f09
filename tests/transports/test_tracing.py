"""OpenTelemetry tracing on both transports, in process, into an in-memory exporter.

Each test builds its own ``TracerProvider`` with a ``SimpleSpanProcessor`` (spans are exported
as they end, no thread, no global provider), runs the REST app through httpx's ASGI transport
or the gRPC service through grpclib's ``ChannelFor``, and reads the finished spans back.
"""

from __future__ import annotations

import logging
import subprocess
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import httpx
import numpy as np
import proto_convert
import pytest
from grpclib.testing import ChannelFor
from opentelemetry import trace
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator
from toymodels import FailingModel, WordStream, named, sum_model, text_request

from inferkit import InferenceRequest, InferenceResponse, Model, RequestInput, Server, Settings
from inferkit.codecs import encode_tensor
from inferkit.transports.grpc import create_grpc_service
from inferkit.transports.grpc._generated import inference as pb
from inferkit.transports.rest import create_rest_app
from inferkit.transports.tracing import INSTALL_HINT, InferenceTracer, tracer_for
from inferkit.types import encode_json

TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
PARENT_ID = "00f067aa0ba902b7"
TRACEPARENT = f"00-{TRACE_ID}-{PARENT_ID}-01"
SUM_BODY = {"inputs": [{"name": "x", "shape": [1, 3], "datatype": "FP32", "data": [1, 2, 3]}]}
REST_INFER = "POST /v2/models/{name}/infer"
GRPC_INFER = "inference.GRPCInferenceService/ModelInfer"
GRPC_STREAM = "inference.GRPCInferenceService/ModelStreamInfer"


class Recorder(Model):
    """Answers the trace headers it was given: the ``traceparent`` and ``tracestate`` it saw."""

    async def predict(self, payload: InferenceRequest) -> InferenceResponse:
        headers = (payload.parameters or {}).get("headers", {})
        seen = [headers.get("traceparent", ""), headers.get("tracestate", "")]
        current = trace.get_current_span().get_span_context()
        return InferenceResponse(
            model_name=self.name,
            outputs=[
                encode_tensor("seen", np.array(seen, dtype=object)),
                encode_tensor("current_valid", np.array([current.is_valid])),
            ],
        )


def in_memory() -> tuple[InferenceTracer, InMemorySpanExporter]:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    return InferenceTracer(provider), exporter


def traced(models: tuple[Model, ...], tracer: InferenceTracer | None) -> Server:
    server = Server(list(models) or [sum_model()], settings=Settings())
    if tracer is not None:
        server.add_hook(tracer)
    return server


@asynccontextmanager
async def rest(*models: Model, tracer: InferenceTracer | None) -> AsyncIterator[httpx.AsyncClient]:
    server = traced(models, tracer)
    await server.start()
    transport = httpx.ASGITransport(app=create_rest_app(server))
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as http:
        yield http
    await server.stop()


@asynccontextmanager
async def grpc(*models: Model, tracer: InferenceTracer | None) -> AsyncIterator[Any]:
    server = traced(models, tracer)
    await server.start()
    async with ChannelFor(create_grpc_service(server)) as channel:
        yield pb.GrpcInferenceServiceStub(channel)
    await server.stop()


def ids(span: ReadableSpan) -> tuple[str, str, str | None]:
    """(trace id, span id, parent span id) in hex, as they appear in a traceparent."""
    parent = span.parent.span_id if span.parent is not None else None
    return (
        f"{span.context.trace_id:032x}",
        f"{span.context.span_id:016x}",
        None if parent is None else f"{parent:016x}",
    )


def traceparent_of(span: ReadableSpan) -> str:
    """The ``traceparent`` naming ``span`` as the parent."""
    context = span.context
    return f"00-{context.trace_id:032x}-{context.span_id:016x}-{int(context.trace_flags):02x}"


def seen_over_grpc(reply: pb.ModelInferResponse) -> tuple[list[str], bool]:
    """What the Recorder answered: the trace headers it saw, and whether a span was current."""
    seen, current = proto_convert.response_from_proto(reply).outputs
    return [v.decode() for v in seen.data.tolist()], bool(current.data.tolist()[0])


def only(exporter: InMemorySpanExporter) -> ReadableSpan:
    (span,) = exporter.get_finished_spans()
    return span


def request(model: str, request_id: str = "r1", version: str = "") -> pb.ModelInferRequest:
    req = InferenceRequest(
        id=request_id,
        inputs=[RequestInput(name="x", shape=[1, 1], datatype="FP64", data=[1.0])],
    )
    return proto_convert.request_to_proto(req, model, version or None)


# -- REST ---------------------------------------------------------------------------------------


async def test_rest_infer_is_one_server_span_child_of_the_traceparent() -> None:
    tracer, exporter = in_memory()
    async with rest(tracer=tracer) as http:
        response = await http.post(
            "/v2/models/sum/infer",
            json={**SUM_BODY, "id": "r1"},
            headers={"traceparent": TRACEPARENT},
        )
    assert response.status_code == 200
    span = only(exporter)
    assert (span.name, span.kind) == (REST_INFER, SpanKind.SERVER)
    trace_id, _, parent = ids(span)
    assert (trace_id, parent) == (TRACE_ID, PARENT_ID)
    assert span.parent is not None and span.parent.is_remote
    assert dict(span.attributes or {}) == {
        "inferkit.transport": "rest",
        "http.request.method": "POST",
        "http.route": "/v2/models/{name}/infer",
        "http.response.status_code": 200,
        "inferkit.model.name": "sum",
        "inferkit.model.version": "",
        "inferkit.request.id": "r1",
    }
    assert span.status.status_code is StatusCode.UNSET


async def test_rest_span_names_the_versioned_route_and_the_resolved_version() -> None:
    tracer, exporter = in_memory()
    async with rest(sum_model(version="v1"), tracer=tracer) as http:
        await http.post("/v2/models/sum/versions/v1/infer", json=SUM_BODY)
        await http.post("/v2/models/sum/infer", json=SUM_BODY)  # the default version: v1
    spans = exporter.get_finished_spans()
    assert [s.name for s in spans] == [
        "POST /v2/models/{name}/versions/{version}/infer",
        REST_INFER,
    ]
    assert [(s.attributes or {})["inferkit.model.version"] for s in spans] == ["v1", "v1"]
    # Without a traceparent each request starts a trace of its own.
    assert all(s.parent is None for s in spans)
    assert spans[0].context.trace_id != spans[1].context.trace_id
    # The server generated the request ids, and the span knows them.
    assert all((s.attributes or {})["inferkit.request.id"] for s in spans)


async def test_rest_model_sees_the_server_span_as_traceparent() -> None:
    tracer, exporter = in_memory()
    async with rest(named(Recorder, "recorder"), tracer=tracer) as http:
        response = await http.post(
            "/v2/models/recorder/infer",
            json=SUM_BODY,
            headers={"traceparent": TRACEPARENT, "tracestate": "vendor=abc"},
        )
    traceparent, tracestate = response.json()["outputs"][0]["data"]
    span = only(exporter)
    assert traceparent == traceparent_of(span)
    assert traceparent.startswith(f"00-{TRACE_ID}-") and PARENT_ID not in traceparent
    assert tracestate == "vendor=abc"  # carried along the trace, as W3C asks
    # In process, the server span is also the current span while the model predicts.
    assert response.json()["outputs"][1]["data"] == [True]


async def test_rest_a_span_the_model_starts_from_its_headers_is_a_child() -> None:
    # The model of docs/tracing.md: extract the context from the headers, start a span in it.
    tracer, exporter = in_memory()
    propagator = TraceContextTextMapPropagator()

    class Ranker(Model):
        async def predict(self, payload: InferenceRequest) -> InferenceResponse:
            parent = propagator.extract((payload.parameters or {}).get("headers", {}))
            with tracer.provider.get_tracer("ranker").start_as_current_span("rank", parent):
                return InferenceResponse(model_name=self.name, outputs=[])

    async with rest(named(Ranker, "ranker"), tracer=tracer) as http:
        await http.post(
            "/v2/models/ranker/infer", json=SUM_BODY, headers={"traceparent": TRACEPARENT}
        )
    rank, server = exporter.get_finished_spans()  # in the order they ended
    assert (rank.name, server.name) == ("rank", REST_INFER)
    assert ids(rank)[0] == ids(server)[0] == TRACE_ID
    assert ids(rank)[2] == ids(server)[1]
    assert ids(server)[2] == PARENT_ID


@pytest.mark.parametrize(
    ("model", "status", "code"),
    [("boom", 500, "INFERENCE_FAILED"), ("nope", 404, "MODEL_NOT_FOUND")],
)
async def test_rest_failures_are_error_spans_with_the_code(
    model: str, status: int, code: str
) -> None:
    tracer, exporter = in_memory()
    async with rest(sum_model(), named(FailingModel, "boom"), tracer=tracer) as http:
        response = await http.post(
            f"/v2/models/{model}/infer", json=SUM_BODY, headers={"traceparent": TRACEPARENT}
        )
    assert response.status_code == status
    span = only(exporter)
    assert (span.status.status_code, span.status.description) == (StatusCode.ERROR, code)
    attributes = dict(span.attributes or {})
    assert attributes["error.type"] == code
    assert attributes["http.response.status_code"] == status
    assert attributes["inferkit.model.name"] == model
    assert ids(span)[2] == PARENT_ID
    # The exception's text (FailingModel's "secret-token-123") never reaches the span.
    assert not span.events
    assert "secret" not in repr(attributes)


async def test_rest_unexpected_exceptions_are_internal_spans_without_their_text() -> None:
    class Nonsense(Model):
        async def predict(self, payload: InferenceRequest) -> Any:
            return "secret-not-a-response"

    tracer, exporter = in_memory()
    async with rest(named(Nonsense, "nonsense"), tracer=tracer) as http:
        response = await http.post("/v2/models/nonsense/infer", json=SUM_BODY)
    assert response.status_code == 500
    span = only(exporter)
    assert span.status.status_code is StatusCode.ERROR
    assert span.status.description == "INTERNAL"
    assert not span.events and "secret" not in repr(dict(span.attributes or {}))


async def test_rest_without_a_tracer_the_model_sees_the_client_headers() -> None:
    async with rest(named(Recorder, "recorder"), tracer=None) as http:
        response = await http.post(
            "/v2/models/recorder/infer",
            json=SUM_BODY,
            headers={"traceparent": TRACEPARENT, "tracestate": "vendor=abc"},
        )
    assert response.json()["outputs"][0]["data"] == [TRACEPARENT, "vendor=abc"]
    assert response.json()["outputs"][1]["data"] == [False]  # no span was started


async def test_rest_other_routes_are_not_traced() -> None:
    tracer, exporter = in_memory()
    async with rest(tracer=tracer) as http:
        assert (await http.get("/v2/health/ready")).status_code == 200
        assert (await http.get("/v2/models/sum")).status_code == 200
    assert exporter.get_finished_spans() == ()


async def test_rest_span_is_a_child_of_the_host_applications_span() -> None:
    # Embedded in an app that traces its own requests, the host's span is already current:
    # the inference span goes under it rather than beside it.
    tracer, exporter = in_memory()
    host = tracer.provider.get_tracer("host")
    async with rest(tracer=tracer) as http:
        with host.start_as_current_span("host request") as outer:
            await http.post(
                "/v2/models/sum/infer", json=SUM_BODY, headers={"traceparent": TRACEPARENT}
            )
    inner = next(s for s in exporter.get_finished_spans() if s.name == REST_INFER)
    assert inner.parent is not None
    assert inner.parent.span_id == outer.get_span_context().span_id


# -- gRPC ---------------------------------------------------------------------------------------


async def test_grpc_model_infer_is_one_server_span_child_of_the_traceparent() -> None:
    tracer, exporter = in_memory()
    async with grpc(sum_model(version="v2"), tracer=tracer) as stub:
        reply = await stub.model_infer(request("sum"), metadata={"traceparent": TRACEPARENT})
    assert reply.model_version == "v2"
    span = only(exporter)
    assert (span.name, span.kind) == (GRPC_INFER, SpanKind.SERVER)
    trace_id, _, parent = ids(span)
    assert (trace_id, parent) == (TRACE_ID, PARENT_ID)
    assert dict(span.attributes or {}) == {
        "inferkit.transport": "grpc",
        "rpc.system": "grpc",
        "rpc.service": "inference.GRPCInferenceService",
        "rpc.method": "ModelInfer",
        "rpc.grpc.status_code": 0,
        "inferkit.model.name": "sum",
        "inferkit.model.version": "v2",
        "inferkit.request.id": "r1",
    }
    assert span.status.status_code is StatusCode.UNSET


async def test_grpc_model_sees_the_server_span_as_traceparent() -> None:
    tracer, exporter = in_memory()
    async with grpc(named(Recorder, "recorder"), tracer=tracer) as stub:
        metadata = {"traceparent": TRACEPARENT, "tracestate": "vendor=abc"}
        reply = await stub.model_infer(request("recorder"), metadata=metadata)
    span = only(exporter)
    assert ids(span)[::2] == (TRACE_ID, PARENT_ID)
    assert seen_over_grpc(reply) == ([traceparent_of(span), "vendor=abc"], True)


async def test_grpc_model_sees_the_server_span_without_client_metadata() -> None:
    tracer, exporter = in_memory()
    async with grpc(named(Recorder, "recorder"), tracer=tracer) as stub:
        reply = await stub.model_infer(request("recorder"))
    span = only(exporter)
    assert span.parent is None
    assert seen_over_grpc(reply)[0] == [traceparent_of(span), ""]


@pytest.mark.parametrize(
    ("model", "status", "code"),
    [("boom", 13, "INFERENCE_FAILED"), ("nope", 5, "MODEL_NOT_FOUND")],  # INTERNAL, NOT_FOUND
)
async def test_grpc_failures_are_error_spans_with_the_code(
    model: str, status: int, code: str
) -> None:
    from grpclib.exceptions import GRPCError

    tracer, exporter = in_memory()
    async with grpc(sum_model(), named(FailingModel, "boom"), tracer=tracer) as stub:
        with pytest.raises(GRPCError):
            await stub.model_infer(request(model), metadata={"traceparent": TRACEPARENT})
    span = only(exporter)
    assert span.name == GRPC_INFER
    assert (span.status.status_code, span.status.description) == (StatusCode.ERROR, code)
    attributes = dict(span.attributes or {})
    assert (attributes["error.type"], attributes["rpc.grpc.status_code"]) == (code, status)
    assert (attributes["inferkit.model.name"], attributes["inferkit.request.id"]) == (model, "r1")
    assert ids(span)[2] == PARENT_ID
    assert not span.events and "secret" not in repr(attributes)


async def test_grpc_stream_has_one_span_per_message() -> None:
    tracer, exporter = in_memory()
    sent = [request("sum", "a"), request("nope", "b"), request("boom", "c")]
    async with grpc(sum_model(), named(FailingModel, "boom"), tracer=tracer) as stub:
        metadata = {"traceparent": TRACEPARENT}
        got = [r async for r in stub.model_stream_infer(sent, metadata=metadata)]
    assert [r.error_message != "" for r in got] == [False, True, True]
    spans = exporter.get_finished_spans()
    assert [s.name for s in spans] == [GRPC_STREAM] * 3
    assert [ids(s)[2] for s in spans] == [PARENT_ID] * 3
    assert [(s.attributes or {})["inferkit.request.id"] for s in spans] == ["a", "b", "c"]
    assert [s.status.description for s in spans] == [None, "MODEL_NOT_FOUND", "INFERENCE_FAILED"]
    assert all(s.kind is SpanKind.SERVER for s in spans)


async def test_a_model_stream_is_one_span_on_either_transport() -> None:
    tracer, exporter = in_memory()
    body = encode_json(text_request("a b c", id="s1"))
    async with rest(named(WordStream, "words"), tracer=tracer) as http:
        response = await http.post(
            "/v2/models/words/infer_stream", content=body, headers={"traceparent": TRACEPARENT}
        )
    assert response.text.count("data: ") == 3
    async with grpc(named(WordStream, "words"), tracer=tracer) as stub:
        sent = [proto_convert.request_to_proto(text_request("a b", id="s2"), "words")] * 2
        got = [r async for r in stub.model_stream_infer(sent)]
    assert len(got) == 4
    rest_span, grpc_span = exporter.get_finished_spans()
    assert rest_span.name == "POST /v2/models/{name}/infer_stream"
    assert ids(rest_span)[::2] == (TRACE_ID, PARENT_ID)
    assert (rest_span.attributes or {})["http.response.status_code"] == 200
    assert grpc_span.name == GRPC_STREAM
    assert [(s.attributes or {})["inferkit.request.id"] for s in (rest_span, grpc_span)] == [
        "s1",
        "s2",
    ]


async def test_a_stream_that_fails_midway_is_an_error_span() -> None:
    tracer, exporter = in_memory()
    async with rest(named(WordStream, "words"), tracer=tracer) as http:
        body = encode_json(text_request("a boom"))
        response = await http.post("/v2/models/words/generate_stream", content=body)
    assert "event: error" in response.text
    (span,) = exporter.get_finished_spans()
    assert span.status.description == "INFERENCE_FAILED"
    assert (span.attributes or {})["http.response.status_code"] == 200  # sent before the error


async def test_direct_calls_are_traced_too() -> None:
    tracer, exporter = in_memory()
    server = traced((sum_model(),), tracer)
    await server.start()
    request = InferenceRequest(
        id="d", inputs=[RequestInput(name="x", shape=[1, 3], datatype="FP32", data=[1, 2, 3])]
    )
    await server.infer("sum", request)
    (span,) = exporter.get_finished_spans()
    assert (span.name, (span.attributes or {})["inferkit.transport"]) == ("inferkit.infer", "")
    assert (span.attributes or {})["inferkit.request.id"] == "d"


async def test_grpc_without_a_tracer_the_model_sees_the_client_metadata() -> None:
    async with grpc(named(Recorder, "recorder"), tracer=None) as stub:
        metadata = {"traceparent": TRACEPARENT, "tracestate": "vendor=abc"}
        reply = await stub.model_infer(request("recorder"), metadata=metadata)
    assert seen_over_grpc(reply) == ([TRACEPARENT, "vendor=abc"], False)


# -- the tracer of the settings -----------------------------------------------------------------


def test_no_tracing_server_no_tracer() -> None:
    assert tracer_for(Settings()) is None
    assert tracer_for(Settings(tracing_server="")) is None


def test_tracer_of_the_settings_owns_its_provider() -> None:
    settings = Settings(tracing_server="127.0.0.1:1", server_name="scorer", server_version="3")
    tracer = tracer_for(settings)
    assert tracer is not None
    resource = tracer.provider.resource.attributes  # type: ignore[attr-defined]
    assert (resource["service.name"], resource["service.version"]) == ("scorer", "3")
    assert trace.get_tracer_provider() is not tracer.provider  # nothing global was set
    tracer.shutdown()  # nothing was traced: returns without exporting


def test_tracing_server_without_opentelemetry_warns_and_serves_untraced(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    # None in sys.modules makes an import fail whether or not the package is installed.
    monkeypatch.setitem(sys.modules, "opentelemetry.exporter.otlp.proto.grpc.trace_exporter", None)
    with caplog.at_level(logging.WARNING, logger="inferkit.tracing"):
        tracer = tracer_for(Settings(tracing_server="collector:4317"))
    assert tracer is None
    (record,) = caplog.records
    assert record.levelno == logging.WARNING
    assert "collector:4317" in record.getMessage()
    assert INSTALL_HINT == "pip install 'inferkit[otel]'" and INSTALL_HINT in record.getMessage()


def test_the_transports_and_the_runner_load_no_opentelemetry_without_tracing() -> None:
    code = (
        "import sys\n"
        "import inferkit.runner, inferkit.transports.rest, inferkit.transports.grpc\n"
        "from inferkit import Server, Settings\n"
        "from inferkit.transports.tracing import tracer_for\n"
        "from inferkit.transports.rest import create_rest_app\n"
        "from inferkit.transports.grpc import create_grpc_service\n"
        "assert tracer_for(Settings()) is None\n"
        "server = Server([])\n"
        "create_rest_app(server), create_grpc_service(server)\n"
        "print(sorted(m for m in sys.modules if m.startswith('opentelemetry')))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout
    assert out.strip() == "[]"

"""The gRPC services in process (grpclib's ChannelFor), and the listener on loopback.

The V2 behaviour shared with REST is in tests/conformance; this file checks what is gRPC's
own: the status table and trailing code, raw in -> raw out, streaming, the message size limit,
both repository numberings and services, statistics, health, the listener's drain and TLS.
"""

from __future__ import annotations

import asyncio
import logging
import shutil
import ssl
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import proto_convert
import pytest
from grpclib.client import Channel
from grpclib.const import Cardinality, Status
from grpclib.exceptions import GRPCError, StreamTerminatedError
from grpclib.health.v1.health_grpc import HealthStub
from grpclib.health.v1.health_pb2 import HealthCheckRequest, HealthCheckResponse
from grpclib.testing import ChannelFor
from harness import free_port
from toymodels import FailingModel, named, sum_model, sum_model_folder

from inferkit import (
    InferenceRequest,
    InferenceResponse,
    Model,
    RequestInput,
    ResponseOutput,
    Server,
    Settings,
    errors,
)
from inferkit.runner import PortInUse, _ports, _services
from inferkit.transports.grpc import (
    CODE_KEY,
    STATUS,
    Readiness,
    create_grpc_service,
    create_health,
    grpc_service,
    status_for,
    tls_context,
)
from inferkit.transports.grpc._generated import inference as pb
from inferkit.transports.grpc._generated.inference import model_repository as mr

V2 = "/inference.GRPCInferenceService"
MR = "/inference.model_repository.ModelRepositoryService"

SUM = InferenceRequest(
    inputs=[RequestInput(name="x", shape=[1, 3], datatype="FP32", data=[1.0, 2.0, 3.0])]
)


@asynccontextmanager
async def serving(*models: Any, **settings: Any) -> AsyncIterator[tuple[Server, Channel]]:
    server = Server(models or [sum_model()], settings=Settings(**settings))
    await server.start()
    async with ChannelFor(create_grpc_service(server)) as channel:
        yield server, channel
    await server.stop()


class Call(NamedTuple):
    reply: Any
    status: Status
    message: str | None
    trailers: dict[str, Any]


async def call(
    channel: Channel, path: str, message: Any, reply_type: type[Any], **metadata: str
) -> Call:
    """One unary call, keeping the status, the message and the trailing metadata."""
    async with channel.request(
        path, Cardinality.UNARY_UNARY, type(message), reply_type, metadata=metadata or None
    ) as stream:
        await stream.send_message(message, end=True)
        try:
            reply = await stream.recv_message()
            await stream.recv_trailing_metadata()
        except GRPCError as exc:
            return Call(None, exc.status, exc.message, dict(stream.trailing_metadata or {}))
        return Call(reply, Status.OK, None, dict(stream.trailing_metadata or {}))


# -- the error table ----------------------------------------------------------------------------


def test_every_error_class_has_a_status() -> None:
    classes = [
        c
        for c in vars(errors).values()
        if isinstance(c, type) and issubclass(c, errors.InferkitError)
    ]
    assert set(classes) <= set(STATUS), set(classes) - set(STATUS)


class _Gone(errors.ModelNotFound):
    pass


@pytest.mark.parametrize(
    ("exc", "status"),
    [
        (errors.ModelNotFound("x"), Status.NOT_FOUND),
        (_Gone("x"), Status.NOT_FOUND),  # inherited along the MRO
        (errors.InvalidShape("x"), Status.INVALID_ARGUMENT),
        (errors.PayloadTooLarge("x"), Status.RESOURCE_EXHAUSTED),
        (errors.ModelNotReady("x"), Status.UNAVAILABLE),
        (errors.ShuttingDown("x"), Status.UNAVAILABLE),
        (errors.QueueFull("x"), Status.UNAVAILABLE),
        (errors.WorkerLost("x"), Status.UNAVAILABLE),
        (errors.InferenceTimeout("x"), Status.DEADLINE_EXCEEDED),
        (errors.InferenceFailed("x"), Status.INTERNAL),
        (PortInUse("x"), Status.INTERNAL),
        (RuntimeError("x"), Status.INTERNAL),
    ],
)
def test_status_for(exc: Exception, status: Status) -> None:
    assert status_for(exc) is status


# (path, request, reply type, status, code, message)
ERRORS = [
    (
        f"{V2}/ModelReady",
        pb.ModelReadyRequest(name="nope"),
        pb.ModelReadyResponse,
        Status.NOT_FOUND,
        "MODEL_NOT_FOUND",
        "Model 'nope' not found",
    ),
    (
        f"{V2}/ModelMetadata",
        pb.ModelMetadataRequest(name="sum", version="v9"),
        pb.ModelMetadataResponse,
        Status.NOT_FOUND,
        "MODEL_NOT_FOUND",
        "Model 'sum' with version 'v9' not found",
    ),
    (
        f"{V2}/ModelInfer",
        pb.ModelInferRequest(
            model_name="sum",
            inputs=[pb.ModelInferRequestInferInputTensor(name="x", datatype="FP32", shape=[3])],
            raw_input_contents=[b"\0" * 4],
        ),
        pb.ModelInferResponse,
        Status.INVALID_ARGUMENT,
        "INVALID_SHAPE",
        "Expected 12 bytes for shape [3] of `FP32`, got 4 - at `$.raw_input_contents[0]`",
    ),
    (
        f"{V2}/ModelStatistics",
        pb.ModelStatisticsRequest(name="nope"),
        pb.ModelStatisticsResponse,
        Status.NOT_FOUND,
        "MODEL_NOT_FOUND",
        "Model 'nope' not found",
    ),
]


@pytest.mark.parametrize(
    ("path", "message", "reply_type", "status", "code", "text"),
    ERRORS,
    ids=[row[0].rsplit("/", 1)[1] for row in ERRORS],
)
async def test_errors_carry_status_message_and_code(
    path: str, message: Any, reply_type: type[Any], status: Status, code: str, text: str
) -> None:
    async with serving() as (_, channel):
        result = await call(channel, path, message, reply_type)
    assert (result.status, result.message, result.trailers) == (status, text, {CODE_KEY: code})


async def test_unexpected_errors_are_internal_generic_and_logged_once(
    caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with serving() as (server, channel):

        async def broken() -> Any:
            raise RuntimeError("secret-xyz")

        monkeypatch.setattr(server, "metadata", broken)
        with caplog.at_level(logging.ERROR):
            result = await call(
                channel,
                f"{V2}/ServerMetadata",
                pb.ServerMetadataRequest(),
                pb.ServerMetadataResponse,
            )
    assert (result.status, result.message, result.trailers) == (
        Status.INTERNAL,
        "Internal server error",
        {CODE_KEY: "INTERNAL"},
    )
    assert [r.getMessage() for r in caplog.records] == [f"Unexpected error in {V2}/ServerMetadata"]


class BadShape(Model):
    """Answers with data that does not fit its own shape: a server-side bug."""

    async def predict(self, payload: InferenceRequest) -> InferenceResponse:
        return InferenceResponse(
            model_name=self.name,
            outputs=[ResponseOutput(name="o", shape=[3], datatype="FP32", data=[1.0])],
        )


async def test_a_model_answering_nonsense_is_a_generic_internal_error() -> None:
    async with serving(named(BadShape, "bad")) as (_, channel):
        message = proto_convert.request_to_proto(SUM, "bad")
        result = await call(channel, f"{V2}/ModelInfer", message, pb.ModelInferResponse)
    assert (result.status, result.message) == (Status.INTERNAL, "Internal server error")


# -- inference ----------------------------------------------------------------------------------


@pytest.mark.parametrize("raw", [False, True])
async def test_raw_requests_get_raw_responses(raw: bool) -> None:
    async with serving() as (_, channel):
        message = proto_convert.request_to_proto(SUM, "sum", raw=raw)
        result = await call(channel, f"{V2}/ModelInfer", message, pb.ModelInferResponse)
    reply = result.reply
    [output] = reply.outputs
    if raw:
        assert output.contents is None
        assert reply.raw_output_contents == [np.array([6.0], "<f4").tobytes()]
    else:
        assert output.contents.fp32_contents == [6.0]
        assert reply.raw_output_contents == []


class Unparseable:
    """A ModelInferRequest whose model_name is not UTF-8."""

    def SerializeToString(self) -> bytes:
        return b"\x0a\x01\xff"


async def test_unparseable_requests_are_invalid_argument() -> None:
    async with serving() as (_, channel):
        result = await call(channel, f"{V2}/ModelInfer", Unparseable(), pb.ModelInferResponse)
        stream = await call_stream(
            channel, [Unparseable(), proto_convert.request_to_proto(SUM, "sum")]
        )
    message = "Expected a `ModelInferRequest` message, got 3 bytes that do not parse"
    assert (result.status, result.message, result.trailers) == (
        Status.INVALID_ARGUMENT,
        message,
        {CODE_KEY: "INVALID_REQUEST"},
    )
    assert [r.error_message for r in stream] == [message, ""]


async def call_stream(channel: Channel, messages: list[Any]) -> list[pb.ModelStreamInferResponse]:
    async with channel.request(
        f"{V2}/ModelStreamInfer",
        Cardinality.STREAM_STREAM,
        object,
        pb.ModelStreamInferResponse,
    ) as stream:
        for message in messages:
            await stream.send_message(message)
        await stream.end()
        return [reply async for reply in stream]


async def test_each_inference_logs_one_access_line(caplog: pytest.LogCaptureFixture) -> None:
    request = InferenceRequest(id="r-1", inputs=SUM.inputs)
    with caplog.at_level(logging.INFO, logger="inferkit.access"):
        async with serving() as (_, channel):
            for model in ("sum", "nope"):
                message = proto_convert.request_to_proto(request, model, "")
                await call(channel, f"{V2}/ModelInfer", message, pb.ModelInferResponse)
    lines = [r for r in caplog.records if r.name == "inferkit.access"]
    assert [(r.method, r.path, r.status, r.request_id, r.model) for r in lines] == [  # type: ignore[attr-defined]
        ("POST", f"{V2}/ModelInfer", "OK", "r-1", "sum"),
        ("POST", f"{V2}/ModelInfer", "NOT_FOUND", "r-1", "nope"),
    ]


async def test_stream_answers_in_order_and_survives_errors() -> None:
    def request(model: str, value: float, raw: bool = False) -> pb.ModelInferRequest:
        req = InferenceRequest(
            id=f"{model}-{value}",
            inputs=[RequestInput(name="x", shape=[1, 1], datatype="FP64", data=[value])],
        )
        return proto_convert.request_to_proto(req, model, raw=raw)

    sent = [
        request("sum", 1),
        request("nope", 2),
        request("boom", 3),
        request("sum", 4, raw=True),
    ]
    async with serving(sum_model(), named(FailingModel, "boom")) as (_, channel):
        stub = pb.GrpcInferenceServiceStub(channel)
        got = [r async for r in stub.model_stream_infer(sent)]
    assert [r.error_message for r in got] == [
        "",
        "Model 'nope' not found",
        "Model 'boom' failed to run inference; see the server log",
        "",
    ]
    first, last = got[0].infer_response, got[3].infer_response
    assert first is not None and last is not None
    ok = [proto_convert.response_from_proto(r) for r in (first, last)]
    assert [(r.id, r.outputs[0].data.tolist()) for r in ok] == [("sum-1", [1.0]), ("sum-4", [4.0])]
    assert last.raw_output_contents  # raw in, raw out, per request


async def test_stream_answers_an_oversize_message_and_goes_on() -> None:
    big = proto_convert.request_to_proto(
        InferenceRequest(
            inputs=[RequestInput(name="x", shape=[1, 64], datatype="FP64", data=[0.0] * 64)]
        ),
        "sum",
        raw=True,
    )
    small = proto_convert.request_to_proto(SUM, "sum")
    async with serving(grpc_max_message_length=200) as (_, channel):
        stub = pb.GrpcInferenceServiceStub(channel)
        got = [r async for r in stub.model_stream_infer([big, small])]
    size = len(bytes(big))
    assert [r.error_message for r in got] == [
        f"Message of {size} bytes is larger than the limit of 200 bytes (grpc_max_message_length)",
        "",
    ]


@pytest.mark.parametrize(
    "settings",
    [{"grpc_max_message_length": 100}, {"max_request_size": 100}],
    ids=["grpc_max_message_length", "max_request_size"],
)
async def test_messages_over_the_limit_are_resource_exhausted(settings: dict[str, int]) -> None:
    big = proto_convert.request_to_proto(
        InferenceRequest(
            inputs=[RequestInput(name="x", shape=[1, 32], datatype="FP32", data=[1.0] * 32)]
        ),
        "sum",
        raw=True,
    )
    async with serving(**settings) as (_, channel):
        refused = await call(channel, f"{V2}/ModelInfer", big, pb.ModelInferResponse)
        small = await call(
            channel,
            f"{V2}/ModelInfer",
            proto_convert.request_to_proto(SUM, "sum"),
            pb.ModelInferResponse,
        )
    assert (refused.status, refused.message, refused.trailers) == (
        Status.RESOURCE_EXHAUSTED,
        f"Message of {len(bytes(big))} bytes is larger than the limit of 100 bytes "
        "(grpc_max_message_length)",
        {CODE_KEY: "PAYLOAD_TOO_LARGE"},
    )
    assert small.status is Status.OK


# -- repository ---------------------------------------------------------------------------------

# Both numberings of the load/unload requests: Triton/MLServer/Seldon put the model in field 2
# (model_name), KServe's Python server in field 1 (repository_name here).
NUMBERINGS: list[tuple[str, dict[str, str], Status, str | None]] = [
    ("triton", {"model_name": "sum"}, Status.OK, None),
    ("triton-with-repository", {"repository_name": "models", "model_name": "sum"}, Status.OK, None),
    ("kserve", {"repository_name": "sum"}, Status.OK, None),
    ("kserve-unknown", {"repository_name": "nope"}, Status.NOT_FOUND, "Model 'nope' not found"),
    (
        "empty",
        {},
        Status.INVALID_ARGUMENT,
        "Expected a model name, got none - at `$.model_name`",
    ),
]

# (service path, load request, load reply, unload request, unload reply)
REPOSITORY_SERVICES = {
    "v2": (
        V2,
        pb.RepositoryModelLoadRequest,
        pb.RepositoryModelLoadResponse,
        pb.RepositoryModelUnloadRequest,
        pb.RepositoryModelUnloadResponse,
    ),
    "mlserver": (
        MR,
        mr.RepositoryModelLoadRequest,
        mr.RepositoryModelLoadResponse,
        mr.RepositoryModelUnloadRequest,
        mr.RepositoryModelUnloadResponse,
    ),
}


@pytest.mark.parametrize("service", sorted(REPOSITORY_SERVICES))
@pytest.mark.parametrize(
    ("fields", "status", "text"), [n[1:] for n in NUMBERINGS], ids=[n[0] for n in NUMBERINGS]
)
async def test_load_and_unload_accept_both_numberings(
    service: str, fields: dict[str, str], status: Status, text: str | None
) -> None:
    path, load_req, load_reply, unload_req, unload_reply = REPOSITORY_SERVICES[service]
    async with serving() as (server, channel):
        unloaded = await call(
            channel, f"{path}/RepositoryModelUnload", unload_req(**fields), unload_reply
        )
        assert (unloaded.status, unloaded.message) == (status, text)
        if status is Status.OK:
            assert not await server.model_ready("sum")
        loaded = await call(channel, f"{path}/RepositoryModelLoad", load_req(**fields), load_reply)
        assert (loaded.status, loaded.message) == (status, text)
        assert await server.model_ready("sum")
    if status is Status.OK and service == "v2":
        # KServe's clients read these fields; others ignore them.
        assert (loaded.reply.model_name, loaded.reply.is_loaded) == ("sum", True)
        assert (unloaded.reply.model_name, unloaded.reply.is_unloaded) == ("sum", True)


async def test_kserve_numbering_finds_a_model_added_to_the_folder(tmp_path: Path) -> None:
    from inferkit.repository import ModelRepository

    async with Server(repository=ModelRepository(tmp_path)) as server:
        async with ChannelFor(create_grpc_service(server)) as channel:
            sum_model_folder(tmp_path / "late", "late")
            request = pb.RepositoryModelLoadRequest(repository_name="late")
            loaded = await call(
                channel, f"{V2}/RepositoryModelLoad", request, pb.RepositoryModelLoadResponse
            )
        assert loaded.status is Status.OK
        assert await server.model_ready("late")


@pytest.mark.parametrize(
    ("path", "request_type", "reply_type"),
    [
        (V2, pb.RepositoryIndexRequest, pb.RepositoryIndexResponse),
        (MR, mr.RepositoryIndexRequest, mr.RepositoryIndexResponse),
    ],
    ids=["v2", "mlserver"],
)
async def test_index_states_are_plain_names(
    path: str, request_type: type[Any], reply_type: type[Any]
) -> None:
    async with serving(sum_model(), sum_model("other", "v1")) as (server, channel):
        await server.unload("other")
        every = await call(channel, f"{path}/RepositoryIndex", request_type(), reply_type)
        ready = await call(channel, f"{path}/RepositoryIndex", request_type(ready=True), reply_type)
    assert [(m.name, m.version, m.state) for m in every.reply.models] == [
        ("sum", "", "READY"),
        ("other", "v1", "UNAVAILABLE"),
    ]
    assert [m.name for m in ready.reply.models] == ["sum"]


# -- statistics ---------------------------------------------------------------------------------


async def test_statistics() -> None:
    async with serving(sum_model(), sum_model("idle")) as (_, channel):
        stub = pb.GrpcInferenceServiceStub(channel)
        for _ in range(2):
            await stub.model_infer(proto_convert.request_to_proto(SUM, "sum"))
        one = await stub.model_statistics(pb.ModelStatisticsRequest(name="sum"))
        every = await stub.model_statistics(pb.ModelStatisticsRequest())
        meta = await stub.server_metadata(pb.ServerMetadataRequest())
    [stats] = one.model_stats
    assert (stats.name, stats.inference_count, stats.execution_count) == ("sum", 2, 2)
    phases = stats.inference_stats
    assert phases is not None and phases.success is not None and phases.fail is not None
    assert (phases.success.count, phases.fail.count) == (2, 0)
    assert [b.batch_size for b in stats.batch_stats] == [1]
    assert sorted(m.name for m in every.model_stats) == ["idle", "sum"]
    assert "statistics" in meta.extensions


# -- request metrics ----------------------------------------------------------------------------


def grpc_samples(server: Server) -> dict[tuple[str, tuple[str, ...]], Any]:
    """(metric, label values) -> value, for the gRPC request metrics in the server's store."""
    return {
        (snapshot.name, labels): value
        for snapshot in server.metrics.collect()
        if snapshot.name.startswith(("inferkit_grpc_", "inferkit_requests_in_flight"))
        for labels, value in snapshot.samples
    }


async def test_request_metrics_count_each_call_by_method_and_status() -> None:
    infer = proto_convert.request_to_proto(SUM, "sum")
    async with serving(sum_model(), named(FailingModel, "boom")) as (server, channel):
        stub = pb.GrpcInferenceServiceStub(channel)
        await stub.model_infer(infer)
        await stub.model_infer(infer)
        for model in ("nope", "boom"):
            with pytest.raises(GRPCError):
                await stub.model_infer(proto_convert.request_to_proto(SUM, model))
        await stub.server_live(pb.ServerLiveRequest())
        await call(
            channel,
            f"{MR}/RepositoryIndex",
            mr.RepositoryIndexRequest(),
            mr.RepositoryIndexResponse,
        )
        [_ async for _ in stub.model_stream_infer([infer, infer])]
        samples = grpc_samples(server)
    counts = {
        labels: value
        for (name, labels), value in samples.items()
        if name == "inferkit_grpc_requests"  # the store drops _total; Prometheus adds it
    }
    assert counts == {
        ("ModelInfer", "OK"): 2,
        ("ModelInfer", "NOT_FOUND"): 1,
        ("ModelInfer", "INTERNAL"): 1,
        ("ServerLive", "OK"): 1,
        ("RepositoryIndex", "OK"): 1,
        ("ModelStreamInfer", "OK"): 1,  # one stream, whatever it carried
    }
    latency = samples["inferkit_grpc_request_duration_seconds", ("ModelInfer", "OK")]
    assert latency.count == 2
    assert samples["inferkit_requests_in_flight", ("grpc",)] == 0


async def test_request_metrics_count_refused_messages() -> None:
    async with serving(grpc_max_message_length=10) as (server, channel):
        result = await call(
            channel,
            f"{V2}/ModelInfer",
            proto_convert.request_to_proto(SUM, "sum"),
            pb.ModelInferResponse,
        )
        samples = grpc_samples(server)
    assert result.status is Status.RESOURCE_EXHAUSTED
    assert samples["inferkit_grpc_requests", ("ModelInfer", "RESOURCE_EXHAUSTED")] == 1


# -- health -------------------------------------------------------------------------------------


async def health(channel: Channel, service: str = "") -> Any:
    return (await HealthStub(channel).Check(HealthCheckRequest(service=service))).status


async def test_health_follows_readiness() -> None:
    server = Server([sum_model()])
    async with ChannelFor(create_grpc_service(server)) as channel:
        assert await health(channel) == HealthCheckResponse.NOT_SERVING  # not started
        await server.start()
        assert await health(channel) == HealthCheckResponse.SERVING
        assert (
            await health(channel, "inference.GRPCInferenceService") == HealthCheckResponse.SERVING
        )
        with pytest.raises(GRPCError) as unknown:
            await health(channel, "nope.Service")
        assert unknown.value.status is Status.NOT_FOUND
        server.begin_shutdown()
        assert await health(channel) == HealthCheckResponse.NOT_SERVING
    await server.stop()


async def test_readiness_tells_watchers_of_a_change() -> None:
    server = Server([sum_model()])
    await server.start()
    check = Readiness(server, poll_interval=0.01)
    changed = await check.__subscribe__()
    await changed.wait()  # the first poll finds SERVING
    assert check.__status__() is True
    changed.clear()
    server.begin_shutdown()
    await asyncio.wait_for(changed.wait(), timeout=10)
    assert check.__status__() is False
    await check.__unsubscribe__(changed)
    await server.stop()


def test_health_is_left_out_without_protobuf(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setitem(sys.modules, "grpclib.health.service", None)
    assert create_health(Server(), []) == []
    assert "gRPC health checking is off" in caplog.text


# -- the listener -------------------------------------------------------------------------------


class Gated(Model):
    """Answers only once ``gate`` is set; ``entered`` is set when a request arrives."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.entered = asyncio.Event()
        self.gate = asyncio.Event()

    async def predict(self, payload: InferenceRequest) -> InferenceResponse:
        self.entered.set()
        await self.gate.wait()
        return InferenceResponse(model_name=self.name, outputs=[])


@asynccontextmanager
async def listening(
    server: Server, settings: Settings
) -> AsyncIterator[tuple[asyncio.Event, asyncio.Task[None]]]:
    """Run ``grpc_service`` until the block ends; enter once it says it is listening."""
    started = asyncio.Event()

    class Started(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            if record.getMessage().startswith("gRPC server running"):
                started.set()

    logger = logging.getLogger("inferkit.grpc")
    handler, level = Started(), logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    stop = asyncio.Event()
    task = asyncio.create_task(grpc_service(server, settings, stop))
    try:
        waiting = asyncio.create_task(started.wait())
        await asyncio.wait([task, waiting], return_when=asyncio.FIRST_COMPLETED)
        waiting.cancel()
        if task.done():
            task.result()  # it failed to start: show why
        yield stop, task
    finally:
        stop.set()
        await task
        logger.removeHandler(handler)
        logger.setLevel(level)


async def test_stop_drains_in_flight_requests_then_closes() -> None:
    settings = Settings(host="127.0.0.1", grpc_port=free_port())
    model = named(Gated, "gated")
    assert isinstance(model, Gated)
    server = Server([model], settings=settings)
    await server.start()
    channel = Channel("127.0.0.1", settings.grpc_port)
    stub = pb.GrpcInferenceServiceStub(channel)
    request = pb.ModelInferRequest(model_name="gated")
    async with listening(server, settings) as (stop, task):
        in_flight = asyncio.create_task(stub.model_infer(request))
        await model.entered.wait()
        server.begin_shutdown()  # as the runner does, before it sets stop
        stop.set()
        with pytest.raises(GRPCError) as refused:
            await stub.model_infer(request)
        assert refused.value.status is Status.UNAVAILABLE
        assert refused.value.message == "The server is shutting down"
        assert not task.done()  # still waiting for the request in flight
        model.gate.set()
        reply = await in_flight
        await task
    assert reply.model_name == "gated"
    channel.close()
    await server.stop()


async def test_requests_still_running_after_the_grace_period_are_cancelled(
    caplog: pytest.LogCaptureFixture,
) -> None:
    settings = Settings(host="127.0.0.1", grpc_port=free_port(), graceful_shutdown_timeout=0.01)
    model = named(Gated, "gated")
    assert isinstance(model, Gated)
    server = Server([model], settings=settings)
    await server.start()
    channel = Channel("127.0.0.1", settings.grpc_port)
    stub = pb.GrpcInferenceServiceStub(channel)
    async with listening(server, settings) as (stop, task):
        in_flight = asyncio.create_task(stub.model_infer(pb.ModelInferRequest(model_name="gated")))
        await model.entered.wait()
        stop.set()
        await task
    assert "gRPC: 1 requests still running after the grace period" in caplog.text
    # grpclib cancels the handler without a word to the client; in a real process the exit
    # closes the connection, which is what the client sees here too.
    channel.close()
    with pytest.raises((GRPCError, StreamTerminatedError, ConnectionError)):
        await in_flight
    await server.stop()


def test_the_runner_serves_grpc_on_its_port() -> None:
    # Settings only: nothing binds these ports.
    with_grpc = Settings(host="127.0.0.1", grpc_port=9001)
    assert grpc_service in _services(with_grpc)
    assert ("127.0.0.1", 9001, "gRPC") in _ports(with_grpc)
    without = Settings(grpc_port=0)
    assert grpc_service not in _services(without)
    assert all(what != "gRPC" for _, _, what in _ports(without))


# -- TLS ----------------------------------------------------------------------------------------


def _openssl(*args: str | Path) -> None:
    subprocess.run(["openssl", *map(str, args)], check=True, capture_output=True)


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A throwaway CA and a server and a client certificate it signed (EC keys: quick)."""
    if shutil.which("openssl") is None:
        pytest.skip("needs the openssl command to make test certificates")
    tmp = tmp_path_factory.mktemp("certs")
    key = ("-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes")
    _openssl(
        "req", "-x509", *key, "-keyout", tmp / "ca.key", "-out", tmp / "ca.crt", "-days", "1",
        "-subj", "/CN=inferkit test CA",
        "-addext", "basicConstraints=critical,CA:TRUE",
        "-addext", "keyUsage=critical,keyCertSign,cRLSign",
    )  # fmt: skip
    usages = {
        "server": "subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth",
        "client": "extendedKeyUsage=clientAuth",
    }
    for who, usage in usages.items():
        ext = tmp / f"{who}.ext"
        ext.write_text(
            "basicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature\n"
            f"{usage}\nsubjectKeyIdentifier=hash\nauthorityKeyIdentifier=keyid,issuer\n"
        )
        _openssl(
            "req", *key, "-keyout", tmp / f"{who}.key", "-out", tmp / f"{who}.csr",
            "-subj", f"/CN={who}",
        )  # fmt: skip
        _openssl(
            "x509", "-req", "-in", tmp / f"{who}.csr", "-CA", tmp / "ca.crt",
            "-CAkey", tmp / "ca.key", "-CAcreateserial", "-out", tmp / f"{who}.crt",
            "-days", "1", "-extfile", ext,
        )  # fmt: skip
    return {p.stem + p.suffix: p for p in tmp.iterdir()}


def client_context(certs: dict[str, Path], *, with_cert: bool) -> ssl.SSLContext:
    context = ssl.create_default_context(cafile=str(certs["ca.crt"]))
    context.set_alpn_protocols(["h2"])
    if with_cert:
        context.load_cert_chain(str(certs["client.crt"]), str(certs["client.key"]))
    return context


@contextmanager
def tls_channel(port: int, context: ssl.SSLContext) -> Iterator[pb.GrpcInferenceServiceStub]:
    channel = Channel("127.0.0.1", port, ssl=context)
    try:
        yield pb.GrpcInferenceServiceStub(channel)
    finally:
        channel.close()


async def test_tls(certs: dict[str, Path]) -> None:
    settings = Settings(
        host="127.0.0.1",
        grpc_port=free_port(),
        grpc_tls_certificate=str(certs["server.crt"]),
        grpc_tls_key=str(certs["server.key"]),
    )
    server = Server([sum_model()], settings=settings)
    await server.start()
    async with listening(server, settings):
        with tls_channel(settings.grpc_port, client_context(certs, with_cert=False)) as stub:
            assert (await stub.server_live(pb.ServerLiveRequest())).live
    await server.stop()


async def test_mutual_tls_refuses_clients_without_a_certificate(certs: dict[str, Path]) -> None:
    settings = Settings(
        host="127.0.0.1",
        grpc_port=free_port(),
        grpc_tls_certificate=str(certs["server.crt"]),
        grpc_tls_key=str(certs["server.key"]),
        grpc_tls_client_ca=str(certs["ca.crt"]),
    )
    server = Server([sum_model()], settings=settings)
    await server.start()
    async with listening(server, settings):
        with tls_channel(settings.grpc_port, client_context(certs, with_cert=True)) as stub:
            assert (await stub.server_live(pb.ServerLiveRequest())).live
        with tls_channel(settings.grpc_port, client_context(certs, with_cert=False)) as stub:
            with pytest.raises((ssl.SSLError, ConnectionError, StreamTerminatedError)):
                await stub.server_live(pb.ServerLiveRequest())
    await server.stop()


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        (
            {"grpc_tls_certificate": "server.crt"},
            "grpc_tls_certificate and grpc_tls_key must be given together",
        ),
        (
            {"grpc_tls_client_ca": "ca.crt"},
            "grpc_tls_client_ca needs grpc_tls_certificate and grpc_tls_key",
        ),
    ],
)
def test_tls_settings_errors(settings: dict[str, Any], message: str) -> None:
    with pytest.raises(errors.SettingsError) as caught:
        tls_context(Settings(**settings))
    assert caught.value.message == message


def test_tls_files_that_do_not_load(tmp_path: Path) -> None:
    settings = Settings(
        grpc_tls_certificate=str(tmp_path / "missing.crt"), grpc_tls_key=str(tmp_path / "k")
    )
    with pytest.raises(errors.SettingsError, match=r"^Cannot load the gRPC TLS files: "):
        tls_context(settings)
    assert tls_context(Settings()) is None

"""The request pipeline: one outcome record per call, the same from every transport."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import httpx
import proto_convert
import pytest
from grpclib.testing import ChannelFor
from toymodels import FailingModel, HangingModel, named, sum_model

from inferkit import InferenceRequest, InferenceResponse, Server, errors
from inferkit.events import InferenceFinished
from inferkit.pipeline import Call, ClientGone
from inferkit.transports.grpc import create_grpc_service
from inferkit.transports.grpc._generated import inference as pb
from inferkit.transports.rest import create_rest_app
from inferkit.types import RequestInput

BODY = {
    "id": "r1",
    "inputs": [{"name": "x", "shape": [2, 2], "datatype": "FP32", "data": [1, 2, 3, 4]}],
}
REQUEST = InferenceRequest(
    id="r1", inputs=[RequestInput(name="x", shape=[2, 2], datatype="FP32", data=[1, 2, 3, 4])]
)


class Recorder:
    """A call hook keeping what it saw; it also adds a header the model will see."""

    def __init__(self) -> None:
        self.seen: list[tuple[Call, InferenceFinished, Any]] = []

    def started(self, call: Call) -> str:
        call.headers = {**(call.headers or {}), "x-hook": "1"}
        return f"token-{call.transport}"

    def finished(self, call: Call, record: InferenceFinished, token: Any) -> None:
        self.seen.append((call, record, token))


@asynccontextmanager
async def both(*models: Any) -> AsyncIterator[tuple[Server, Recorder, httpx.AsyncClient, Any]]:
    server = Server(models or [sum_model(version="v1")])
    hook = Recorder()
    server.add_hook(hook)
    server.add_hook(hook)  # added once however often
    await server.start()
    transport = httpx.ASGITransport(app=create_rest_app(server))
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as http:
        async with ChannelFor(create_grpc_service(server)) as channel:
            yield server, hook, http, pb.GrpcInferenceServiceStub(channel)
    await server.stop()


def facts(record: InferenceFinished) -> tuple[Any, ...]:
    # What must not depend on the transport.
    return (
        record.model, record.version, record.ok, record.code, record.found,
        record.batch_size, record.request_id, record.stream, record.responses,
    )  # fmt: skip


async def test_a_hook_sees_the_same_record_from_rest_and_grpc() -> None:
    async with both() as (_, hook, http, stub):
        assert (await http.post("/v2/models/sum/infer", json=BODY)).status_code == 200
        await stub.model_infer(proto_convert.request_to_proto(REQUEST, "sum"))
    (_, rest, rest_token), (_, grpc, grpc_token) = hook.seen
    assert facts(rest) == facts(grpc) == ("sum", "v1", True, "", True, 2, "r1", False, 1)
    assert (rest.transport, rest.route, rest.path, rest.status) == (
        "rest", "/v2/models/{name}/infer", "/v2/models/sum/infer", "200"
    )  # fmt: skip
    route = "/inference.GRPCInferenceService/ModelInfer"
    assert (grpc.transport, grpc.route, grpc.path, grpc.status) == ("grpc", route, route, "OK")
    assert (rest_token, grpc_token) == ("token-rest", "token-grpc")
    assert rest.duration_s >= rest.compute_s > 0 and grpc.duration_s >= grpc.compute_s > 0


@pytest.mark.parametrize(
    ("model", "code", "found", "statuses"),
    [
        ("nope", "MODEL_NOT_FOUND", False, ("404", "NOT_FOUND")),
        ("boom", "INFERENCE_FAILED", True, ("500", "INTERNAL")),
    ],
)
async def test_failures_have_the_same_code_and_their_transport_status(
    model: str, code: str, found: bool, statuses: tuple[str, str]
) -> None:
    async with both(sum_model(), named(FailingModel, "boom")) as (_, hook, http, stub):
        await http.post(f"/v2/models/{model}/infer", json=BODY)
        with pytest.raises(Exception):  # noqa: B017 - the gRPC error; its status is checked below
            await stub.model_infer(proto_convert.request_to_proto(REQUEST, model))
    records = [record for _, record, _ in hook.seen]
    assert [(r.model, r.code, r.found, r.ok) for r in records] == [(model, code, found, False)] * 2
    assert tuple(r.status for r in records) == statuses


async def test_statistics_and_model_metrics_skip_calls_to_unknown_models() -> None:
    async with both() as (server, _, http, _stub):
        await http.post("/v2/models/nope/infer", json=BODY)
        await http.post("/v2/models/sum/infer", json=BODY)
        stats = await server.model_statistics()
    assert [(m.name, m.inference_stats.success.count) for m in stats.model_stats] == [("sum", 1)]


async def test_the_model_sees_headers_a_hook_added() -> None:
    class Echo(FailingModel):
        async def predict(self, payload: InferenceRequest) -> InferenceResponse:
            headers = (payload.parameters or {})["headers"]
            return InferenceResponse(
                model_name=self.name, outputs=[], parameters={"seen": headers.get("x-hook")}
            )

    async with both(named(Echo, "echo")) as (_, _hook, http, _stub):
        response = await http.post("/v2/models/echo/infer", json=BODY)
    assert response.json()["parameters"] == {"seen": "1"}


async def test_a_direct_call_has_a_record_without_transport() -> None:
    server = Server([sum_model()])
    records: list[Any] = []
    server.add_listener(records.append)
    await server.start()
    await server.infer("sum", REQUEST)
    (record,) = [r for r in records if isinstance(r, InferenceFinished)]
    assert (record.transport, record.status, record.ok, record.request_id) == ("", "", True, "r1")


class Broken:
    def started(self, call: Call) -> None:
        raise RuntimeError("hook bug")

    def finished(self, call: Call, record: InferenceFinished, token: Any) -> None:
        raise RuntimeError("hook bug")


async def test_a_failing_hook_is_logged_and_the_call_goes_on(
    caplog: pytest.LogCaptureFixture,
) -> None:
    server = Server([sum_model()])
    server.add_hook(Broken())
    await server.start()
    response = await server.infer("sum", REQUEST)
    assert response.outputs[0].data.tolist() == [3.0, 7.0]
    assert sum("Call hook" in r.getMessage() for r in caplog.records) == 2


class Exchange:
    """A transport stub: one request in; what was sent is kept."""

    def __init__(self, request: InferenceRequest | Exception) -> None:
        self.request = request
        self.sent: list[Any] = []

    async def receive(self, call: Call) -> InferenceRequest | None:
        if isinstance(self.request, Exception):
            raise self.request
        return self.request

    async def send(self, call: Call, response: InferenceResponse) -> None:
        self.sent.append(response)
        call.status = "sent"

    async def send_error(self, call: Call, error: errors.InferkitError) -> None:
        self.sent.append((error.code, error.message))
        call.status = "error"


async def test_an_unexpected_error_is_sent_generic_and_logged_once(
    caplog: pytest.LogCaptureFixture,
) -> None:
    server = Server([sum_model()])
    await server.start()
    exchange = Exchange(KeyError("secret-key"))
    call = Call(transport="test", route="/x", model="sum")
    with caplog.at_level(logging.ERROR, logger="inferkit.server"):
        await server.handle(call, exchange)
    assert exchange.sent == [("INTERNAL", "Internal server error")]
    assert [r.getMessage() for r in caplog.records] == ["Unexpected error answering test /x"]
    assert call.code == "INTERNAL"


async def test_a_client_that_went_away_gets_nothing_and_is_recorded_cancelled() -> None:
    server = Server([sum_model()])
    records: list[Any] = []
    server.add_listener(records.append)
    await server.start()
    exchange = Exchange(ClientGone())
    await server.handle(Call(transport="test", model="sum"), exchange)
    assert exchange.sent == []
    assert [(r.code, r.status) for r in records if isinstance(r, InferenceFinished)] == [
        ("CANCELLED", "")
    ]


async def test_a_passed_deadline_answers_timeout_without_running_the_model() -> None:
    model = named(HangingModel, "hang")
    server = Server([model])
    await server.start()
    exchange = Exchange(REQUEST)
    call = Call(transport="test", model="hang", deadline=0.0)  # long past (monotonic)
    await server.handle(call, exchange)
    assert exchange.sent == [
        ("INFERENCE_TIMEOUT", "The request's deadline passed before model 'hang' could run it")
    ]


async def test_a_deadline_shorter_than_the_inference_timeout_wins() -> None:
    import time

    server = Server([named(HangingModel, "hang")])
    await server.start()
    exchange = Exchange(REQUEST)
    await server.handle(Call(model="hang", deadline=time.monotonic() + 0.01), exchange)
    ((code, message),) = exchange.sent
    assert code == "INFERENCE_TIMEOUT" and message.startswith("Model 'hang' did not answer within")

"""gRPC ``ModelStreamInfer`` in process: a model's own ``predict_stream``, and Triton's
request-by-request answers for the others."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import proto_convert
from grpclib.testing import ChannelFor
from toymodels import WordStream, named, sum_model, text_request

from inferkit import InferenceRequest, Server
from inferkit.events import InferenceFinished
from inferkit.transports.grpc import create_grpc_service
from inferkit.transports.grpc._generated import inference as pb
from inferkit.types import MetadataTensor, RequestInput


@asynccontextmanager
async def stub(*models: Any) -> AsyncIterator[tuple[Any, list[InferenceFinished]]]:
    server = Server(models or [named(WordStream, "words"), sum_model()])
    records: list[InferenceFinished] = []
    server.add_listener(lambda e: records.append(e) if isinstance(e, InferenceFinished) else None)
    await server.start()
    async with ChannelFor(create_grpc_service(server)) as channel:
        yield pb.GrpcInferenceServiceStub(channel), records
    await server.stop()


def text(model: str, value: str, id: str = "") -> pb.ModelInferRequest:
    return proto_convert.request_to_proto(text_request(value, id=id or None), model)


def number(model: str, value: float, id: str) -> pb.ModelInferRequest:
    request = InferenceRequest(
        id=id, inputs=[RequestInput(name="x", shape=[1, 1], datatype="FP64", data=[value])]
    )
    return proto_convert.request_to_proto(request, model)


def answers(replies: list[pb.ModelStreamInferResponse]) -> list[Any]:
    out: list[Any] = []
    for reply in replies:
        if reply.error_message:
            out.append(reply.error_message)
            continue
        assert reply.infer_response is not None
        response = proto_convert.response_from_proto(reply.infer_response)
        out.append((response.id, response.outputs[0].data.tolist()))
    return out


async def test_every_request_goes_to_the_model_stream_and_every_response_comes_back() -> None:
    async with stub() as (client, records):
        sent = [text("words", "a b", "r1"), text("words", "c", "r2")]
        got = [r async for r in client.model_stream_infer(sent)]
    assert answers(got) == [("r1", [[b"a"]]), ("r1", [[b"b"]]), ("r2", [[b"c"]])]
    (record,) = records
    route = "/inference.GRPCInferenceService/ModelStreamInfer"
    assert (record.transport, record.route, record.status, record.stream) == (
        "grpc", route, "OK", True
    )  # fmt: skip
    assert (record.batch_size, record.responses, record.ok) == (2, 3, True)


async def test_a_model_error_is_one_error_message_and_the_end_of_the_stream() -> None:
    async with stub() as (client, records):
        # The call ends OK (a failed status would raise here): the error is a message.
        got = [
            r
            async for r in client.model_stream_infer(
                [text("words", "a boom b"), text("words", "x")]
            )
        ]
    assert answers(got) == [
        (answers(got)[0][0], [[b"a"]]),
        "Model 'words' failed to run inference; see the server log",
    ]
    assert records[-1].code == "INFERENCE_FAILED" and "secret" not in repr(got)


async def test_requests_for_another_model_are_refused_and_the_stream_goes_on() -> None:
    async with stub() as (client, _):
        sent = [text("words", "a", "1"), number("sum", 2, "2"), text("words", "b", "3")]
        got = [r async for r in client.model_stream_infer(sent)]
    assert answers(got) == [
        ("1", [[b"a"]]),
        "This stream serves model 'words' (named by its first request); send requests for "
        "model 'sum' on a stream of their own",
        ("3", [[b"b"]]),
    ]


async def test_an_invalid_request_is_refused_and_the_model_stream_goes_on() -> None:
    declared = [MetadataTensor(name="x", datatype="BYTES", shape=[-1, 1])]
    async with stub(named(WordStream, "words", inputs=declared)) as (client, _):
        sent = [text("words", "a", "1"), number("words", 2, "2"), text("words", "b", "3")]
        got = [r async for r in client.model_stream_infer(sent)]
    assert answers(got) == [
        ("1", [[b"a"]]),
        "Expected datatype BYTES for input 'x', got FP64 - at `$.inputs[0].datatype`",
        ("3", [[b"b"]]),
    ]


async def test_models_without_a_stream_are_answered_request_by_request() -> None:
    async with stub() as (client, records):
        sent = [number("sum", 1, "a"), number("nope", 2, "b"), number("sum", 3, "c")]
        got = [r async for r in client.model_stream_infer(sent)]
    assert answers(got) == [("a", [1.0]), "Model 'nope' not found", ("c", [3.0])]
    # One record per request, each with its own outcome.
    assert [(r.model, r.code, r.status) for r in records] == [
        ("sum", "", "OK"),
        ("nope", "MODEL_NOT_FOUND", "NOT_FOUND"),
        ("sum", "", "OK"),
    ]


async def test_an_empty_stream_ends_at_once() -> None:
    async with stub() as (client, records):
        got = [r async for r in client.model_stream_infer([])]
    assert got == [] and records == []


async def test_only_the_first_request_decides_how_the_stream_is_answered() -> None:
    # A stream started on a model without its own predict_stream stays request by request:
    # a later request for a streaming model is answered by its predict, once.
    async with stub() as (client, records):
        sent = [number("sum", 1, "a"), text("words", "two words", "b"), number("sum", 3, "c")]
        got = [r async for r in client.model_stream_infer(sent)]
    assert answers(got) == [("a", [1.0]), ("b", [[b"two words"]]), ("c", [3.0])]
    assert [(r.model, r.stream, r.responses) for r in records] == [
        ("sum", True, 1),
        ("words", True, 1),
        ("sum", True, 1),
    ]


async def test_a_refused_request_leaves_the_stream_status_ok() -> None:
    async with stub() as (client, records):
        sent = [text("words", "a", "1"), number("sum", 2, "2")]
        got = [r async for r in client.model_stream_infer(sent)]
    assert len(got) == 2
    refused, stream = records  # the refused request is recorded on its own
    assert (refused.model, refused.code, refused.status) == (
        "sum",
        "INVALID_REQUEST",
        "INVALID_ARGUMENT",
    )
    assert (stream.status, stream.ok, stream.model, stream.responses) == ("OK", True, "words", 1)

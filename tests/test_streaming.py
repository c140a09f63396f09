"""``Server.infer_stream``: a model's own ``predict_stream``, and MLServer's default."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest
from toymodels import FailingModel, HangingModel, WordStream, named, sum_model, text_request

from inferkit import InferenceRequest, InferenceResponse, Model, Server, Settings, errors
from inferkit.events import Event, InferenceFinished
from inferkit.model import has_own_stream
from inferkit.types import RequestInput


async def requests(*items: InferenceRequest) -> AsyncIterator[InferenceRequest]:
    for item in items:
        yield item


def words(responses: list[InferenceResponse]) -> list[Any]:
    return [r.outputs[0].data.tolist()[0][0] for r in responses]


async def served(*models: Model, **settings: Any) -> tuple[Server, list[InferenceFinished]]:
    server = Server(models, settings=Settings(**settings))
    records: list[InferenceFinished] = []

    def keep(event: Event) -> None:
        if isinstance(event, InferenceFinished):
            records.append(event)

    server.add_listener(keep)
    await server.start()
    return server, records


def one(value: float, id: str | None = None) -> InferenceRequest:
    return InferenceRequest(
        id=id, inputs=[RequestInput(name="x", shape=[1, 1], datatype="FP64", data=[value])]
    )


def test_has_own_stream_tells_an_override_from_the_default() -> None:
    assert has_own_stream(named(WordStream, "w"))
    assert not has_own_stream(sum_model())

    class Flagged:
        streams_natively = True

    assert has_own_stream(Flagged())


async def test_a_model_stream_gets_every_request_and_yields_as_it_likes() -> None:
    server, records = await served(named(WordStream, "words", version="v1"))
    stream = server.infer_stream("words", requests(text_request("a b", id="r1"), text_request("c")))
    got = [r async for r in stream]
    assert words(got) == [b"a", b"b", b"c"]
    assert [(r.model_name, r.model_version) for r in got] == [("words", "v1")] * 3
    # Each response carries its request's id; a request without one gets one id for all.
    assert [r.id for r in got[:2]] == ["r1", "r1"] and got[2].id not in (None, "r1")
    (record,) = records
    assert (record.model, record.version, record.ok, record.stream) == ("words", "v1", True, True)
    assert (record.batch_size, record.responses, record.transport) == (2, 3, "")


async def test_a_model_without_a_stream_gets_one_predict_per_request() -> None:
    server, records = await served(sum_model())
    got = [r async for r in server.infer_stream("sum", requests(one(1, "a"), one(2, "b")))]
    assert [(r.id, r.outputs[0].data.tolist()) for r in got] == [("a", [1.0]), ("b", [2.0])]
    assert [(r.batch_size, r.responses) for r in records] == [(2, 2)]


async def test_an_invalid_request_ends_the_stream_with_its_error() -> None:
    server, records = await served(sum_model())
    bad = InferenceRequest(inputs=[RequestInput(name="x", shape=[2], datatype="FP64", data=[1.0])])
    got = []
    with pytest.raises(errors.InvalidShape):
        async for response in server.infer_stream("sum", requests(one(1), bad, one(3))):
            got.append(response)
    assert len(got) == 1
    assert records[-1].code == "INVALID_SHAPE"


async def test_a_model_error_in_the_stream_is_inference_failed_without_its_text() -> None:
    server, records = await served(named(WordStream, "words"))
    with pytest.raises(errors.InferenceFailed) as caught:
        async for _ in server.infer_stream("words", requests(text_request("a boom b"))):
            pass
    assert "secret" not in str(caught.value) and caught.value.model == "words"
    assert (records[-1].code, records[-1].responses) == ("INFERENCE_FAILED", 1)


async def test_unknown_model_and_predict_errors_end_the_default_stream() -> None:
    server, _ = await served(sum_model(), named(FailingModel, "boom"))
    with pytest.raises(errors.ModelNotFound):
        async for _ in server.infer_stream("nope", requests(one(1))):
            pass
    with pytest.raises(errors.InferenceFailed):
        async for _ in server.infer_stream("boom", requests(one(1))):
            pass


class Endless(Model):
    """Yields a response per request and then waits; records when its generator closes."""

    closed: asyncio.Event

    async def load(self) -> bool:
        self.closed = asyncio.Event()
        return True

    async def predict_stream(
        self, payloads: AsyncIterator[InferenceRequest]
    ) -> AsyncIterator[InferenceResponse]:
        try:
            async for _ in payloads:
                yield InferenceResponse(model_name=self.name, outputs=[])
            await asyncio.Event().wait()
        finally:
            self.closed.set()


async def test_closing_the_stream_early_closes_the_model_and_lets_unload_finish() -> None:
    model = named(Endless, "endless")
    server, records = await served(model)
    stream = server.infer_stream("endless", requests(one(1)))
    assert (await anext(stream)).model_name == "endless"
    await stream.aclose()
    assert model.closed.is_set()
    assert records[-1].code == "CANCELLED"
    await asyncio.wait_for(server.unload("endless"), 5)  # nothing left in flight


async def test_an_unload_waits_for_an_open_stream() -> None:
    model = named(Endless, "endless")
    server, _ = await served(model)
    stream = server.infer_stream("endless", requests(one(1)))
    await anext(stream)
    unload = asyncio.create_task(server.unload("endless"))
    for _ in range(100):  # bounded: the unload starts, then waits for the stream
        await asyncio.sleep(0)
        if (await server.index())[0].state == "UNLOADING":
            break
    assert (await server.index())[0].state == "UNLOADING" and not unload.done()
    await stream.aclose()
    await asyncio.wait_for(unload, 5)
    assert not await server.model_ready("endless")


async def test_inference_timeout_applies_to_each_predict_of_a_default_stream() -> None:
    server, records = await served(named(HangingModel, "hang"), inference_timeout=0.01)
    with pytest.raises(errors.InferenceTimeout):
        async for _ in server.infer_stream("hang", requests(one(1))):
            pass
    assert records[-1].code == "INFERENCE_TIMEOUT"

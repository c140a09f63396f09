"""``parallel_workers`` through the ``Server``: which models get workers, and load / reload /
unload / stop reaching every worker process."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable

import pytest
from parallel_support import alive, worker_children

from inferkit import InferenceRequest, ModelSettings, RequestInput, Server, Settings
from inferkit.metrics import HistogramSample


def request(x: float) -> InferenceRequest:
    return InferenceRequest(inputs=[RequestInput(name="x", shape=[1], datatype="FP64", data=[x])])


@pytest.mark.parametrize(
    ("server_default", "model_value", "expected"),
    [(0, None, 0), (1, None, 1), (1, 0, 0), (0, 2, 2)],
    ids=["default in-process", "inherits the server's", "model opts out", "model asks for 2"],
)
async def test_the_model_setting_wins_over_the_server_default(
    settings_for: Callable[..., ModelSettings],
    server_default: int,
    model_value: int | None,
    expected: int,
) -> None:
    before = worker_children()
    server = Server(
        [settings_for("Gated", parallel_workers=model_value)],
        settings=Settings(parallel_workers=server_default),
    )
    await server.start()
    try:
        assert len(worker_children() - before) == expected
        response = await server.infer("gated", request(3))
        assert response.model_name == "gated"
        assert response.outputs[0].data.tolist() == [6.0]
    finally:
        await server.stop()
    assert worker_children() == before


async def test_load_reload_unload_and_stop_reach_every_worker(
    settings_for: Callable[..., ModelSettings],
) -> None:
    before = worker_children()
    server = Server([settings_for("Gated", parallel_workers=2)])
    await server.start()
    try:
        first = worker_children() - before
        assert len(first) == 2
        assert int((await server.infer("gated", request(1))).outputs[1].data[0]) in first

        await server.load("gated")  # a reload: new workers, then the old ones stop
        second = worker_children() - before
        assert len(second) == 2 and not second & first
        assert not any(alive(pid) for pid in first)
        assert await server.model_ready("gated")

        await server.unload("gated")
        assert worker_children() == before
        assert [item.state for item in await server.index()] == ["UNAVAILABLE"]

        await server.load("gated")
        assert len(worker_children() - before) == 2
        assert (await server.infer("gated", request(2))).outputs[0].data.tolist() == [4.0]
    finally:
        await server.stop()
    assert worker_children() == before


async def test_custom_metrics_recorded_in_workers_add_up_on_the_server(
    settings_for: Callable[..., ModelSettings],
) -> None:
    server = Server([settings_for("Metered", parallel_workers=2)])
    await server.start()
    try:
        responses = await asyncio.gather(*(server.infer("metered", request(i)) for i in range(10)))
        assert len({int(r.outputs[0].data[0]) for r in responses}) == 2  # both workers
        await server.infer("metered", request(20))
        samples = {s.name: dict(s.samples) for s in server.metrics.collect()}
    finally:
        await server.stop()
    assert samples["calls"] == {("metered", "", "any"): 11.0}
    assert samples["sizes"] == {("metered", ""): HistogramSample((2, 10, 11), 65.0, 11)}
    assert samples["last"] == {("metered", ""): 20.0}


async def test_streams_reach_the_workers_model_stream_or_its_predict(
    settings_for: Callable[..., ModelSettings],
) -> None:
    # The main process learns from the workers which models have their own predict_stream.
    server = Server(
        [
            settings_for("Streaming", parallel_workers=2),
            settings_for("Gated", parallel_workers=2),
        ]
    )
    await server.start()

    async def two() -> AsyncIterator[InferenceRequest]:
        for x in (1.0, 5.0):
            yield InferenceRequest(id=f"r{x:g}", inputs=request(x).inputs)

    try:
        streamed = [r async for r in server.infer_stream("streaming", two())]
        assert [float(r.outputs[0].data[0]) for r in streamed] == [1.0, 2.0, 5.0, 6.0]
        assert {r.model_name for r in streamed} == {"streaming"}
        # Each response has its own request's id, though the main process sends requests
        # to the worker ahead of the model reading them.
        assert [r.id for r in streamed] == ["r1", "r1", "r5", "r5"]
        each = [r async for r in server.infer_stream("gated", two())]
        assert [float(r.outputs[0].data[0]) for r in each] == [2.0, 10.0]  # one predict each
    finally:
        await server.stop()


async def test_requests_a_model_stream_left_unread_do_not_break_its_worker(
    settings_for: Callable[..., ModelSettings],
) -> None:
    before = worker_children()
    server = Server([settings_for("FirstOnly", parallel_workers=1)])
    await server.start()

    async def many() -> AsyncIterator[InferenceRequest]:
        for x in range(5):
            yield request(float(x))

    try:
        workers = worker_children() - before
        for _ in range(3):  # the late requests and the close reach a stream already ended
            got = [r async for r in server.infer_stream("firstonly", many())]
            assert [float(r.outputs[0].data[0]) for r in got] == [0.0]
        assert worker_children() - before == workers  # the same worker: none died
        assert await server.model_ready("firstonly")
    finally:
        await server.stop()

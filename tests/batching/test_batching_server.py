"""Batching through the ``Server``: which models batch, request ids, Triton's ``timeout`` and
``priority`` parameters, statistics, metrics and Server-Timing. On a virtual clock (see
``virtualclock``), so a model's cost and a batch's wait take no real time."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from typing import Any

import httpx
import msgspec
import numpy as np
import pytest
from prometheus_client.parser import text_string_to_metric_families
from toymodels import BatchRecorder, HangingModel, named, rows_request, sum_model
from virtualclock import run

from inferkit import InferenceRequest, InferenceResponse, ModelSettings, Server, Settings
from inferkit.errors import InferenceTimeout, InvalidRequest
from inferkit.transports.metrics import create_metrics_app
from inferkit.transports.rest import create_rest_app


def recorder(cost: float = 0.0, size: int = 4, wait: float = 60.0, **settings: Any) -> Any:
    return BatchRecorder(
        ModelSettings(name="rec", max_batch_size=size, max_batch_time=wait, **settings), cost
    )


def rows(response: InferenceResponse, output: str = "y") -> list[float]:
    tensor = next(o for o in response.outputs if o.name == output)
    return [float(v) for v in np.asarray(tensor.data).reshape(tensor.shape[0], -1)[:, 0]]


async def gather_infer(server: Server, requests: list[InferenceRequest]) -> list[Any]:
    calls = [server.infer("rec", request) for request in requests]
    return list(await asyncio.gather(*calls, return_exceptions=True))


def test_concurrent_requests_share_a_batch_and_keep_their_own_ids() -> None:
    model = recorder(size=4)

    async def main() -> list[Any]:
        async with Server([model]) as server:
            return await gather_infer(server, [rows_request(i, id=f"r{i}") for i in range(4)])

    responses = run(main())
    assert model.batches == [[0, 1, 2, 3]]
    assert [r.id for r in responses] == ["r0", "r1", "r2", "r3"]
    assert [rows(r) for r in responses] == [[0], [2], [4], [6]]
    assert [rows(r, "batch") for r in responses] == [[4]] * 4
    assert {r.model_name for r in responses} == {"rec"}


def test_a_model_from_settings_batches_too() -> None:
    settings = ModelSettings(
        name="rec", implementation="toymodels.BatchRecorder", max_batch_size=3, max_batch_time=60
    )

    async def main() -> list[Any]:
        async with Server([settings]) as server:
            return await gather_infer(server, [rows_request(i) for i in range(3)])

    assert [rows(r, "batch") for r in run(main())] == [[3]] * 3


@pytest.mark.parametrize(("size", "wait"), [(8, 0.0), (1, 0.5), (0, 0.0)])
def test_without_both_settings_a_model_does_not_batch(
    size: int, wait: float, caplog: pytest.LogCaptureFixture
) -> None:
    model = recorder(size=size, wait=wait)

    async def main() -> list[Any]:
        async with Server([model]) as server:
            return await gather_infer(server, [rows_request(i) for i in range(3)])

    with caplog.at_level(logging.WARNING, "inferkit.server"):
        responses = run(main())
    assert [rows(r, "batch") for r in responses] == [[1]] * 3
    warned = [r.getMessage() for r in caplog.records if "batching is off" in r.getMessage()]
    assert len(warned) == (1 if size or wait else 0)


@pytest.mark.parametrize("batching", [True, False])
def test_the_requests_timeout_parameter_is_honoured(batching: bool) -> None:
    model = recorder(cost=10.0, size=4 if batching else 0)

    async def main() -> tuple[BaseException | None, float]:
        loop = asyncio.get_running_loop()
        async with Server([model]) as server:
            request = rows_request(1)
            request.parameters = {"timeout": 250_000}  # microseconds
            outcome = (await gather_infer(server, [request]))[0]
            return outcome, loop.time()

    outcome, answered_at = run(main())
    assert isinstance(outcome, InferenceTimeout)
    assert answered_at == pytest.approx(0.25)
    assert model.batches == [[1]]  # the batch closed early to run it before its deadline


def test_the_server_timeout_bounds_the_requests_own() -> None:
    model = recorder(cost=10.0)

    async def main() -> float:
        async with Server([model], settings=Settings(inference_timeout=0.5)) as server:
            request = rows_request(1)
            request.parameters = {"timeout": 60_000_000}
            outcome = (await gather_infer(server, [request]))[0]
            assert isinstance(outcome, InferenceTimeout)
            return asyncio.get_running_loop().time()

    assert run(main()) == pytest.approx(0.5)


@pytest.mark.parametrize(
    ("params", "where"),
    [
        ({"timeout": -1}, "$.parameters.timeout"),
        ({"timeout": 1.5}, "$.parameters.timeout"),
        ({"priority": "high"}, "$.parameters.priority"),
        ({"priority": True}, "$.parameters.priority"),
    ],
)
def test_invalid_scheduling_parameters_are_refused(params: dict[str, Any], where: str) -> None:
    model = recorder()

    async def main() -> BaseException:
        async with Server([model]) as server:
            request = rows_request(1)
            request.parameters = params
            return (await gather_infer(server, [request]))[0]  # type: ignore[no-any-return]

    error = run(main())
    assert isinstance(error, InvalidRequest)
    assert error.where == where
    assert model.batches == []


def test_priority_reaches_the_batcher() -> None:
    model = recorder(cost=1.0, size=2, wait=0.01)

    async def main() -> None:
        async with Server([model]) as server:
            busy = asyncio.ensure_future(server.infer("rec", rows_request(0)))
            await asyncio.sleep(0.5)
            urgent = rows_request(3)
            urgent.parameters = {"priority": 1}
            await asyncio.gather(
                busy,
                *(server.infer("rec", r) for r in [rows_request(1), rows_request(2), urgent]),
            )

    run(main())
    assert model.batches == [[0], [3, 1], [2]]


def test_statistics_count_batches_as_executions() -> None:
    model = recorder(cost=0.5, size=3)

    async def main() -> Any:
        async with Server([model]) as server:
            await gather_infer(server, [rows_request(i, i) for i in range(3)])  # 2 rows each
            await gather_infer(server, [rows_request(7)])  # 6 > 3: alone
            return msgspec.to_builtins(await server.model_statistics("rec"))

    stats = run(main())["model_stats"][0]
    assert stats["inference_count"] == 7
    assert stats["execution_count"] == 4
    assert stats["inference_stats"]["success"]["count"] == 4
    assert stats["inference_stats"]["compute_infer"] == {"count": 4, "ns": 2_000_000_000}
    assert [(b["batch_size"], b["compute_infer"]["count"]) for b in stats["batch_stats"]] == [
        (1, 1),
        (2, 3),
    ]


def test_statistics_of_requests_of_one_batch() -> None:
    model = recorder(cost=0.5, size=4)

    async def main() -> Any:
        async with Server([model]) as server:
            await gather_infer(server, [rows_request(i) for i in range(4)])
            return msgspec.to_builtins(await server.model_statistics("rec"))

    stats = run(main())["model_stats"][0]
    assert (stats["inference_count"], stats["execution_count"]) == (4, 1)
    # Each request's compute is its batch's.
    assert stats["inference_stats"]["compute_infer"] == {"count": 4, "ns": 2_000_000_000}
    assert stats["batch_stats"][0]["batch_size"] == 4
    assert stats["batch_stats"][0]["compute_infer"] == {"count": 1, "ns": 500_000_000}


@pytest.fixture
def samples() -> Any:
    def parse(text: str) -> dict[tuple[str, str], float]:
        return {
            (sample.name, sample.labels.get("model", "")): sample.value
            for family in text_string_to_metric_families(text)
            for sample in family.samples
            if not sample.labels.get("le")
        }

    return parse


def test_batch_size_and_queue_time_metrics(samples: Any) -> None:
    model = recorder(cost=0.1, size=8, wait=0.25)

    async def main() -> str:
        async with Server([model]) as server:
            app = create_metrics_app(server)
            await gather_infer(server, [rows_request(i) for i in range(3)])
            await gather_infer(server, [rows_request(i, i) for i in range(2)])
            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
                return (await client.get("/metrics")).text

    metrics = samples(run(main()))
    assert metrics["inferkit_batch_size_count", "rec"] == 2
    assert metrics["inferkit_batch_size_sum", "rec"] == 3 + 4
    assert metrics["inferkit_batch_queue_duration_seconds_count", "rec"] == 5
    # Each batch closed when no request had joined it for an eighth of max_batch_time.
    assert metrics["inferkit_batch_queue_duration_seconds_sum", "rec"] == pytest.approx(
        5 * 0.25 / 8
    )


def test_server_timing_shows_the_wait_for_the_batch() -> None:
    model = recorder(cost=0.1, size=8, wait=0.25)
    body = msgspec.json.encode(rows_request(1))

    async def main() -> httpx.Response:
        async with Server([model]) as server:
            transport = httpx.ASGITransport(app=create_rest_app(server))
            async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
                return await client.post("/v2/models/rec/infer", content=body)

    response = run(main())
    assert response.status_code == 200
    timing = dict(
        (part.split(";dur=")[0].strip(), float(part.split(";dur=")[1]))
        for part in response.headers["server-timing"].split(",")
    )
    assert timing["batch"] == 250.0 / 8  # alone, it waits an eighth of max_batch_time
    assert timing["compute"] == 100.0
    assert timing["queue"] >= 0.0


def test_a_stream_to_a_batching_model_is_answered_request_by_request() -> None:
    model = recorder(size=4, wait=0.01)

    async def requests() -> AsyncIterator[InferenceRequest]:
        for i in range(3):
            yield rows_request(i, id=f"s{i}")

    async def main() -> list[InferenceResponse]:
        async with Server([model]) as server:
            return [r async for r in server.infer_stream("rec", requests())]

    responses = run(main())
    assert [(r.id, rows(r)) for r in responses] == [("s0", [0]), ("s1", [2]), ("s2", [4])]


def test_another_model_is_not_slowed_by_a_batching_one() -> None:
    model = recorder(size=32, wait=60.0)

    async def main() -> tuple[float, bool]:
        async with Server([model, sum_model()]) as server:
            waiting = asyncio.ensure_future(server.infer("rec", rows_request(1)))
            await server.infer("sum", rows_request(1))
            answered_at = asyncio.get_running_loop().time()
            done = waiting.done()
            await waiting
            return answered_at, done

    answered_at, done = run(main())
    assert answered_at == 0.0 and not done


def test_a_batch_waits_longer_while_the_server_has_other_calls_in_hand() -> None:
    # A call stuck in another model is in hand (being answered) and not waiting in a batch:
    # requests may still be coming, so the batch waits its whole max_batch_time.
    model = recorder(size=8, wait=0.4)
    body = msgspec.json.encode(rows_request(1))

    async def main() -> list[float]:
        async with Server([model, named(HangingModel, "hang")]) as server:
            transport = httpx.ASGITransport(app=create_rest_app(server))
            async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
                alone = await client.post("/v2/models/rec/infer", content=body)
                hanging = asyncio.ensure_future(client.post("/v2/models/hang/infer", content=body))
                await asyncio.sleep(0.01)
                crowded = await client.post("/v2/models/rec/infer", content=body)
                hanging.cancel()
                return [batch_wait(alone), batch_wait(crowded)]

    assert run(main()) == [400.0 / 8, 400.0]


def batch_wait(response: httpx.Response) -> float:
    timing = response.headers["server-timing"]
    return float(timing.split("batch;dur=")[1])


def test_a_reload_lets_queued_and_running_batches_finish() -> None:
    settings = ModelSettings(
        name="rec", implementation="toymodels.BatchRecorder", max_batch_size=4, max_batch_time=1
    )

    async def main() -> tuple[list[Any], list[Any]]:
        async with Server([settings]) as server:
            waiting = [asyncio.ensure_future(server.infer("rec", rows_request(i))) for i in (1, 2)]
            await asyncio.sleep(0)
            await server.load("rec")  # a new instance; the old one answers its requests first
            before = list(await asyncio.gather(*waiting, return_exceptions=True))
            after = await gather_infer(server, [rows_request(i) for i in (3, 4, 5)])
            return before, after

    before, after = run(main())
    assert [rows(r) for r in before] == [[2], [4]]
    assert [rows(r, "batch") for r in before] == [[2], [2]]
    assert [rows(r) for r in after] == [[6], [8], [10]]

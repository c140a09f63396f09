"""``ParallelModel`` with real ``spawn``-ed workers: dispatch, backpressure, deaths, lifecycle."""

from __future__ import annotations

import asyncio
import os
import signal
from collections.abc import AsyncIterator, Callable
from typing import Any

import numpy as np
import pytest
import pytest_asyncio
from parallel_support import Gate, alive, worker_children

from inferkit import InferenceRequest, InferenceResponse, ModelSettings, RequestInput
from inferkit.errors import (
    InferenceFailed,
    InvalidRequest,
    ModelLoadError,
    ModelNotReady,
    QueueFull,
    WorkerLost,
)
from inferkit.parallel import ParallelModel

pytestmark = pytest.mark.asyncio(loop_scope="module")


def request(x: float, parameters: dict[str, Any] | None = None) -> InferenceRequest:
    return InferenceRequest(
        parameters=parameters,
        inputs=[RequestInput(name="x", shape=[1], datatype="FP64", data=[x])],
    )


def doubled_by(response: InferenceResponse) -> tuple[float, int]:
    """(the doubled value, the pid of the worker that answered) of a Gated response."""
    double, pid = response.outputs
    return float(double.data[0]), int(pid.data[0])


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def gated(settings_for: Callable[..., ModelSettings]) -> AsyncIterator[ParallelModel]:
    model = ParallelModel(settings_for("Gated"), workers=2)
    await model.load()
    yield model
    await model.unload()


async def dispatched(model: ParallelModel, requests: list[InferenceRequest]) -> list[Any]:
    """Start predicts as tasks and let each reach its worker (one pass of the loop)."""
    tasks = [asyncio.ensure_future(model.predict(r)) for r in requests]
    await asyncio.sleep(0)  # a yield, not a delay: every task runs up to its first await
    assert model.inflight == len(requests)
    return tasks


async def test_200_concurrent_requests_are_answered_correctly_by_both_workers(
    gated: ParallelModel,
) -> None:
    responses = await asyncio.gather(*(gated.predict(request(i)) for i in range(200)))
    answers = [doubled_by(r) for r in responses]
    assert [value for value, _ in answers] == [2.0 * i for i in range(200)]
    assert {pid for _, pid in answers} == set(gated.pids)
    assert len(gated.pids) == 2
    assert gated.inflight == 0


async def test_every_worker_full_raises_queue_full_then_serves_again(
    gated: ParallelModel, gate: Gate
) -> None:
    gated.max_inflight = 2
    gate.close()
    try:
        tasks = await dispatched(gated, [request(i, gate.parameters) for i in range(4)])
        with pytest.raises(QueueFull) as info:
            await gated.predict(request(9))
        assert str(info.value) == "All 2 workers of model 'gated' are busy"
        assert info.value.retryable
    finally:
        gated.max_inflight = 128
        gate.open()
    assert [doubled_by(r)[0] for r in await asyncio.gather(*tasks)] == [0.0, 2.0, 4.0, 6.0]
    assert doubled_by(await gated.predict(request(5)))[0] == 10.0


async def test_a_killed_worker_fails_only_its_own_requests_then_is_restarted(
    gated: ParallelModel, gate: Gate
) -> None:
    before = gated.pids
    victim, survivor = before
    gate.close()
    try:
        # Least-loaded dispatch alternates: even requests on worker 0, odd ones on worker 1.
        tasks = await dispatched(gated, [request(i, gate.parameters) for i in range(6)])
        os.kill(victim, signal.SIGKILL)
        # The victim's requests fail while the gate is still shut: at once, not at a timeout.
        for task in tasks[0::2]:
            with pytest.raises(WorkerLost) as info:
                await task
            assert str(info.value) == (
                f"Worker 0 (pid {victim}) of model 'gated' died while running this request"
            )
        assert gated.ready  # one worker is still alive
        assert gated.pids == [survivor]
        late = asyncio.ensure_future(gated.predict(request(10)))
    finally:
        gate.open()
    answers = [doubled_by(r) for r in await asyncio.gather(*tasks[1::2], late)]
    assert answers == [(2.0, survivor), (6.0, survivor), (10.0, survivor), (20.0, survivor)]

    await gated.wait_workers()
    assert len(gated.pids) == 2 and gated.pids[1] == survivor
    assert gated.pids[0] != victim and not alive(victim)
    responses = await asyncio.gather(*(gated.predict(request(i)) for i in range(20)))
    assert {doubled_by(r)[1] for r in responses} == set(gated.pids)


async def test_with_every_worker_dead_the_model_is_not_ready_until_one_is_back(
    gated: ParallelModel, gate: Gate
) -> None:
    gate.close()
    try:
        tasks = await dispatched(gated, [request(i, gate.parameters) for i in range(2)])
        for pid in gated.pids:
            os.kill(pid, signal.SIGKILL)
        outcomes = await asyncio.gather(*tasks, return_exceptions=True)
    finally:
        gate.open()
    assert all(isinstance(o, WorkerLost) for o in outcomes)
    assert not gated.ready
    with pytest.raises(ModelNotReady) as info:
        await gated.predict(request(1))
    assert str(info.value) == "Model 'gated' is not ready (all 2 workers are restarting)"
    await gated.wait_workers()
    assert gated.ready and len(gated.pids) == 2
    assert doubled_by(await gated.predict(request(4)))[0] == 8.0


async def test_a_cancelled_call_counts_until_its_worker_finishes_it(
    gated: ParallelModel, gate: Gate
) -> None:
    gate.close()
    try:
        (task,) = await dispatched(gated, [request(1, gate.parameters)])
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert gated.inflight == 1  # the worker is still busy with it
    finally:
        gate.open()
    # One call per worker; the busy worker answers its second call after the cancelled one.
    await asyncio.gather(gated.predict(request(2)), gated.predict(request(3)))
    assert gated.inflight == 0


async def test_unload_leaves_no_worker_process(settings_for: Callable[..., ModelSettings]) -> None:
    model = ParallelModel(settings_for("Gated", name="short-lived"), workers=2)
    await model.load()
    pids = model.pids
    assert len(pids) == 2 and set(pids) <= worker_children()
    await model.unload()
    assert not model.ready and model.pids == []
    assert not any(alive(pid) for pid in pids)
    assert not set(pids) & worker_children()


@pytest.mark.parametrize(
    ("cls", "reason"),
    [
        ("BrokenLoad", "FileNotFoundError: weights.bin is missing"),
        (
            "Missing",
            "Cannot import 'parallel_toys.Missing': "
            "module 'parallel_toys' has no attribute 'Missing'",
        ),
    ],
)
async def test_a_load_failure_gives_the_in_process_reason_and_leaves_no_process(
    settings_for: Callable[..., ModelSettings], cls: str, reason: str
) -> None:
    before = worker_children()
    model = ParallelModel(settings_for(cls), workers=2)
    with pytest.raises(ModelLoadError) as info:
        await model.load()
    assert info.value.message == reason
    assert not model.ready
    assert worker_children() == before


async def test_errors_keep_their_class_and_unexpected_text_stays_in_the_log(
    settings_for: Callable[..., ModelSettings], capfd: pytest.CaptureFixture[str]
) -> None:
    model = ParallelModel(settings_for("Failing"), workers=1)
    await model.load()
    try:
        with pytest.raises(InvalidRequest) as invalid:
            await model.predict(request(-1, {"kind": "invalid"}))
        with pytest.raises(InferenceFailed) as failed:
            await model.predict(request(1))
    finally:
        await model.unload()
    assert type(invalid.value) is InvalidRequest
    assert str(invalid.value) == "Expected a positive number, got -1 - at `$.inputs[0].data[0]`"
    assert str(failed.value) == "Model 'failing' failed to run inference; see the server log"
    assert "secret-token-123" in capfd.readouterr().err  # logged by the worker, with traceback


async def test_metadata_is_the_one_the_loaded_model_gives(
    settings_for: Callable[..., ModelSettings],
) -> None:
    model = ParallelModel(settings_for("Described"), workers=1)
    assert model.metadata().platform == ""  # from settings until a worker has loaded it
    await model.load()
    try:
        meta = model.metadata()
        meta.versions = ["edited by the server"]
        again = model.metadata()
    finally:
        await model.unload()
    assert again.platform == "custom" and again.versions is None
    assert [(t.name, t.shape) for t in again.inputs or []] == [("pixels", [-1, 64])]


async def test_a_stream_runs_the_model_predict_stream_in_one_worker(
    settings_for: Callable[..., ModelSettings],
) -> None:
    model = ParallelModel(settings_for("Streaming"), workers=2)
    await model.load()

    async def requests() -> AsyncIterator[InferenceRequest]:
        for x in (10, 20):
            yield request(x)

    try:
        answers = [float(r.outputs[0].data[0]) async for r in model.predict_stream(requests())]
    finally:
        await model.unload()
    assert answers == [10.0, 11.0, 20.0, 21.0]


@pytest.mark.parametrize(
    "workers",
    [0, -1],
)
async def test_a_parallel_model_needs_a_worker(workers: int) -> None:
    with pytest.raises(ValueError, match=f"at least 1 worker, got {workers}"):
        ParallelModel(ModelSettings(name="m"), workers=workers)


# -- tensors --------------------------------------------------------------------------------

BIG = np.linspace(0, 1, 50_000)  # 400 kB: through shared memory

TENSORS = {
    # id: (datatype, shape, data sent, type the model receives)
    "flat list": ("FP64", [2], [1.5, 2.5], "list"),
    "nested list": ("INT32", [2, 2], [[1, 2], [3, 4]], "list"),
    "small array": ("FP32", [2, 2], np.arange(4, dtype=np.float32).reshape(2, 2), "ndarray"),
    "large array": ("FP64", [50_000], BIG, "ndarray"),
    # How the REST transport keeps large JSON floats (float64 whatever the datatype): uncast.
    "large JSON floats": ("FP32", [50_000], BIG, "ndarray"),
    "strided array": ("FP64", [25_000], BIG[::2], "ndarray"),
    "FP16": ("FP16", [3], np.array([0.5, 1.5, -2], dtype=np.float16), "ndarray"),
    "BOOL": ("BOOL", [3], np.array([True, False, True]), "ndarray"),
    "UINT64": ("UINT64", [1], np.array([2**63 + 5], dtype=np.uint64), "ndarray"),
    "small raw": ("UINT8", [3], b"\x01\x02\x03", "bytes"),
    "large raw": ("UINT8", [100_000], bytes(range(256)) * 390 + b"\x07" * 160, "bytes"),
    "BYTES": ("BYTES", [2], np.array([b"a", "wörld".encode()], dtype=object), "ndarray"),
}


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def echo(settings_for: Callable[..., ModelSettings]) -> AsyncIterator[ParallelModel]:
    model = ParallelModel(settings_for("Echo"), workers=1)
    await model.load()
    yield model
    await model.unload()


@pytest.mark.parametrize(("datatype", "shape", "data", "received"), TENSORS.values(), ids=TENSORS)
async def test_tensors_arrive_as_they_were_sent_and_come_back_the_same(
    echo: ParallelModel, datatype: str, shape: list[int], data: Any, received: str
) -> None:
    sent = InferenceRequest(
        parameters={"headers": {"x-trace": "1"}, "nested": [1, {"a": None}]},
        inputs=[RequestInput(name="t", shape=shape, datatype=datatype, data=data)],
    )
    response = await echo.predict(sent)
    (output,) = response.outputs
    assert output.parameters == {"received": received}
    assert response.parameters == sent.parameters
    assert type(output.data) is type(data)
    if isinstance(data, np.ndarray):
        assert output.data.dtype == data.dtype and output.data.shape == data.shape
        assert output.data.tolist() == data.tolist()
        assert output.data.flags.writeable
    else:
        assert output.data == data

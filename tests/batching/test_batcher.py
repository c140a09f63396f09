"""``BatchingModel`` driven by real concurrent callers on a loop with a virtual clock.

Every wait here is virtual (see ``virtualclock``): a batch that closes after ``max_batch_time``
or before a deadline closes at exactly that time of the loop's clock, so the tests assert the
times the batcher reports, never wall-clock timings.
"""

from __future__ import annotations

import asyncio
from typing import Any

import numpy as np
import pytest
from toymodels import BatchRecorder, rows_request
from virtualclock import run

from inferkit import InferenceRequest, InferenceResponse, Model, ModelSettings, decode_args
from inferkit.batching import Batched, BatchingModel
from inferkit.errors import InferenceFailed, InferenceTimeout, InvalidRequest
from inferkit.events import BatchFinished
from inferkit.settings import ModelParameters
from inferkit.types import RequestInput

MAX_WAIT = 0.01


def batching(
    model: BatchRecorder | None = None, *, size: int = 4, wait: float = MAX_WAIT, **kwargs: Any
) -> tuple[BatchingModel, BatchRecorder]:
    """A batcher over ``model`` (a new ``BatchRecorder`` by default), and the model."""
    inner = model if model is not None else BatchRecorder(ModelSettings(name="rec"))
    return BatchingModel(inner, max_batch_size=size, max_batch_time=wait, **kwargs), inner


def first_values(answer: Batched) -> list[float]:
    y = answer.response.outputs[0]
    return [float(v) for v in np.asarray(y.data).reshape(y.shape)[:, 0]]


def test_a_full_batch_runs_at_once_and_each_caller_gets_its_own_rows() -> None:
    batcher, model = batching(size=4, wait=60.0)

    async def main() -> list[Batched]:
        return list(await asyncio.gather(*(batcher.submit(rows_request(i)) for i in range(4))))

    answers = run(main())
    assert model.batches == [[0, 1, 2, 3]]
    assert [first_values(a) for a in answers] == [[0], [2], [4], [6]]
    assert all(a.batch_rows == 4 and a.queued_s == 0 for a in answers)
    for answer in answers:
        assert answer.response.outputs[0].shape == [1, 2]
        assert answer.response.parameters == {"seen": 1}
    # Each response owns its parameters: one caller changing them cannot touch another's.
    assert answers[0].response.parameters is not answers[1].response.parameters


def test_a_batch_that_does_not_fill_runs_after_max_batch_time() -> None:
    batcher, model = batching(size=8, wait=0.25, idle=None)

    async def main() -> list[Batched]:
        first = asyncio.ensure_future(batcher.submit(rows_request(1)))
        await asyncio.sleep(0.2)
        return list(await asyncio.gather(first, batcher.submit(rows_request(2))))

    answers = run(main())
    assert model.batches == [[1, 2]]
    assert [a.queued_s for a in answers] == [0.25, pytest.approx(0.05)]


def test_a_batch_no_request_joins_for_idle_seconds_runs_before_max_batch_time() -> None:
    batcher, model = batching(size=8, wait=1.0, idle=0.03)

    async def main() -> list[Batched]:
        calls = []
        for i in range(3):  # 0.02 apart: each joins before the batch is idle for 0.03
            calls.append(asyncio.ensure_future(batcher.submit(rows_request(i))))
            await asyncio.sleep(0.02)
        await asyncio.sleep(0.2)
        calls.append(asyncio.ensure_future(batcher.submit(rows_request(3))))
        return list(await asyncio.gather(*calls))

    answers = run(main())
    assert model.batches == [[0, 1, 2], [3]]
    # The batch closed 0.03 after its last request came, at 0.07; not at 1.0.
    assert [a.queued_s for a in answers] == pytest.approx([0.07, 0.05, 0.03, 0.03])


def test_idle_is_an_eighth_of_max_batch_time_by_default() -> None:
    batcher, _ = batching(size=8, wait=0.4)
    answer = run(batcher.submit(rows_request(1)))
    assert answer.queued_s == pytest.approx(0.05)


def test_while_requests_are_arriving_a_batch_does_not_close_for_idleness() -> None:
    arriving = [True]
    batcher, _ = batching(size=8, wait=1.0, arriving=lambda: arriving[0])

    async def main() -> Batched:
        call = asyncio.ensure_future(batcher.submit(rows_request(1)))
        await asyncio.sleep(0.3)
        arriving[0] = False
        return await call

    # Looked at again every idle period (0.125): the first look after 0.3 closes it.
    assert run(main()).queued_s == 0.375


def test_requests_that_keep_arriving_still_leave_at_max_batch_time() -> None:
    batcher, _ = batching(size=8, wait=1.0, arriving=lambda: True)
    assert run(batcher.submit(rows_request(1))).queued_s == 1.0


def test_requests_of_several_rows_share_a_batch_and_get_their_rows_back() -> None:
    batcher, model = batching(size=6, wait=60.0)

    async def main() -> list[Batched]:
        shapes = [(1.0, 2.0), (3.0, 4.0, 5.0), (6.0,)]
        return list(await asyncio.gather(*(batcher.submit(rows_request(*r)) for r in shapes)))

    answers = run(main())
    assert model.batches == [[1, 2, 3, 4, 5, 6]]
    assert [first_values(a) for a in answers] == [[2, 4], [6, 8, 10], [12]]
    assert [a.response.outputs[0].shape[0] for a in answers] == [2, 3, 1]


def test_a_request_that_does_not_fit_waits_for_the_next_batch() -> None:
    batcher, model = batching(size=4, wait=MAX_WAIT)

    async def main() -> list[Batched]:
        return list(
            await asyncio.gather(
                batcher.submit(rows_request(1, 1, 1)), batcher.submit(rows_request(2, 2))
            )
        )

    answers = run(main())
    assert model.batches == [[1, 1, 1], [2, 2]]
    assert [a.batch_rows for a in answers] == [3, 2]


def test_requests_that_cannot_join_run_in_batches_of_their_own_kind() -> None:
    batcher, model = batching(size=4, wait=MAX_WAIT)

    async def main() -> list[Batched]:
        return list(
            await asyncio.gather(
                batcher.submit(rows_request(1, width=2)),
                batcher.submit(rows_request(2, width=3)),  # another trailing shape
                batcher.submit(rows_request(3, width=2)),
            )
        )

    answers = run(main())
    assert sorted(model.batches) == [[1, 3], [2]]
    assert [first_values(a) for a in answers] == [[2], [4], [6]]
    assert [a.response.outputs[0].shape for a in answers] == [[1, 2], [1, 3], [1, 2]]


def scalar_request() -> InferenceRequest:
    return InferenceRequest(inputs=[RequestInput(name="x", shape=[], datatype="FP32", data=[1])])


def test_scalar_inputs_are_not_batched() -> None:
    seen: list[list[int]] = []

    class Scalar(Model):
        async def predict(self, payload: InferenceRequest) -> InferenceResponse:
            seen.append(payload.inputs[0].shape)
            return InferenceResponse(model_name=self.name, outputs=[])

    scalar = BatchingModel(Scalar(ModelSettings(name="s")), max_batch_size=4, max_batch_time=1)

    async def main() -> None:
        await asyncio.gather(scalar.submit(scalar_request()), scalar.submit(scalar_request()))

    run(main())
    assert seen == [[], []]


def test_while_the_model_is_busy_the_next_batch_keeps_growing() -> None:
    model = BatchRecorder(ModelSettings(name="rec"), cost=0.05)
    batcher, _ = batching(model, size=32, wait=MAX_WAIT, idle=None)

    async def main() -> list[Batched]:
        first = asyncio.ensure_future(batcher.submit(rows_request(0)))
        await asyncio.sleep(0.02)  # the first batch closed at 0.01 and runs until 0.06
        rest = [batcher.submit(rows_request(i)) for i in range(1, 11)]
        return list(await asyncio.gather(first, *rest))

    answers = run(main())
    assert model.batches == [[0], list(range(1, 11))]
    # Arrived at 0.02, closed at 0.03, but the only instance was busy until 0.06.
    assert answers[1].queued_s == pytest.approx(0.04)
    assert answers[1].compute_s == pytest.approx(0.05)
    assert batcher.estimate == pytest.approx(0.05)


def test_an_error_reaches_every_caller_of_the_batch_with_one_code() -> None:
    batcher, model = batching(size=3, wait=60.0)
    model.fail = RuntimeError("secret-token-123")

    async def main() -> list[BaseException | Batched]:
        calls = [batcher.submit(rows_request(i)) for i in range(3)]
        return list(await asyncio.gather(*calls, return_exceptions=True))

    outcomes = run(main())
    assert all(isinstance(o, InferenceFailed) for o in outcomes)
    assert len({id(o) for o in outcomes}) == 3  # one error object per caller
    assert all("secret" not in str(o) for o in outcomes)
    assert {o.code for o in outcomes if isinstance(o, InferenceFailed)} == {"INFERENCE_FAILED"}


def test_a_models_own_error_keeps_its_code_for_every_caller_and_the_next_batch_runs() -> None:
    batcher, model = batching(size=2, wait=60.0)

    async def main() -> tuple[list[BaseException | Batched], list[Batched]]:
        model.fail = InvalidRequest("column 'age' is missing")
        failed = await asyncio.gather(
            batcher.submit(rows_request(1)), batcher.submit(rows_request(2)), return_exceptions=True
        )
        model.fail = None
        ok = await asyncio.gather(batcher.submit(rows_request(3)), batcher.submit(rows_request(4)))
        return list(failed), list(ok)

    failed, ok = run(main())
    assert [type(f) for f in failed] == [InvalidRequest, InvalidRequest]
    assert all("column 'age'" in str(f) for f in failed)
    assert [first_values(a) for a in ok] == [[6], [8]]


def test_outputs_without_a_row_per_input_row_fail_the_batch() -> None:
    batcher, model = batching(size=2, wait=60.0)
    model.rows_out = 1  # e.g. a model that reduces over the batch

    async def main() -> list[BaseException | Batched]:
        calls = [batcher.submit(rows_request(1)), batcher.submit(rows_request(2))]
        return list(await asyncio.gather(*calls, return_exceptions=True))

    outcomes = run(main())
    assert all(isinstance(o, InferenceFailed) and "'y'" in str(o) for o in outcomes)


def test_a_cancelled_caller_leaves_the_queue_and_the_others_batch_without_it() -> None:
    batcher, model = batching(size=3, wait=60.0)

    async def main() -> list[Batched]:
        gone = asyncio.ensure_future(batcher.submit(rows_request(1)))
        stays = asyncio.ensure_future(batcher.submit(rows_request(2)))
        await asyncio.sleep(0)
        gone.cancel()
        await asyncio.sleep(0)
        assert batcher.waiting == 1
        # These two fill the batch with the one that stayed.
        return list(
            await asyncio.gather(
                stays, batcher.submit(rows_request(3)), batcher.submit(rows_request(4))
            )
        )

    answers = run(main())
    assert model.batches == [[2, 3, 4]]
    assert [first_values(a) for a in answers] == [[4], [6], [8]]


def test_a_request_whose_deadline_has_passed_never_runs() -> None:
    batcher, model = batching(size=2, wait=MAX_WAIT)

    async def main() -> None:
        now = asyncio.get_running_loop().time()
        await batcher.submit(rows_request(1), deadline=now - 0.001)

    with pytest.raises(InferenceTimeout):
        run(main())
    assert model.batches == []


def test_a_deadline_closes_the_batch_early_instead_of_timing_out() -> None:
    model = BatchRecorder(ModelSettings(name="rec"), cost=0.2)
    batcher, _ = batching(model, size=32, wait=60.0)

    async def main() -> list[Batched]:
        loop = asyncio.get_running_loop()
        first = await batcher.submit(rows_request(1), deadline=loop.time() + 1.0)
        # A request due in 1 s closes its batch with a tenth of its time left, less the
        # timer's margin (2 ms), less the batch's expected time: 0 s at first, then 0.2 s.
        second_at = loop.time()
        second = await batcher.submit(rows_request(2), deadline=second_at + 1.0)
        return [first, second]

    first, second = run(main())
    assert model.batches == [[1], [2]]
    assert first.queued_s == pytest.approx(0.898)
    assert second.queued_s == pytest.approx(0.698)


def test_a_request_waiting_behind_a_busy_model_expires_without_running() -> None:
    model = BatchRecorder(ModelSettings(name="rec"), cost=10.0)
    batcher, _ = batching(model, size=2, wait=MAX_WAIT)

    async def main() -> tuple[Batched, BaseException | Batched]:
        first = asyncio.ensure_future(batcher.submit(rows_request(1)))
        await asyncio.sleep(0.1)  # the first batch runs until 10.01
        loop = asyncio.get_running_loop()
        late = await asyncio.gather(
            batcher.submit(rows_request(2), deadline=loop.time() + 1.0), return_exceptions=True
        )
        assert loop.time() == pytest.approx(1.1)  # answered at its deadline, not at 10.01
        return await first, late[0]

    first, late = run(main())
    assert first_values(first) == [2]
    assert isinstance(late, InferenceTimeout)
    assert model.batches == [[1]]


def test_higher_priority_requests_are_batched_first() -> None:
    model = BatchRecorder(ModelSettings(name="rec"), cost=1.0)
    batcher, _ = batching(model, size=2, wait=MAX_WAIT)

    async def main() -> None:
        busy = asyncio.ensure_future(batcher.submit(rows_request(0)))
        await asyncio.sleep(0.5)  # the model is busy until 1.01
        await asyncio.gather(
            busy,
            batcher.submit(rows_request(1)),  # no priority: after every explicit one
            batcher.submit(rows_request(2), priority=2),
            batcher.submit(rows_request(3)),
            batcher.submit(rows_request(4), priority=1),  # 1 is the highest
        )

    run(main())
    assert model.batches == [[0], [4, 2], [1, 3]]


def test_a_decode_args_model_batches() -> None:
    class Doubler(Model):
        @decode_args
        async def predict(self, x: np.ndarray) -> np.ndarray:
            self.sizes.append(len(x))
            return np.asarray(x) * 2

    inner = Doubler(ModelSettings(name="d"))
    inner.sizes = []  # type: ignore[attr-defined]
    batcher = BatchingModel(inner, max_batch_size=3, max_batch_time=60.0)

    async def main() -> list[Batched]:
        return list(await asyncio.gather(*(batcher.submit(rows_request(i)) for i in range(3))))

    answers = run(main())
    assert inner.sizes == [3]  # type: ignore[attr-defined]
    assert [first_values(a) for a in answers] == [[0], [2], [4]]


def test_two_instances_run_two_batches_at_once() -> None:
    model = BatchRecorder(ModelSettings(name="rec"), cost=1.0)
    batcher, _ = batching(model, size=2, wait=MAX_WAIT, instances=2)

    async def main() -> float:
        await asyncio.gather(*(batcher.submit(rows_request(i)) for i in range(4)))
        return asyncio.get_running_loop().time()

    ended = run(main())
    assert model.batches == [[0, 1], [2, 3]]
    assert ended == pytest.approx(1.0)  # both ran together; one instance would take 2 s


def test_unload_lets_the_running_batch_finish_first() -> None:
    model = BatchRecorder(ModelSettings(name="rec"), cost=1.0)
    batcher, _ = batching(model, size=2, wait=MAX_WAIT)

    async def main() -> Batched:
        answer = asyncio.ensure_future(batcher.submit(rows_request(5)))
        await asyncio.sleep(0.5)
        await batcher.unload()
        assert answer.done()
        return await answer

    assert first_values(run(main())) == [10]
    assert model.unloaded_after == 1


def test_every_batch_is_reported() -> None:
    events: list[BatchFinished] = []
    model = BatchRecorder(
        ModelSettings(name="rec", parameters=ModelParameters(version="7")), cost=0.5
    )
    batcher, _ = batching(model, size=6, wait=60.0, on_batch=events.append)

    async def main() -> None:
        await asyncio.gather(*(batcher.submit(rows_request(i, i)) for i in range(3)))
        model.fail = RuntimeError("boom")
        await asyncio.gather(batcher.submit(rows_request(1, 1, 1, 1, 1, 1)), return_exceptions=True)

    run(main())
    assert events == [
        BatchFinished(model="rec", version="7", rows=6, requests=3, compute_s=0.5, ok=True),
        BatchFinished(model="rec", version="7", rows=6, requests=1, compute_s=0.5, ok=False),
    ]


def test_the_wrapped_model_shows_through() -> None:
    model = BatchRecorder(ModelSettings(name="rec", parameters=ModelParameters(version="2")))
    batcher, _ = batching(model)
    assert (batcher.name, batcher.version, batcher.settings) == ("rec", "2", model.settings)
    assert batcher.metadata() == model.metadata()
    assert batcher.streams_natively is False
    batcher.ready = False
    assert model.ready is False and batcher.ready is False

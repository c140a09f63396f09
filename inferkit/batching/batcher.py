"""``BatchingModel``: a model whose concurrent requests run together, as batches.

It has the shape of any model (:class:`~inferkit.model.ModelProtocol`) and wraps one, in-process
or in worker processes (:class:`~inferkit.parallel.ParallelModel`). Requests wait in a
:class:`~inferkit.batching.queue.BatchQueue`; whenever an instance of the model is free and the
queue has a closed batch, the batch's requests are joined into one request
(:func:`~inferkit.batching.tensors.join`), the wrapped model's ``predict`` runs once, and its
response is cut back into one response per request. An in-process model is one instance (its
``predict`` holds the event loop or its device anyway); a parallel model has one per worker, and
its batches go to the least-loaded worker. While every instance is busy the waiting batch keeps
growing, up to its rows: under load batches get larger on their own, which is where the
throughput comes from.

No task runs in the background: the queue is looked at when a request arrives, when a batch
finishes and when a timer set for the next decision fires. Time is the event loop's clock
(``loop.time()``), so a test can run the batcher on a loop with a virtual clock.
"""

from __future__ import annotations

import asyncio
import copy
import logging
import math
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Literal, NamedTuple

from ..errors import InferenceFailed, InferenceTimeout, InferkitError
from ..events import BatchFinished
from ..model import ModelProtocol, StreamingModel, has_own_stream
from ..settings import ModelSettings
from ..types import InferenceRequest, InferenceResponse, MetadataModelResponse
from .queue import DEFAULT_LEVEL, BatchQueue, Entry
from .tensors import join, join_key, rows_of, split

__all__ = ["Batched", "BatchingModel", "batching_enabled"]

log = logging.getLogger("inferkit.batching")

# Weight of the latest batch in the estimate of a batch's duration (used to close a batch
# early enough for a deadline): recent enough to follow a load change, smooth enough to ignore
# one slow batch.
_ESTIMATE_WEIGHT = 0.2
# A batch that no request has joined for this fraction of ``max_batch_time`` closes: requests
# stopped coming, and waiting the rest of ``max_batch_time`` would only add latency (at c=1, a
# whole ``max_batch_time`` per request, which is what MLServer's batcher costs). Under load the
# gaps between requests are far shorter, and while every instance is busy a batch keeps
# growing whatever its gaps, so batches stay large where batching pays.
_IDLE_FRACTION = 0.125
# A request's batch closes with this share of the request's time still left (at the latest):
# room for the batch's own time varying, the answer's way back and a late timer.
_DEADLINE_SHARE = 0.1
# How much earlier than its deadline less the estimate a request's batch closes: the event
# loop's timers fire late by about a millisecond, more on a busy loop.
_DEADLINE_MARGIN_S = 0.002


def _never() -> bool:
    return False


def batching_enabled(settings: ModelSettings) -> bool:
    """Whether a model's settings turn batching on: ``max_batch_size`` above 1 and
    ``max_batch_time`` above 0, as MLServer decides."""
    return settings.max_batch_size > 1 and settings.max_batch_time > 0


class Batched(NamedTuple):
    """One request's answer from a batch, and how it was served."""

    response: InferenceResponse
    #: Seconds from the request's arrival to the start of its batch.
    queued_s: float
    #: Seconds the batch's ``predict`` took.
    compute_s: float
    #: Rows in the batch (every request's together).
    batch_rows: int


@dataclass(eq=False)
class _Job:
    request: InferenceRequest
    future: asyncio.Future[Batched]


class BatchingModel:
    """Runs ``model``'s ``predict`` on batches of concurrent requests (see the module).

    A batch holds at most ``max_batch_size`` rows and waits at most ``max_batch_time`` seconds
    for more, and at most ``idle`` seconds (default: an eighth of ``max_batch_time``; ``None``:
    no limit) for its next request; ``instances`` is how many batches may run at once
    (default: the model's ``workers``, else 1). ``on_batch`` is called with a
    :class:`~inferkit.events.BatchFinished` after every batch. ``arriving`` tells whether the
    server has requests in hand that have not reached a batcher yet (being read, or their
    answers being sent): while it is true, a batch does not close for want of new requests,
    only when full, after ``max_batch_time`` or for a deadline.
    """

    def __init__(
        self,
        model: ModelProtocol,
        *,
        max_batch_size: int,
        max_batch_time: float,
        idle: float | Literal["auto"] | None = "auto",
        instances: int | None = None,
        on_batch: Callable[[BatchFinished], None] | None = None,
        arriving: Callable[[], bool] | None = None,
    ) -> None:
        self.model = model
        self.settings = model.settings
        self.instances = instances if instances is not None else getattr(model, "workers", 1)
        if idle == "auto":
            idle = max_batch_time * _IDLE_FRACTION
        self._idle = idle
        self._queue: BatchQueue[_Job] = BatchQueue(max_batch_size, max_batch_time, idle)
        self._arriving = arriving if arriving is not None else _never
        self._on_batch = on_batch
        self._running = 0
        self._tasks: set[asyncio.Task[None]] = set()
        self._timer: asyncio.TimerHandle | None = None
        self._timer_at = 0.0
        #: Seconds a batch is expected to take (a moving average); a request with a deadline
        #: closes its batch that long before the deadline.
        self.estimate = 0.0
        self._batches = 0

    # -- the model's shape: everything but predict goes to the wrapped model --------------

    @property
    def name(self) -> str:
        """The model's name."""
        return self.model.name

    @property
    def version(self) -> str | None:
        """The model's version, or None when unversioned."""
        return self.model.version

    @property
    def ready(self) -> bool:
        """The wrapped model's ``ready`` (True if it has none)."""
        return bool(getattr(self.model, "ready", True))

    @ready.setter
    def ready(self, value: bool) -> None:
        if hasattr(self.model, "ready"):
            self.model.ready = value

    @property
    def streams_natively(self) -> bool:
        """Whether the wrapped model has its own ``predict_stream`` (streams are not batched)."""
        return has_own_stream(self.model)

    async def load(self) -> bool | None:
        """Load the wrapped model."""
        return await self.model.load()

    async def unload(self) -> bool | None:
        """Let running batches finish, then unload the wrapped model."""
        self._cancel_timer()
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)
        return await self.model.unload()

    def metadata(self) -> MetadataModelResponse:
        """The wrapped model's metadata."""
        return self.model.metadata()

    def predict_stream(
        self, payloads: AsyncIterator[InferenceRequest]
    ) -> AsyncIterator[InferenceResponse]:
        """The wrapped model's own ``predict_stream`` (a stream is one conversation with the
        model; the server batches the requests of other streams one by one)."""
        model: StreamingModel = self.model  # type: ignore[assignment]
        return model.predict_stream(payloads)

    # -- batching --------------------------------------------------------------------------

    @property
    def waiting(self) -> int:
        """Requests waiting for a batch."""
        return len(self._queue)

    async def predict(self, payload: InferenceRequest) -> InferenceResponse:
        """Answer one request from a batch (no deadline, default priority)."""
        return (await self.submit(payload)).response

    async def submit(
        self, request: InferenceRequest, *, deadline: float | None = None, priority: int = 0
    ) -> Batched:
        """Queue a request for a batch and wait for its own answer.

        ``deadline`` is a time of the running loop's clock (``loop.time()``): a batch closes
        early rather than let the request wait past it, and a request still waiting when it
        passes fails with :class:`~inferkit.errors.InferenceTimeout` without running.
        ``priority`` is Triton's: 1 is the highest; 0 (none) comes after every request that
        gives one. Cancelling the caller takes the request out of the queue (a batch that
        already runs finishes).
        """
        rows = rows_of(request)
        # A request with nothing to batch on (a scalar input, inputs of different rows) gets a
        # key of its own: it runs alone.
        key = join_key(request) if rows is not None else object()
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Batched] = loop.create_future()
        arrived = loop.time()
        close_by = None
        if deadline is not None:
            close_by = deadline - _DEADLINE_SHARE * (deadline - arrived)
        entry = Entry(
            _Job(request, future),
            rows=rows if rows is not None else 1,
            key=key,
            arrived=arrived,
            deadline=deadline,
            close_by=close_by,
            level=priority if priority > 0 else DEFAULT_LEVEL,
        )
        self._queue.push(entry)
        self._schedule()
        try:
            return await future
        except asyncio.CancelledError:
            if self._queue.remove(entry):
                self._schedule()
            raise

    def _schedule(self) -> None:
        """Start every batch that may run now, and set the timer for the next decision."""
        loop = asyncio.get_running_loop()
        now = loop.time()
        for entry in self._queue.expire(now):
            if not entry.item.future.done():
                entry.item.future.set_exception(self._expired())
        lead = self.estimate + _DEADLINE_MARGIN_S
        quiet = not self._arriving()
        while self._running < self.instances:
            entries = self._queue.take(now, lead, quiet=quiet)
            if entries is None:
                break
            self._running += 1
            task = loop.create_task(self._run(entries))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
        # Busy, only deadlines can need us before a batch ends; free, a batch's closing too.
        free = self._running < self.instances
        wake = self._queue.wake_at(lead, closing=free, quiet=quiet)
        if free and not quiet and self._idle is not None and len(self._queue):
            # Requests are on their way, and nothing tells us when they have arrived: look
            # again after ``idle``.
            wake = min(wake if wake is not None else math.inf, now + self._idle)
        if wake is None:
            self._cancel_timer()
        elif self._timer is None or wake < self._timer_at:
            # A timer set for earlier stays: firing early only means looking again (the
            # idle rule moves the wake-up later with every arrival; re-arming costs more).
            self._cancel_timer()
            self._timer_at = wake
            self._timer = loop.call_at(wake, self._on_timer)

    def _on_timer(self) -> None:
        self._timer = None
        self._schedule()

    def _cancel_timer(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _expired(self) -> InferenceTimeout:
        return InferenceTimeout(
            f"The request's deadline passed while it waited for a batch of model '{self.name}'"
        )

    async def _run(self, entries: list[Entry[_Job]]) -> None:
        # A caller that went away between the batch's closing and now has a done future.
        entries = [e for e in entries if not e.item.future.done()]
        jobs = [e.item for e in entries]
        rows = [e.rows for e in entries]
        loop = asyncio.get_running_loop()
        started = loop.time()
        outcome: list[Batched] | BaseException = asyncio.CancelledError()
        try:
            if jobs:
                outcome = await self._predict(entries, started)
        finally:
            compute = loop.time() - started
            for i, job in enumerate(jobs):
                if job.future.done():
                    continue
                if isinstance(outcome, list):
                    job.future.set_result(outcome[i])
                elif isinstance(outcome, InferkitError):
                    job.future.set_exception(copy.copy(outcome))
                else:
                    job.future.cancel()  # this task was cancelled (the loop is closing)
            self._running -= 1
            if jobs:
                self._measured(compute, sum(rows), len(jobs), isinstance(outcome, list))
            self._schedule()

    async def _predict(
        self, entries: list[Entry[_Job]], started: float
    ) -> list[Batched] | InferkitError:
        """The batch's answers, one per entry, or the error each of them gets."""
        rows = [e.rows for e in entries]
        try:
            response = await self.model.predict(join([e.item.request for e in entries]))
            responses = split(response, rows, self.name)
        except InferkitError as exc:
            return exc
        except Exception:
            # The exception's text stays in the server log (it may hold secrets); every caller
            # of the batch gets the same generic error.
            log.exception("Model '%s' raised during predict of a batch", self.name)
            return InferenceFailed(
                f"Model '{self.name}' failed to run inference; see the server log"
            )
        ended = asyncio.get_running_loop().time()
        total = sum(rows)
        return [
            Batched(answer, started - e.arrived, ended - started, total)
            for e, answer in zip(entries, responses, strict=True)
        ]

    def _measured(self, compute: float, rows: int, requests: int, ok: bool) -> None:
        """Learn a batch's duration, and report the batch."""
        self._batches += 1
        if self._batches == 1:
            self.estimate = compute
        else:
            self.estimate += _ESTIMATE_WEIGHT * (compute - self.estimate)
        if self._on_batch is not None:
            self._on_batch(
                BatchFinished(
                    model=self.name,
                    version=self.version or "",
                    rows=rows,
                    requests=requests,
                    compute_s=compute,
                    ok=ok,
                )
            )

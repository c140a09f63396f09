"""Triton's statistics extension, computed from the core's events.

``Statistics`` is a listener (``server.add_listener(stats)``) that sums ``InferenceFinished``
events per model version (and ``BatchFinished`` events, a batching model's executions);
:meth:`Statistics.report` answers Triton's ``GET v2/models[/{name}[/versions/{version}]]/stats``
with the same JSON shape (the Structs below mirror the ``ModelStatistics*`` messages of the
gRPC proto field for field), so ``tritonclient``'s ``get_inference_statistics()`` and
perf_analyzer read it unchanged.

What the core measures maps onto Triton's phases as follows: ``compute_infer`` is the time in
the model's ``predict`` (for a request of a batching model, its batch's ``predict``);
``queue`` is the rest of the request (validation and encoding in the core, and the wait for a
batch); ``compute_input`` and ``compute_output`` are counted with 0 ns, because decoding and
encoding happen inside ``predict`` (``decode_args``). A batching model's ``execution_count``
and ``batch_stats`` count its batches, by rows, as Triton's do.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import msgspec

from .errors import ModelNotFound
from .events import BatchFinished, Event, InferenceFinished
from .types import RepositoryIndexResponseItem

__all__ = [
    "InferBatchStatistics",
    "InferStatistics",
    "ModelStatistics",
    "ModelStatisticsResponse",
    "StatisticDuration",
    "Statistics",
]


class StatisticDuration(msgspec.Struct, kw_only=True):
    """A number of events and their total duration in nanoseconds."""

    count: int = 0
    ns: int = 0


def _duration() -> StatisticDuration:
    return StatisticDuration()


class InferStatistics(msgspec.Struct, kw_only=True):
    """Cumulative durations of the phases of a model version's requests."""

    success: StatisticDuration = msgspec.field(default_factory=_duration)
    fail: StatisticDuration = msgspec.field(default_factory=_duration)
    queue: StatisticDuration = msgspec.field(default_factory=_duration)
    compute_input: StatisticDuration = msgspec.field(default_factory=_duration)
    compute_infer: StatisticDuration = msgspec.field(default_factory=_duration)
    compute_output: StatisticDuration = msgspec.field(default_factory=_duration)
    cache_hit: StatisticDuration = msgspec.field(default_factory=_duration)
    cache_miss: StatisticDuration = msgspec.field(default_factory=_duration)


class InferBatchStatistics(msgspec.Struct, kw_only=True):
    """Executions of one batch size."""

    batch_size: int
    compute_input: StatisticDuration = msgspec.field(default_factory=_duration)
    compute_infer: StatisticDuration = msgspec.field(default_factory=_duration)
    compute_output: StatisticDuration = msgspec.field(default_factory=_duration)


class ModelStatistics(msgspec.Struct, kw_only=True):
    """Statistics of one model version since the server started."""

    name: str
    #: "" for an unversioned model.
    version: str = ""
    #: Milliseconds since the epoch of the last inference (0: none yet).
    last_inference: int = 0
    #: Successful inferences, each element of a batch counted once.
    inference_count: int = 0
    #: Successful model executions (a batch counts once).
    execution_count: int = 0
    inference_stats: InferStatistics = msgspec.field(default_factory=InferStatistics)
    batch_stats: list[InferBatchStatistics] = msgspec.field(default_factory=list)
    memory_usage: list[dict[str, Any]] = msgspec.field(default_factory=list)


class ModelStatisticsResponse(msgspec.Struct, kw_only=True):
    """The statistics extension's answer: one entry per model version."""

    model_stats: list[ModelStatistics] = msgspec.field(default_factory=list)


@dataclass
class _Sum:
    count: int = 0
    ns: int = 0

    def add(self, ns: int) -> None:
        self.count += 1
        self.ns += ns

    def struct(self) -> StatisticDuration:
        return StatisticDuration(count=self.count, ns=self.ns)


@dataclass
class _Model:
    last_inference_ms: int = 0
    inference_count: int = 0
    execution_count: int = 0
    success: _Sum = field(default_factory=_Sum)
    fail: _Sum = field(default_factory=_Sum)
    queue: _Sum = field(default_factory=_Sum)
    compute: _Sum = field(default_factory=_Sum)
    batches: dict[int, _Sum] = field(default_factory=dict)

    def struct(self, name: str, version: str) -> ModelStatistics:
        count = self.success.count
        phases = InferStatistics(
            success=self.success.struct(),
            fail=self.fail.struct(),
            queue=self.queue.struct(),
            compute_input=StatisticDuration(count=count),
            compute_infer=self.compute.struct(),
            compute_output=StatisticDuration(count=count),
        )
        batches = [
            InferBatchStatistics(
                batch_size=size,
                compute_input=StatisticDuration(count=total.count),
                compute_infer=total.struct(),
                compute_output=StatisticDuration(count=total.count),
            )
            for size, total in sorted(self.batches.items())
        ]
        return ModelStatistics(
            name=name,
            version=version,
            last_inference=self.last_inference_ms,
            inference_count=self.inference_count,
            execution_count=self.execution_count,
            inference_stats=phases,
            batch_stats=batches,
        )


class Statistics:
    """Per-model-version statistics from ``InferenceFinished`` and ``BatchFinished`` events;
    add it as a listener.

    ``clock`` gives the wall-clock time in seconds for ``last_inference``.
    """

    def __init__(self, clock: Callable[[], float] = time.time) -> None:
        self._clock = clock
        self._models: dict[tuple[str, str], _Model] = {}

    def __call__(self, event: Event) -> None:
        if type(event) is BatchFinished:
            if event.ok:
                self._executed(self._model(event.model, event.version), event.rows, event.compute_s)
            return
        if type(event) is not InferenceFinished or not event.found:
            return
        model = self._model(event.model, event.version)
        model.last_inference_ms = int(self._clock() * 1000)
        total_ns = _ns(event.duration_s)
        if not event.ok:
            model.fail.add(total_ns)
            return
        compute_ns = _ns(event.compute_s)
        model.success.add(total_ns)
        model.queue.add(max(total_ns - compute_ns, 0))
        model.compute.add(compute_ns)
        model.inference_count += event.batch_size
        if not event.batched:  # a batch's execution is its own BatchFinished
            self._executed(model, event.batch_size, event.compute_s)

    def _model(self, name: str, version: str) -> _Model:
        model = self._models.get((name, version))
        if model is None:
            model = self._models[name, version] = _Model()
        return model

    @staticmethod
    def _executed(model: _Model, batch_size: int, compute_s: float) -> None:
        model.execution_count += 1
        batch = model.batches.get(batch_size)
        if batch is None:
            batch = model.batches[batch_size] = _Sum()
        batch.add(_ns(compute_s))

    def report(
        self,
        index: Iterable[RepositoryIndexResponseItem],
        name: str | None = None,
        version: str | None = None,
    ) -> ModelStatisticsResponse:
        """Statistics of the model versions in ``index`` (the server's repository index).

        Without a name: every READY version. With a name: every version of that model (or the
        one asked for), whatever its state; raises ModelNotFound for an unknown one.
        """
        items = list(index)
        if name is None:
            selected = [item for item in items if item.state == "READY"]
        else:
            selected = [item for item in items if item.name == name]
            if not selected:
                raise ModelNotFound(f"Model '{name}' not found", model=name, version=version)
            if version:
                selected = [item for item in selected if item.version == version]
                if not selected:
                    raise ModelNotFound(
                        f"Model '{name}' with version '{version}' not found",
                        model=name,
                        version=version,
                    )
        stats = [
            self._models.get((item.name, item.version), _Model()).struct(item.name, item.version)
            for item in selected
        ]
        return ModelStatisticsResponse(model_stats=stats)


def _ns(seconds: float) -> int:
    return max(round(seconds * 1e9), 0)

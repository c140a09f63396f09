"""Custom model metrics recorded in a worker, carried to the main process's ``/metrics``.

A model in a worker records into its own ``self.metrics`` as it would in-process. Before each
message it sends back, the worker compares its metrics with what it last sent
(:class:`MetricsDiff`, through the public ``families()`` / ``snapshot()``) and sends only the
changes; the main process adds them into the :class:`~inferkit.metrics.ModelMetrics` of the
``ParallelModel``, which the server exports. Because the changes travel ahead of the answer on
the same channel, a client that got its response and then scrapes sees what the call recorded.

Across workers, counters and histograms add up; a gauge shows the value last set by any worker.
"""

from __future__ import annotations

import itertools
import logging
from typing import Any

import msgspec

from ..metrics import Family, HistogramSample, ModelMetrics

__all__ = ["MetricChange", "MetricsDiff", "apply_changes"]

log = logging.getLogger("inferkit.parallel")


class MetricChange(msgspec.Struct, array_like=True, gc=False):
    """What one series of a custom metric did since the last message of the worker."""

    kind: str
    name: str
    documentation: str
    #: Declared labels and their values, without the implicit ``model`` and ``version``.
    labelnames: list[str]
    labels: list[str]
    buckets: list[float] = msgspec.field(default_factory=list)
    #: Counter increase, or gauge value.
    value: float = 0.0
    #: Histogram: new observations per bucket (the last is over every bound), and their sum.
    counts: list[int] = msgspec.field(default_factory=list)
    total: float = 0.0


class MetricsDiff:
    """The changes of a model's metrics since the last call (in the worker)."""

    def __init__(self, metrics: ModelMetrics) -> None:
        self._metrics = metrics
        self._sent: dict[tuple[str, tuple[str, ...]], float | HistogramSample] = {}

    def changes(self) -> list[MetricChange]:
        """Every series that changed, with its change; remembers them as sent."""
        changes = []
        for family in self._metrics.families():
            snapshot = family.snapshot()
            for key, value in snapshot.samples:
                previous = self._sent.get((snapshot.name, key))
                if previous == value:
                    continue
                self._sent[snapshot.name, key] = value
                change = MetricChange(
                    kind=snapshot.kind,
                    name=snapshot.name,
                    documentation=snapshot.documentation,
                    labelnames=list(snapshot.labelnames[2:]),
                    labels=list(key[2:]),
                    buckets=list(snapshot.buckets),
                )
                if isinstance(value, HistogramSample):
                    _histogram_change(change, value, previous)
                elif snapshot.kind == "counter":
                    change.value = value - (previous if isinstance(previous, float) else 0.0)
                else:
                    change.value = value
                changes.append(change)
        return changes


def _histogram_change(change: MetricChange, now: HistogramSample, before: Any) -> None:
    then = before.cumulative if isinstance(before, HistogramSample) else (0,) * len(now.cumulative)
    added = [a - b for a, b in zip(now.cumulative, then, strict=True)]
    change.counts = [added[0], *(b - a for a, b in itertools.pairwise(added))]
    change.total = now.sum - (before.sum if isinstance(before, HistogramSample) else 0.0)


def apply_changes(metrics: ModelMetrics, changes: list[MetricChange]) -> None:
    """Add a worker's changes into the main process's metrics of the model."""
    for change in changes:
        try:
            family = _family(metrics, change)
        except ValueError as exc:  # e.g. another model exports the name with other labels
            log.warning("Dropping metric '%s' from a worker: %s", change.name, exc)
            continue
        key = (metrics.model, metrics.version, *change.labels)
        if change.kind == "counter":
            family.add(key, change.value)
        elif change.kind == "gauge":
            family.set(key, change.value)
        else:
            family.merge(key, change.counts, change.total)


def _family(metrics: ModelMetrics, change: MetricChange) -> Family:
    if change.kind == "counter":
        metrics.counter(change.name, change.documentation, change.labelnames)
    elif change.kind == "gauge":
        metrics.gauge(change.name, change.documentation, change.labelnames)
    else:
        metrics.histogram(change.name, change.documentation, change.labelnames, change.buckets)
    return next(f for f in metrics.families() if f.name == change.name and f.kind == change.kind)

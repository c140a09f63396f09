"""Metrics recorded by model code and transports: counters, gauges and histograms, no library.

The core imports no metrics framework, so it keeps its own tiny store: a :class:`MetricStore`
belongs to a ``Server`` (``server.metrics``) and :mod:`inferkit.transports.metrics` exports it
through a prometheus-client collector at scrape time. Nothing here is global, so two servers in
one process never mix their metrics.

Two ways in:

- **Model code** uses ``self.metrics`` (a :class:`ModelMetrics`), whose metrics carry the labels
  ``model`` and ``version`` automatically::

      async def load(self) -> bool:
          self.hits = self.metrics.counter("cache_hits", "Cache hits", ["cache"])
          return True

      async def predict(self, payload):
          self.hits.labels("features").inc()

- **Transports** record their requests with :class:`RequestMetrics` (count, latency and the
  in-flight gauge), e.g. the gRPC service around each call.

Values may be recorded from any thread (a model may predict in a thread pool): each metric
family guards its values with a lock.
"""

from __future__ import annotations

import bisect
import itertools
import math
import re
import threading
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Literal, NamedTuple, TypeVar

__all__ = [
    "DEFAULT_BUCKETS",
    "PROMETHEUS_BUCKETS",
    "Counter",
    "Gauge",
    "Histogram",
    "HistogramSample",
    "MLServerGrpcMethod",
    "MLServerGrpcMetrics",
    "MetricSnapshot",
    "MetricStore",
    "ModelMetrics",
    "RequestMetrics",
]

Kind = Literal["counter", "gauge", "histogram"]
LabelValues = tuple[str, ...]

#: Seconds; finer than prometheus-client's defaults at the low end, where fast models answer.
DEFAULT_BUCKETS: tuple[float, ...] = (
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
)  # fmt: skip

#: prometheus-client's default buckets, which MLServer's histograms have (starlette-exporter,
#: py-grpc-prometheus, ``mlserver.log``): the MLServer-named histograms keep them, so a
#: dashboard's ``le="0.005"`` still finds its series.
PROMETHEUS_BUCKETS: tuple[float, ...] = (
    0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0,
)  # fmt: skip

#: Names of metrics model code may not use: inferkit's own metrics live under this prefix.
RESERVED_PREFIX = "inferkit_"
#: Labels inferkit adds to every model metric.
MODEL_LABELS = ("model", "version")

_METRIC_NAME = re.compile(r"[a-zA-Z_:][a-zA-Z0-9_:]*\Z")
_LABEL_NAME = re.compile(r"[a-zA-Z_][a-zA-Z0-9_]*\Z")


@dataclass(frozen=True)
class HistogramSample:
    """One histogram series: cumulative counts per bucket (the last is +Inf), sum and count."""

    cumulative: tuple[int, ...]
    sum: float
    count: int


class MetricSnapshot(NamedTuple):
    """One metric family as an exporter sees it: what it is and its current values."""

    kind: Kind
    name: str
    documentation: str
    labelnames: tuple[str, ...]
    #: Upper bounds of a histogram's buckets, without +Inf; empty for other kinds.
    buckets: tuple[float, ...]
    samples: list[tuple[LabelValues, float | HistogramSample]]


class Family:
    """One metric: its name, kind, label names and the values of every label combination."""

    __slots__ = ("_lock", "_values", "buckets", "documentation", "kind", "labelnames", "name")

    def __init__(
        self,
        kind: Kind,
        name: str,
        documentation: str,
        labelnames: tuple[str, ...],
        buckets: tuple[float, ...] = (),
    ) -> None:
        self.kind = kind
        self.name = name
        self.documentation = documentation
        self.labelnames = labelnames
        self.buckets = buckets
        self._lock = threading.Lock()
        # counter/gauge: float; histogram: [count per bucket..., count over the last bound, sum]
        self._values: dict[LabelValues, float | list[float]] = {}

    def share(self, other: Family) -> None:
        """Record into ``other``'s values from now on (a reloaded model's metrics continue)."""
        self._values, self._lock = other._values, other._lock

    def shape(self) -> tuple[Kind, tuple[str, ...], tuple[float, ...]]:
        """What must agree between two families exported under one name."""
        return self.kind, self.labelnames, self.buckets

    def add(self, key: LabelValues, amount: float) -> None:
        with self._lock:
            value = self._values.get(key, 0.0)
            assert isinstance(value, float)
            self._values[key] = value + amount

    def set(self, key: LabelValues, value: float) -> None:
        with self._lock:
            self._values[key] = float(value)

    def observe(self, key: LabelValues, value: float) -> None:
        index = bisect.bisect_left(self.buckets, value)  # bounds are inclusive (le)
        with self._lock:
            counts = self._histogram(key)
            counts[index] += 1
            counts[-1] += value

    def merge(self, key: LabelValues, counts: Sequence[float], total: float) -> None:
        """Add observations already sorted into buckets (non-cumulative counts, one per
        bucket plus the one over the last bound) and their sum, e.g. from a worker process."""
        with self._lock:
            values = self._histogram(key)
            for i, count in enumerate(counts):
                values[i] += count
            values[-1] += total

    def _histogram(self, key: LabelValues) -> list[float]:
        # Layout: [count per bucket..., count over the last bound, sum]. Caller holds the lock.
        values = self._values.get(key)
        if not isinstance(values, list):
            values = self._values[key] = [0.0] * (len(self.buckets) + 2)
        return values

    def snapshot(self) -> MetricSnapshot:
        """The family's current values (histograms made cumulative)."""
        with self._lock:
            items = [(k, v if isinstance(v, float) else list(v)) for k, v in self._values.items()]
        samples: list[tuple[LabelValues, float | HistogramSample]] = []
        for key, value in items:
            if isinstance(value, float):
                samples.append((key, value))
            else:
                *counts, total = value
                cumulative = tuple(int(c) for c in _running_sum(counts))
                samples.append((key, HistogramSample(cumulative, total, cumulative[-1])))
        return MetricSnapshot(
            self.kind, self.name, self.documentation, self.labelnames, self.buckets, samples
        )


def _running_sum(values: Iterable[float]) -> list[float]:
    total = 0.0
    out = []
    for value in values:
        total += value
        out.append(total)
    return out


_I = TypeVar("_I", bound="_Instrument")


class _Instrument:
    """A metric family bound to some (eventually all) of its label values."""

    __slots__ = ("_family", "_key")

    def __init__(self, family: Family, key: LabelValues = ()) -> None:
        self._family = family
        self._key = key

    @property
    def name(self) -> str:
        """The metric's name."""
        return self._family.name

    def labels(self: _I, *values: str, **named: str) -> _I:
        """The metric with its (remaining) labels set, by position or by name."""
        remaining = self._family.labelnames[len(self._key) :]
        if named:
            if values or set(named) != set(remaining):
                raise ValueError(
                    f"Metric '{self.name}' expects labels {list(remaining)}, got {sorted(named)}"
                )
            values = tuple(named[label] for label in remaining)
        if len(values) != len(remaining):
            raise ValueError(
                f"Metric '{self.name}' expects {len(remaining)} label values "
                f"{list(remaining)}, got {len(values)}"
            )
        return type(self)(self._family, (*self._key, *(str(v) for v in values)))

    def _full_key(self) -> LabelValues:
        if len(self._key) != len(self._family.labelnames):
            missing = list(self._family.labelnames[len(self._key) :])
            raise ValueError(f"Metric '{self.name}' needs .labels(...) for {missing} first")
        return self._key


class Counter(_Instrument):
    """A value that only goes up (exported with the ``_total`` suffix)."""

    __slots__ = ()

    def inc(self, amount: float = 1.0) -> None:
        """Add ``amount`` (>= 0)."""
        if amount < 0:
            raise ValueError(f"Counter '{self.name}' can only increase, got {amount}")
        self._family.add(self._full_key(), float(amount))


class Gauge(_Instrument):
    """A value that goes up and down."""

    __slots__ = ()

    def inc(self, amount: float = 1.0) -> None:
        """Add ``amount``."""
        self._family.add(self._full_key(), float(amount))

    def dec(self, amount: float = 1.0) -> None:
        """Subtract ``amount``."""
        self._family.add(self._full_key(), -float(amount))

    def set(self, value: float) -> None:
        """Set the value."""
        self._family.set(self._full_key(), value)


class Histogram(_Instrument):
    """Observations counted in buckets, with their sum and count."""

    __slots__ = ()

    def observe(self, value: float) -> None:
        """Count one observation."""
        self._family.observe(self._full_key(), float(value))


class _Families:
    """Families by name, created on first use and checked on every later one."""

    def __init__(self) -> None:
        self._families: dict[str, Family] = {}
        # Re-entrant: a store checks its own families while creating one.
        self._lock = threading.RLock()

    def families(self) -> list[Family]:
        """Every family, in creation order."""
        with self._lock:
            return list(self._families.values())

    def _family(
        self,
        kind: Kind,
        name: str,
        documentation: str,
        labelnames: Sequence[str],
        buckets: Sequence[float] = (),
    ) -> Family:
        labels = (*self._implicit_labels(), *_check_labels(name, kind, labelnames))
        bounds = _check_buckets(name, buckets) if kind == "histogram" else ()
        family = Family(kind, _check_name(name, kind), documentation, labels, bounds)
        with self._lock:
            existing = self._families.get(_key(family.name, kind))
            if existing is not None:
                _check_same(existing, family)
                return existing
            self._check_elsewhere(family)
            self._families[_key(family.name, kind)] = family
            return family

    def _implicit_labels(self) -> tuple[str, ...]:
        return ()

    def _check_elsewhere(self, family: Family) -> None:
        """Raise ValueError if another owner exports ``family.name`` with another shape."""


class ModelMetrics(_Families):
    """The custom metrics of one model version (``Model.metrics``).

    Every metric carries the labels ``model`` and ``version`` (the version is "" for an
    unversioned model, never "None") before the labels you declare. Create metrics in ``load``
    (or ``__init__``) and record in ``predict``; asking again for a metric of the same name
    returns the same one, and asking with another kind or other labels raises ValueError.
    """

    def __init__(self, model: str = "", version: str = "") -> None:
        super().__init__()
        self.model = model
        self.version = version
        self._store: MetricStore | None = None

    def counter(
        self, name: str, documentation: str = "", labelnames: Sequence[str] = ()
    ) -> Counter:
        """A counter (``name`` is exported as ``name_total``)."""
        return Counter(self._family("counter", name, documentation, labelnames), self._bound())

    def gauge(self, name: str, documentation: str = "", labelnames: Sequence[str] = ()) -> Gauge:
        """A gauge."""
        return Gauge(self._family("gauge", name, documentation, labelnames), self._bound())

    def histogram(
        self,
        name: str,
        documentation: str = "",
        labelnames: Sequence[str] = (),
        buckets: Sequence[float] = DEFAULT_BUCKETS,
    ) -> Histogram:
        """A histogram with the given bucket upper bounds (+Inf is always added)."""
        family = self._family("histogram", name, documentation, labelnames, buckets)
        return Histogram(family, self._bound())

    def log(self, **values: float) -> None:
        """Observe each value in a histogram of that name (MLServer's ``mlserver.log``)."""
        for name, value in values.items():
            self.histogram(name).observe(value)

    def _bound(self) -> LabelValues:
        return self.model, self.version

    def _implicit_labels(self) -> tuple[str, ...]:
        return MODEL_LABELS

    def _check_elsewhere(self, family: Family) -> None:
        if family.name.startswith(RESERVED_PREFIX):
            raise ValueError(
                f"Metric names starting with '{RESERVED_PREFIX}' are reserved for inferkit, "
                f"got '{family.name}'"
            )
        if self._store is not None:
            self._store._check(family, self)


class MetricStore(_Families):
    """Every metric of one server: its own (transports) and those of its models.

    A server holds one (``server.metrics``); exporters call :meth:`collect`. Model metrics of
    several models under one name are exported as one family told apart by the ``model`` and
    ``version`` labels, so they must agree on kind, labels and buckets.
    """

    def __init__(self) -> None:
        super().__init__()
        self._models: dict[tuple[str, str], ModelMetrics] = {}

    def counter(
        self, name: str, documentation: str = "", labelnames: Sequence[str] = ()
    ) -> Counter:
        """A server-level counter (no model labels)."""
        return Counter(self._family("counter", name, documentation, labelnames))

    def gauge(self, name: str, documentation: str = "", labelnames: Sequence[str] = ()) -> Gauge:
        """A server-level gauge."""
        return Gauge(self._family("gauge", name, documentation, labelnames))

    def histogram(
        self,
        name: str,
        documentation: str = "",
        labelnames: Sequence[str] = (),
        buckets: Sequence[float] = DEFAULT_BUCKETS,
    ) -> Histogram:
        """A server-level histogram."""
        return Histogram(self._family("histogram", name, documentation, labelnames, buckets))

    def attach(self, metrics: ModelMetrics) -> None:
        """Export a model's metrics (``Model.metrics``); the server calls it as it adds a model.

        A later instance of the same model version (a reload) records into the same values,
        so counters continue rather than restart, and a reload that fails loses nothing.
        """
        families = metrics.families()
        with self._lock:
            current = self._models.get((metrics.model, metrics.version))
            if current is None or current is metrics:
                for family in families:
                    self._check(family, metrics)
                self._models[metrics.model, metrics.version] = metrics
            else:
                for family in families:
                    key = _key(family.name, family.kind)
                    existing = current._families.get(key)
                    if existing is None:
                        self._check(family, current)
                        current._families[key] = family
                    else:
                        _check_same(existing, family)
                        family.share(existing)
                metrics._families, metrics._lock = current._families, current._lock
            metrics._store = self

    def collect(self) -> list[MetricSnapshot]:
        """Every family with its values; model families of one name are merged."""
        with self._lock:
            owners: list[_Families] = [self, *self._models.values()]
        merged: dict[str, MetricSnapshot] = {}
        for owner in owners:
            for family in owner.families():
                snapshot = family.snapshot()
                key = _key(family.name, family.kind)
                if key in merged:
                    merged[key].samples.extend(snapshot.samples)
                else:
                    merged[key] = snapshot
        return list(merged.values())

    def _check(self, family: Family, owner: _Families) -> None:
        with self._lock:
            others: list[_Families] = [self, *self._models.values()]
        key = _key(family.name, family.kind)
        for other in others:
            if other is owner:
                continue
            existing = other._families.get(key)
            if existing is not None:
                _check_same(existing, family)

    def _check_elsewhere(self, family: Family) -> None:
        self._check(family, self)


class RequestMetrics:
    """Requests of one transport: a counter, a latency histogram and the in-flight gauge.

    Exported as ``inferkit_{transport}_requests_total`` and
    ``inferkit_{transport}_request_duration_seconds`` with ``labelnames``, and
    ``inferkit_requests_in_flight{transport=...}``. Use it around each request::

        requests = RequestMetrics(server.metrics, "grpc", ("method", "code"))
        started = requests.started()
        try:
            ...
        finally:
            requests.finished(started, "ModelInfer", "OK")
    """

    def __init__(self, store: MetricStore, transport: str, labelnames: Sequence[str]) -> None:
        labels = tuple(labelnames)
        # The families themselves: the label values come from transport code, so the checks
        # (and the two objects) of ``labels()`` are not paid on every request.
        self._requests = store.counter(
            f"inferkit_{transport}_requests_total", f"{transport} requests answered", labels
        )._family
        self._duration = store.histogram(
            f"inferkit_{transport}_request_duration_seconds",
            f"Seconds from a {transport} request to its answer",
            labels,
        )._family
        in_flight = store.gauge(
            "inferkit_requests_in_flight", "Requests being answered now", ("transport",)
        )
        self._in_flight = in_flight.labels(transport)

    def started(self) -> float:
        """Count a request in flight; returns its start time for :meth:`finished`."""
        self._in_flight.inc()
        return time.perf_counter()

    def finished(self, started: float, *labelvalues: str) -> None:
        """Count a request that :meth:`started` at ``started`` as answered."""
        self._in_flight.dec()
        self._requests.add(labelvalues, 1.0)
        self._duration.observe(labelvalues, time.perf_counter() - started)


class MLServerGrpcMetrics:
    """gRPC calls under the names MLServer exports them by (py-grpc-prometheus's).

    ``grpc_server_started_total`` and ``grpc_server_handled_total`` (with ``grpc_code``)
    count calls, ``grpc_server_handling_seconds`` times them, all labelled ``grpc_type``
    (UNARY, SERVER_STREAMING, CLIENT_STREAMING, BIDI_STREAMING), ``grpc_service`` and
    ``grpc_method``. As in py-grpc-prometheus, a call with a client stream is not counted as
    started and one with a server stream is neither counted as handled nor timed (the library
    counts their messages instead, which inferkit does not export). MLServer leaves the
    histogram off (py-grpc-prometheus's ``enable_handling_time_histogram``); it is exported
    here since it costs one observation per call. One :meth:`method` per RPC, made once::

        call = metrics.method("/inference.GRPCInferenceService/ModelInfer", False, False)
        started = time.perf_counter()
        call.started()
        ...
        call.finished(started, "OK")
    """

    def __init__(self, store: MetricStore) -> None:
        labels = ("grpc_type", "grpc_service", "grpc_method")
        self.started = store.counter(
            "grpc_server_started_total", "Total number of RPCs started on the server.", labels
        )._family
        self.handled = store.counter(
            "grpc_server_handled_total",
            "Total number of RPCs completed on the server, regardless of success or failure.",
            (*labels, "grpc_code"),
        )._family
        self.handling = store.histogram(
            "grpc_server_handling_seconds",
            "Histogram of response latency (seconds) of gRPC that had been application-level "
            "handled by the server.",
            labels,
            PROMETHEUS_BUCKETS,
        )._family

    def method(
        self, path: str, client_streaming: bool, server_streaming: bool
    ) -> MLServerGrpcMethod:
        """The metrics of the RPC at ``path`` (``/package.Service/Method``)."""
        _, service, method = [*path.split("/"), "", ""][:3]
        kind = _GRPC_TYPES[client_streaming, server_streaming]
        return MLServerGrpcMethod(self, (kind, service, method), client_streaming, server_streaming)


_GRPC_TYPES = {
    (False, False): "UNARY",
    (False, True): "SERVER_STREAMING",
    (True, False): "CLIENT_STREAMING",
    (True, True): "BIDI_STREAMING",
}


class MLServerGrpcMethod:
    """One RPC's :class:`MLServerGrpcMetrics`, its label values bound."""

    __slots__ = ("_handled", "_handling", "_key", "_started")

    def __init__(
        self,
        metrics: MLServerGrpcMetrics,
        key: LabelValues,
        client_streaming: bool,
        server_streaming: bool,
    ) -> None:
        self._key = key
        self._started = None if client_streaming else metrics.started
        self._handled = None if server_streaming else metrics.handled
        self._handling = None if server_streaming else metrics.handling

    def started(self) -> None:
        """Count a call started."""
        if self._started is not None:
            self._started.add(self._key, 1.0)

    def finished(self, started: float, code: str) -> None:
        """Count a call begun at ``started`` (``time.perf_counter()``) as handled with ``code``."""
        if self._handled is not None and self._handling is not None:
            self._handled.add((*self._key, code), 1.0)
            self._handling.observe(self._key, time.perf_counter() - started)


def _key(name: str, kind: Kind) -> str:
    # A counter "x" and "x_total" are the same exported family.
    return name[: -len("_total")] if kind == "counter" and name.endswith("_total") else name


def _check_name(name: str, kind: Kind) -> str:
    if not _METRIC_NAME.match(name):
        raise ValueError(f"Invalid metric name {name!r}: expected [a-zA-Z_:][a-zA-Z0-9_:]*")
    return _key(name, kind)


def _check_labels(name: str, kind: Kind, labelnames: Sequence[str]) -> tuple[str, ...]:
    if isinstance(labelnames, str):
        raise ValueError(f"Metric '{name}': labelnames must be a sequence of names, not a str")
    labels = tuple(labelnames)
    for label in labels:
        if not _LABEL_NAME.match(label) or label.startswith("__"):
            raise ValueError(f"Metric '{name}': invalid label name {label!r}")
        if label in MODEL_LABELS or (kind == "histogram" and label == "le"):
            raise ValueError(f"Metric '{name}': label name {label!r} is reserved")
    if len(set(labels)) != len(labels):
        raise ValueError(f"Metric '{name}': duplicate label names in {list(labels)}")
    return labels


def _check_buckets(name: str, buckets: Sequence[float]) -> tuple[float, ...]:
    bounds = tuple(float(b) for b in buckets)
    if bounds and math.isinf(bounds[-1]):
        bounds = bounds[:-1]  # +Inf is always there
    if (
        not bounds
        or any(a >= b for a, b in itertools.pairwise(bounds))
        or any(map(math.isnan, bounds))
    ):
        raise ValueError(
            f"Histogram '{name}': buckets must be increasing numbers, got {list(buckets)}"
        )
    return bounds


def _check_same(existing: Family, family: Family) -> None:
    if existing.shape() != family.shape():
        raise ValueError(
            f"Metric '{family.name}' is already a {existing.kind} with labels "
            f"{list(existing.labelnames)}; cannot also be a {family.kind} with labels "
            f"{list(family.labelnames)}"
            + (" and other buckets" if existing.kind == family.kind == "histogram" else "")
        )

"""The core metric store (``inferkit.metrics``): values, labels, checks, model facades."""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

import pytest

from inferkit.metrics import (
    Family,
    HistogramSample,
    MetricSnapshot,
    MetricStore,
    ModelMetrics,
    RequestMetrics,
)


def values(store: MetricStore) -> dict[tuple[str, tuple[str, ...]], Any]:
    """``{(family name, label values): value}`` of everything in a store."""
    return {
        (snapshot.name, key): value
        for snapshot in store.collect()
        for key, value in snapshot.samples
    }


def by_name(store: MetricStore) -> dict[str, MetricSnapshot]:
    return {snapshot.name: snapshot for snapshot in store.collect()}


def test_counter_gauge_histogram_values() -> None:
    store = MetricStore()
    store.counter("hits_total", "Hits", ["kind"]).labels("a").inc()
    store.counter("hits", "Hits", ["kind"]).labels(kind="a").inc(2.5)  # the same family
    gauge = store.gauge("temperature")
    gauge.set(10)
    gauge.inc(2)
    gauge.dec(5)
    histogram = store.histogram("latency_seconds", buckets=[0.1, 1.0])
    for value in (0.05, 0.1, 0.5, 3.0):
        histogram.observe(value)
    assert values(store) == {
        ("hits", ("a",)): 3.5,
        ("temperature", ()): 7.0,
        # le is inclusive: 0.1 falls in the first bucket
        ("latency_seconds", ()): HistogramSample((2, 3, 4), 3.65, 4),
    }
    snapshots = by_name(store)
    assert snapshots["hits"].kind == "counter" and snapshots["hits"].documentation == "Hits"
    assert snapshots["latency_seconds"].buckets == (0.1, 1.0)


def test_model_metrics_carry_model_and_version_labels() -> None:
    store = MetricStore()
    unversioned, versioned = ModelMetrics("iris"), ModelMetrics("iris", "v2")
    store.attach(unversioned)
    store.attach(versioned)
    unversioned.counter("predictions", labelnames=["label"]).labels("setosa").inc()
    versioned.counter("predictions", labelnames=["label"]).labels("setosa").inc(3)
    versioned.log(confidence=0.7)  # MLServer's mlserver.log: a histogram on the fly
    snapshots = by_name(store)
    assert snapshots["predictions"].labelnames == ("model", "version", "label")
    assert snapshots["predictions"].samples == [
        (("iris", "", "setosa"), 1.0),
        (("iris", "v2", "setosa"), 3.0),
    ]
    confidence = snapshots["confidence"].samples
    assert [(key, sample.count) for key, sample in confidence] == [(("iris", "v2"), 1)]  # type: ignore[union-attr]


def test_a_reloaded_model_keeps_counting_into_the_same_values() -> None:
    store = MetricStore()
    first = ModelMetrics("m")
    early = first.counter("calls")  # created before the server attached it, as in __init__
    store.attach(first)
    early.inc()
    second = ModelMetrics("m")  # the instance a reload builds
    again = second.counter("calls")
    store.attach(second)
    again.inc()
    early.inc()  # the old instance still serves until the swap
    second.gauge("warm").set(1)
    assert values(store) == {("calls", ("m", "")): 3.0, ("warm", ("m", "")): 1.0}


def test_metrics_are_not_exported_until_attached_and_stores_do_not_mix() -> None:
    one, two = MetricStore(), MetricStore()
    metrics = ModelMetrics("m")
    metrics.counter("calls").inc()
    assert values(one) == {}
    one.attach(metrics)
    two.counter("calls").inc(5)
    assert values(one) == {("calls", ("m", "")): 1.0}
    assert values(two) == {("calls", ()): 5.0}


def test_thread_safe_increments() -> None:
    store = MetricStore()
    counter = store.counter("n")
    histogram = store.histogram("h", buckets=[1.0])

    def work() -> None:
        for _ in range(2000):
            counter.inc()
            histogram.observe(0.5)

    threads = [threading.Thread(target=work) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert values(store)[("n", ())] == 16000.0
    assert values(store)[("h", ())] == HistogramSample((16000, 16000), 8000.0, 16000)


def test_request_metrics_count_latency_and_in_flight() -> None:
    store = MetricStore()
    requests = RequestMetrics(store, "grpc", ("method", "code"))
    first = requests.started()
    second = requests.started()
    assert values(store)[("inferkit_requests_in_flight", ("grpc",))] == 2.0
    requests.finished(first, "ModelInfer", "OK")
    requests.finished(second, "ModelInfer", "NOT_FOUND")
    got = values(store)
    assert got[("inferkit_requests_in_flight", ("grpc",))] == 0.0
    assert got[("inferkit_grpc_requests", ("ModelInfer", "OK"))] == 1.0
    assert got[("inferkit_grpc_requests", ("ModelInfer", "NOT_FOUND"))] == 1.0
    latency = got[("inferkit_grpc_request_duration_seconds", ("ModelInfer", "OK"))]
    assert isinstance(latency, HistogramSample) and latency.count == 1
    # A second transport shares the in-flight gauge, told apart by its label.
    RequestMetrics(store, "rest", ("route", "method", "status")).started()
    assert values(store)[("inferkit_requests_in_flight", ("rest",))] == 1.0


def _attached(name: str) -> Callable[[], ModelMetrics]:
    def make() -> ModelMetrics:
        store = MetricStore()
        other = ModelMetrics("other")
        other.counter("taken", labelnames=["a"])
        store.attach(other)
        metrics = ModelMetrics(name)
        store.attach(metrics)
        return metrics

    return make


MISUSES: list[tuple[str, Callable[[ModelMetrics], object], str]] = [
    (
        "bad name",
        lambda m: m.counter("1abc"),
        "Invalid metric name '1abc': expected [a-zA-Z_:][a-zA-Z0-9_:]*",
    ),
    (
        "reserved prefix",
        lambda m: m.gauge("inferkit_x"),
        "Metric names starting with 'inferkit_' are reserved for inferkit, got 'inferkit_x'",
    ),
    (
        "model label",
        lambda m: m.counter("c", labelnames=["model"]),
        "Metric 'c': label name 'model' is reserved",
    ),
    (
        "le label",
        lambda m: m.histogram("h", labelnames=["le"]),
        "Metric 'h': label name 'le' is reserved",
    ),
    (
        "bad label",
        lambda m: m.counter("c", labelnames=["a-b"]),
        "Metric 'c': invalid label name 'a-b'",
    ),
    (
        "dunder label",
        lambda m: m.counter("c", labelnames=["__a"]),
        "Metric 'c': invalid label name '__a'",
    ),
    (
        "duplicate label",
        lambda m: m.counter("c", labelnames=["a", "a"]),
        "Metric 'c': duplicate label names in ['a', 'a']",
    ),
    (
        "labels as str",
        lambda m: m.counter("c", labelnames="ab"),
        "Metric 'c': labelnames must be a sequence of names, not a str",
    ),
    (
        "bad buckets",
        lambda m: m.histogram("h", buckets=[1, 0.5]),
        "Histogram 'h': buckets must be increasing numbers, got [1, 0.5]",
    ),
    (
        "no buckets",
        lambda m: m.histogram("h", buckets=[float("inf")]),
        "Histogram 'h': buckets must be increasing numbers, got [inf]",
    ),
    ("negative inc", lambda m: m.counter("c").inc(-1), "Counter 'c' can only increase, got -1"),
    (
        "labels missing",
        lambda m: m.counter("c", labelnames=["a"]).inc(),
        "Metric 'c' needs .labels(...) for ['a'] first",
    ),
    (
        "too many labels",
        lambda m: m.counter("c").labels("x"),
        "Metric 'c' expects 0 label values [], got 1",
    ),
    (
        "wrong label names",
        lambda m: m.counter("c", labelnames=["a"]).labels(b="1"),
        "Metric 'c' expects labels ['a'], got ['b']",
    ),
    (
        "kind clash",
        lambda m: (m.counter("c"), m.gauge("c")),
        "Metric 'c' is already a counter with labels ['model', 'version']; "
        "cannot also be a gauge with labels ['model', 'version']",
    ),
    (
        "clash with another model",
        lambda m: m.gauge("taken"),
        "Metric 'taken' is already a counter with labels ['model', 'version', 'a']; "
        "cannot also be a gauge with labels ['model', 'version']",
    ),
    (
        "bucket clash",
        lambda m: (m.histogram("h", buckets=[1]), m.histogram("h", buckets=[2])),
        "Metric 'h' is already a histogram with labels ['model', 'version']; "
        "cannot also be a histogram with labels ['model', 'version'] and other buckets",
    ),
]


@pytest.mark.parametrize(
    ("misuse", "expected"), [(m[1], m[2]) for m in MISUSES], ids=[m[0] for m in MISUSES]
)
def test_misuse_is_a_value_error_that_says_what_is_wrong(
    misuse: Callable[[ModelMetrics], object], expected: str
) -> None:
    with pytest.raises(ValueError) as info:
        misuse(_attached("m")())
    assert str(info.value) == expected


def test_attaching_a_model_whose_metrics_clash_fails() -> None:
    store = MetricStore()
    one, two = ModelMetrics("one"), ModelMetrics("two")
    one.counter("shared")
    two.gauge("shared")
    store.attach(one)
    with pytest.raises(ValueError, match="Metric 'shared' is already a counter"):
        store.attach(two)
    assert [s.name for s in store.collect()] == ["shared"]


def test_merging_pre_bucketed_observations_adds_to_what_was_observed() -> None:
    family = Family("histogram", "latency_seconds", "", ("model",), (0.1, 1.0))
    family.observe(("m",), 0.05)
    family.merge(("m",), [1, 2, 3], 7.5)  # per bucket: <= 0.1, <= 1.0, over 1.0
    [(key, sample)] = family.snapshot().samples
    assert key == ("m",)
    assert isinstance(sample, HistogramSample)
    assert (sample.cumulative, sample.count) == ((2, 4, 7), 7)
    assert sample.sum == pytest.approx(7.55)

"""Prometheus metrics: ``create_metrics_app(server)`` serves ``/metrics`` from its own registry.

The app owns a prometheus-client ``CollectorRegistry`` (never the global one), so two servers in
one process, or two tests, never see each other's numbers and need no cleanup. It is fed by:

- the core's events (``server.add_listener``): inference requests, latency, compute time,
  and a batching model's batch sizes and queue time;
- the server's metric store (``server.metrics``, read at scrape time): the transports' request
  metrics (recorded by :func:`instrument_rest_app` and the gRPC service) and the custom metrics
  of model code;
- the repository index at scrape time: models by state;
- prometheus-client's process collector: CPU, memory, file descriptors.

:func:`metrics_service` serves the app on ``metrics_port`` for the runner; to serve it on the
HTTP port instead, add its routes to the REST app (``rest_app.routes.extend(app.routes)``).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Iterable
from typing import Any, get_args

from prometheus_client import CollectorRegistry, ProcessCollector
from prometheus_client import Counter as PromCounter
from prometheus_client import Gauge as PromGauge
from prometheus_client import Histogram as PromHistogram
from prometheus_client import Summary as PromSummary
from prometheus_client.exposition import choose_encoder
from prometheus_client.metrics_core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from ..events import BatchFinished, Event, InferenceFinished
from ..metrics import (
    DEFAULT_BUCKETS,
    PROMETHEUS_BUCKETS,
    HistogramSample,
    MetricStore,
    RequestMetrics,
)
from ..server import Server
from ..settings import Settings
from ..types import State

__all__ = ["create_metrics_app", "instrument_rest_app", "metrics_service"]

log = logging.getLogger("inferkit.metrics")

_MODEL = ("model", "version")

#: The status of a REST request whose client disconnected before it was answered (nginx's).
_CLIENT_GONE = 499

# Rows per batch: powers of two up to well past any ``max_batch_size`` seen in practice.
_BATCH_BUCKETS = tuple(float(2**i) for i in range(11))


def create_metrics_app(
    server: Server,
    registry: CollectorRegistry | None = None,
    *,
    settings: Settings | None = None,
) -> Starlette:
    """An ASGI app serving ``server``'s metrics at ``metrics_endpoint`` (default ``/metrics``).

    ``registry`` defaults to a new one owned by the app; pass one to add your own collectors.
    Inference metrics count from the app's creation on. Both the Prometheus text format and
    OpenMetrics (by ``Accept`` header) are served.
    """
    settings = settings if settings is not None else server.settings
    registry = registry if registry is not None else CollectorRegistry()
    inference = _InferenceMetrics(registry)
    server.add_listener(inference)
    if settings.metrics_compat == "mlserver":
        server.add_listener(_MLServerInferenceMetrics(registry))
    registry.register(_StoreCollector(server.metrics))
    models = PromGauge("inferkit_models", "Model versions by state", ["state"], registry=registry)
    ProcessCollector(registry=registry)

    async def scrape(request: Request) -> Response:
        await _count_models(server, models)
        encoder, content_type = choose_encoder(request.headers.get("accept", ""))
        return Response(encoder(registry), headers={"Content-Type": content_type})

    path = settings.metrics_endpoint or "/metrics"
    return Starlette(routes=[Route(path, scrape, methods=["GET"])])


class _InferenceMetrics:
    """Listener turning ``InferenceFinished`` and ``BatchFinished`` events into counters and
    histograms."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.requests = PromCounter(
            "inferkit_inference_requests",
            "Inference requests answered, by error code (OK on success)",
            [*_MODEL, "code"],
            registry=registry,
        )
        self.duration = PromHistogram(
            "inferkit_inference_duration_seconds",
            "Seconds from an inference request to its answer, in the core, successful or not",
            _MODEL,
            buckets=DEFAULT_BUCKETS,
            registry=registry,
        )
        self.compute = PromHistogram(
            "inferkit_inference_compute_duration_seconds",
            "Seconds spent in the model's predict, for successful requests",
            _MODEL,
            buckets=DEFAULT_BUCKETS,
            registry=registry,
        )
        self.stream_responses = PromCounter(
            "inferkit_stream_responses",
            "Responses sent on streams (REST infer_stream, gRPC ModelStreamInfer)",
            _MODEL,
            registry=registry,
        )
        self.batch_rows = PromHistogram(
            "inferkit_batch_size",
            "Rows in each batch a batching model ran (every request of the batch together)",
            _MODEL,
            buckets=_BATCH_BUCKETS,
            registry=registry,
        )
        self.batch_queue = PromHistogram(
            "inferkit_batch_queue_duration_seconds",
            "Seconds a request of a batching model waited for its batch to start",
            _MODEL,
            buckets=DEFAULT_BUCKETS,
            registry=registry,
        )
        # The labelled children of each model version and outcome, looked up once: ``labels()``
        # locks and checks on every call, three times per request. Made on first use only (an
        # "OK" series must not appear for a model that never answered), and bounded by the
        # model versions and error codes seen.
        self._children: dict[tuple[str, str, str], tuple[Any, Any, Any]] = {}

    def __call__(self, event: Event) -> None:
        if type(event) is BatchFinished:
            self.batch_rows.labels(event.model, event.version).observe(event.rows)
            return
        if type(event) is not InferenceFinished or not event.found:
            return
        key = (event.model, event.version, event.code or "OK")
        children = self._children.get(key)
        if children is None:
            labels = key[:2]
            children = self._children[key] = (
                self.requests.labels(*key),
                self.duration.labels(*labels),
                self.compute.labels(*labels) if event.ok else None,
            )
        requests, duration, compute = children
        requests.inc()
        duration.observe(event.duration_s)
        if compute is not None:
            compute.observe(event.compute_s)
        if event.stream and event.responses:
            self.stream_responses.labels(event.model, event.version).inc(event.responses)
        if event.batched:
            self.batch_queue.labels(event.model, event.version).observe(event.queue_s)


class _MLServerInferenceMetrics:
    """The inference metrics under MLServer 1.7's names (``metrics_compat = "mlserver"``).

    ``model_infer_request_success`` / ``_failure`` (counters) and ``model_infer_request_duration``
    (a summary: count and sum) labelled ``model`` and ``version``, as MLServer's data plane
    has them; ``batch_request_queue`` (a histogram labelled ``model_name``, ``model_version``).
    Differences, by design: calls to unknown models are not counted (MLServer counts them as
    failures under the name asked for, one series per name a client makes up), and
    ``version`` is the version that answered, "None" for an unversioned model (MLServer's
    is the version asked for, so "None" whenever the request names none).
    """

    def __init__(self, registry: CollectorRegistry) -> None:
        self.success = PromCounter(
            "model_infer_request_success",
            "Model infer request success count",
            ["model", "version"],
            registry=registry,
        )
        self.failure = PromCounter(
            "model_infer_request_failure",
            "Model infer request failure count",
            ["model", "version"],
            registry=registry,
        )
        self.duration = PromSummary(
            "model_infer_request_duration",
            "Model infer request duration",
            ["model", "version"],
            registry=registry,
        )
        self.batch_queue = PromHistogram(
            "batch_request_queue",
            "counter of request queue batch size",
            ["model_name", "model_version"],
            buckets=PROMETHEUS_BUCKETS,
            registry=registry,
        )
        # As in _InferenceMetrics: the children of each model version and outcome, made once.
        self._children: dict[tuple[str, str, bool], tuple[Any, Any]] = {}

    def __call__(self, event: Event) -> None:
        if type(event) is BatchFinished:
            # MLServer observes the queue's length as each request joins it: 0, 1, ... for the
            # requests of a batch that had the queue to itself. inferkit's batcher does not
            # report its queue, so the batch's requests stand for it.
            queue = self.batch_queue.labels(event.model, event.version)
            for waiting in range(event.requests):
                queue.observe(waiting)
            return
        if type(event) is not InferenceFinished or not event.found:
            return
        key = (event.model, event.version, event.ok)
        children = self._children.get(key)
        if children is None:
            labels = (event.model, event.version or "None")
            outcome = self.success if event.ok else self.failure
            children = self._children[key] = (
                outcome.labels(*labels),
                self.duration.labels(*labels),
            )
        outcome_child, duration = children
        outcome_child.inc()
        duration.observe(event.duration_s)


async def _count_models(server: Server, gauge: PromGauge) -> None:
    counts = dict.fromkeys(get_args(State), 0)
    for item in await server.index():
        counts[item.state] = counts.get(item.state, 0) + 1
    for state, count in counts.items():
        gauge.labels(state).set(count)


class _StoreCollector(Collector):
    """Exports a core :class:`~inferkit.metrics.MetricStore` at scrape time."""

    def __init__(self, store: MetricStore) -> None:
        self._store = store

    def describe(self) -> Iterable[Metric]:
        # Names are only known at scrape time (models add metrics as they load).
        return []

    def collect(self) -> Iterable[Metric]:
        for snapshot in self._store.collect():
            labels = list(snapshot.labelnames)
            family: Metric
            if snapshot.kind == "counter":
                family = CounterMetricFamily(snapshot.name, snapshot.documentation, labels=labels)
            elif snapshot.kind == "gauge":
                family = GaugeMetricFamily(snapshot.name, snapshot.documentation, labels=labels)
            else:
                family = HistogramMetricFamily(snapshot.name, snapshot.documentation, labels=labels)
            for values, value in snapshot.samples:
                if isinstance(value, HistogramSample):
                    assert isinstance(family, HistogramMetricFamily)
                    bounds = [*map(_bound, snapshot.buckets), "+Inf"]
                    buckets = list(zip(bounds, value.cumulative, strict=True))
                    family.add_metric(list(values), buckets, value.sum)
                else:
                    assert isinstance(family, CounterMetricFamily | GaugeMetricFamily)
                    family.add_metric(list(values), value)
            yield family


def _bound(value: float) -> str:
    return repr(value)


# -- REST request metrics -----------------------------------------------------------------


def instrument_rest_app(
    app: ASGIApp, server: Server, *, settings: Settings | None = None
) -> ASGIApp:
    """``app`` recording each HTTP request into ``server.metrics``.

    Exported as ``inferkit_rest_requests_total{route,method,status}``,
    ``inferkit_rest_request_duration_seconds{route,method,status}`` and
    ``inferkit_requests_in_flight{transport="rest"}``. ``route`` is the route's template
    (``/v2/models/{name}/infer``), never the raw path, so model names cannot explode the
    number of series; requests that match no route get ``route="unmatched"``. A client that
    disconnects before its answer (mid-body, say) is counted as ``status="499"`` (nginx's
    "client closed request"), apart from the server's errors.

    With ``metrics_compat = "mlserver"`` (settings default to the server's) the requests are
    also recorded under MLServer's names (see :class:`_MLServerRestMetrics`).
    """
    settings = settings if settings is not None else server.settings
    requests = RequestMetrics(server.metrics, "rest", ("route", "method", "status"))
    mlserver = None
    if settings.metrics_compat == "mlserver" and settings.metrics_endpoint:
        mlserver = _MLServerRestMetrics(server.metrics, settings)

    async def instrumented(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await app(scope, receive, send)
            return
        status = 500  # if the app fails before answering, the server answers 500
        answered = False
        started = requests.started()
        compat = mlserver is not None and mlserver.started(scope)

        async def receive_status() -> Message:
            nonlocal status
            message = await receive()
            if message["type"] == "http.disconnect" and not answered:
                # The client left before its answer (mid-body, say): not a server error to
                # alert on. Counted apart, as nginx's 499, whatever the app does next.
                status = _CLIENT_GONE
            return message

        async def send_status(message: Message) -> None:
            nonlocal status, answered
            if message["type"] == "http.response.start" and status != _CLIENT_GONE:
                status = message["status"]
                answered = True
            await send(message)

        try:
            await app(scope, receive_status, send_status)
        finally:
            # The router records the matched route in the scope (starlette >= 0.41).
            route = getattr(scope.get("route"), "path", None)
            requests.finished(started, route or "unmatched", scope["method"], str(status))
            if compat:
                assert mlserver is not None
                mlserver.finished(started, scope, route, status)

    return instrumented


class _MLServerRestMetrics:
    """REST requests under the names MLServer exports them by (starlette-exporter's).

    ``{prefix}_requests_total`` and ``{prefix}_request_duration_seconds`` labelled ``method``,
    ``path`` (the route template, in MLServer's spelling: ``/v2/models/{model_name}/infer``),
    ``status_code`` and ``app_name="mlserver"``; ``{prefix}_requests_in_progress`` labelled
    ``method`` and ``app_name``. ``prefix`` is ``metrics_rest_server_prefix``. As MLServer
    configures the middleware, the metrics endpoint and the health routes are not recorded,
    and requests that match no route are only counted in progress.
    """

    APP_NAME = "mlserver"

    def __init__(self, store: MetricStore, settings: Settings) -> None:
        prefix = settings.metrics_rest_server_prefix
        labels = ("method", "path", "status_code", "app_name")
        self.requests = store.counter(
            f"{prefix}_requests_total", "Total HTTP requests", labels
        )._family
        self.duration = store.histogram(
            f"{prefix}_request_duration_seconds",
            "HTTP request duration, in seconds",
            labels,
            PROMETHEUS_BUCKETS,
        )._family
        self.in_progress = store.gauge(
            f"{prefix}_requests_in_progress",
            "Total HTTP requests currently in progress",
            ("method", "app_name"),
        )._family
        self.skip = frozenset(
            {settings.metrics_endpoint or "/metrics", "/v2/health/live", "/v2/health/ready"}
        )
        # inferkit's route templates in MLServer's spelling, converted once each.
        self._paths: dict[str, str] = {}

    def started(self, scope: Scope) -> bool:
        """Count a request in progress; False for one that is not recorded at all."""
        if scope["path"] in self.skip:
            return False
        self.in_progress.add((scope["method"], self.APP_NAME), 1.0)
        return True

    def finished(self, started: float, scope: Scope, route: str | None, status: int) -> None:
        method = scope["method"]
        self.in_progress.add((method, self.APP_NAME), -1.0)
        if route is None:
            return  # starlette-exporter's filter_unhandled_paths, on in MLServer
        path = self._paths.get(route)
        if path is None:
            path = route.replace("{name}", "{model_name}").replace("{version}", "{model_version}")
            self._paths[route] = path
        key = (method, path, str(status), self.APP_NAME)
        self.requests.add(key, 1.0)
        self.duration.observe(key, time.perf_counter() - started)


# -- the runner's service -----------------------------------------------------------------


async def metrics_service(server: Server, settings: Settings, stop: asyncio.Event) -> None:
    """Serve the metrics app on ``settings.host:settings.metrics_port`` until ``stop`` is set.

    Does nothing but wait when metrics are off (``metrics_endpoint`` empty), are served on the
    HTTP port (``metrics_on_http_port``) or have no port (``metrics_port`` 0).
    """
    if not settings.metrics_endpoint or settings.metrics_on_http_port or not settings.metrics_port:
        await stop.wait()
        return
    from hypercorn.asyncio import serve
    from hypercorn.config import Config

    config = Config()
    host = settings.host
    config.bind = [
        f"[{host}]:{settings.metrics_port}" if ":" in host else f"{host}:{settings.metrics_port}"
    ]
    config.graceful_timeout = 1.0  # a scrape is short; nothing to drain
    config.accesslog = None
    config.errorlog = logging.getLogger("inferkit.metrics.http")
    app: Any = create_metrics_app(server, settings=settings)
    log.info(
        "Metrics server running on http://%s:%d%s",
        host,
        settings.metrics_port,
        settings.metrics_endpoint,
    )
    await serve(app, config, shutdown_trigger=stop.wait)

"""OpenTelemetry tracing of inference calls (the ``otel`` extra): one SERVER span each.

An :class:`InferenceTracer` wraps a ``TracerProvider`` and is a hook of the core's request
pipeline: ``server.add_hook(tracer)`` opens a span around every inference call, whatever
transport carried it (REST, gRPC, a direct ``Server.infer``). The span's parent is the W3C
trace context of the request (``traceparent`` / ``tracestate`` headers, or gRPC metadata),
and the model sees the *server span's* context in
``payload.parameters["headers"]["traceparent"]``, so spans the model makes become its
children. Span names and attributes follow OpenTelemetry's HTTP and RPC conventions, from
the call's outcome record.

Nothing here is global: the tracer uses its own W3C propagator (never the global one) and
:func:`tracer_for` builds a provider of its own rather than calling
``trace.set_tracer_provider``, so a host application's tracing setup is left alone. Without a
tracer, the pipeline does no tracing work at all; and OpenTelemetry is imported only when a
tracer is built, so ``import inferkit`` and a server without tracing never load it.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, MutableMapping
from typing import TYPE_CHECKING, Any

from .._version import __version__
from ..events import InferenceFinished
from ..pipeline import Call
from ..settings import Settings

if TYPE_CHECKING:
    from opentelemetry.trace import Span, Status, TracerProvider
    from opentelemetry.util.types import AttributeValue

__all__ = [
    "ERROR_TYPE",
    "INSTALL_HINT",
    "MODEL",
    "REQUEST_ID",
    "TRANSPORT",
    "VERSION",
    "InferenceTracer",
    "tracer_for",
]

log = logging.getLogger("inferkit.tracing")

#: What to install when ``tracing_server`` is set but OpenTelemetry is missing.
INSTALL_HINT = "pip install 'inferkit[otel]'"

# Span attributes. inferkit's own live under ``inferkit.``; ``error.type`` is OpenTelemetry's.
#: The model's name, as the request named it.
MODEL = "inferkit.model.name"
#: The resolved model version (``""`` for an unversioned model), as in the metrics' labels.
VERSION = "inferkit.model.version"
#: The V2 request ``id`` (the one the server generated when the request had none).
REQUEST_ID = "inferkit.request.id"
#: ``rest`` or ``grpc`` (``""``: a direct ``Server`` call).
TRANSPORT = "inferkit.transport"
#: The error's stable ``code`` (``MODEL_NOT_FOUND``, ``INFERENCE_FAILED``, ...) on failure.
ERROR_TYPE = "error.type"

# The W3C Trace Context headers (https://www.w3.org/TR/trace-context/).
_TRACE_HEADERS = ("traceparent", "tracestate")

# gRPC status codes by name (https://grpc.io/docs/guides/status-codes/), for
# ``rpc.grpc.status_code``: the record names the status, the convention wants its number.
_GRPC_CODES = {
    name: number
    for number, name in enumerate(
        "OK CANCELLED UNKNOWN INVALID_ARGUMENT DEADLINE_EXCEEDED NOT_FOUND ALREADY_EXISTS "
        "PERMISSION_DENIED RESOURCE_EXHAUSTED FAILED_PRECONDITION ABORTED OUT_OF_RANGE "
        "UNIMPLEMENTED INTERNAL UNAVAILABLE DATA_LOSS UNAUTHENTICATED".split()
    )
}


class InferenceTracer:
    """A hook of the request pipeline: the SERVER span of each inference call.

    Pass your own provider to trace into your application's pipeline::

        server.add_hook(InferenceTracer(provider))

    ``owned=True`` makes :meth:`shutdown` shut the provider down too (flushing its spans);
    :func:`tracer_for` builds such a tracer from the settings for the runner. A provider you
    pass yourself stays yours to shut down.
    """

    def __init__(self, provider: TracerProvider, *, owned: bool = False) -> None:
        from opentelemetry import context
        from opentelemetry.trace import (
            SpanKind,
            Status,
            StatusCode,
            get_current_span,
            set_span_in_context,
        )
        from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

        #: The provider the spans come from.
        self.provider = provider
        self._owned = owned
        self._tracer = provider.get_tracer("inferkit", __version__)
        # An instance of its own: the global propagator is the host application's to set.
        self._propagator = TraceContextTextMapPropagator()
        # Kept from the lazy imports above, for the methods called per request.
        self._server = SpanKind.SERVER
        self._current_span = get_current_span
        self._in_context = set_span_in_context
        self._attach = context.attach
        self._detach = context.detach
        self._status = Status
        self._status_error = StatusCode.ERROR

    def started(self, call: Call) -> tuple[Span, object]:
        """Open the call's span, make it current, and hand its context to the model.

        Its parent is the span already current (a host application that traces its own
        requests) or else the trace context in the call's headers.
        """
        parent = None
        if not self._current_span().get_span_context().is_valid:
            parent = self._propagator.extract(call.headers or {})
        span = self._tracer.start_span(
            _span_name(call),
            context=parent,
            kind=self._server,
            attributes={TRANSPORT: call.transport, **_request_attributes(call)},
            record_exception=False,
            set_status_on_exception=False,
        )
        if call.headers is None:
            call.headers = {}
        self.inject(call.headers, span)
        return span, self._attach(self._in_context(span))

    def finished(self, call: Call, record: InferenceFinished, token: tuple[Span, object]) -> None:
        """Record how the call ended and end its span.

        A failed call sets the span's status to ERROR with the error's ``code`` as its
        description: never the text of an exception, which may carry secrets.
        """
        span, attached = token
        try:
            span.set_attribute(MODEL, record.model)
            span.set_attribute(VERSION, record.version)
            if record.request_id:
                span.set_attribute(REQUEST_ID, record.request_id)
            span.set_attributes(_status_attributes(record))
            if record.code:
                span.set_attribute(ERROR_TYPE, record.code)
                span.set_status(self._error(record.code))
            span.end()
        finally:
            self._detach(attached)  # type: ignore[arg-type]

    def _error(self, code: str) -> Status:
        return self._status(self._status_error, code)

    def inject(self, headers: MutableMapping[str, str], span: Span | None = None) -> None:
        """Put the trace context of ``span`` (default: the current span) into ``headers``.

        This hands the model the server span's context in place of the client's
        (``traceparent``, ``tracestate``), so that the model's spans are children of the
        server span.
        """
        for key in _TRACE_HEADERS:
            headers.pop(key, None)  # the client's tracestate must not outlive its traceparent
        context = None if span is None else self._in_context(span)
        self._propagator.inject(headers, context)

    def shutdown(self) -> None:
        """Flush and shut down the provider if this tracer owns it (blocks while exporting)."""
        if self._owned:
            shutdown = getattr(self.provider, "shutdown", None)
            if shutdown is not None:  # the API's provider has none; the SDK's has
                shutdown()


def _span_name(call: Call) -> str:
    # OpenTelemetry's conventions: "METHOD route" for HTTP (the template, never the raw path,
    # so model names stay out of span names), "service/method" for RPC.
    if call.transport == "rest":
        return f"POST {call.route}"
    if call.transport == "grpc":
        return call.route.lstrip("/")
    return "inferkit.infer_stream" if call.stream else "inferkit.infer"


def _request_attributes(call: Call) -> Mapping[str, AttributeValue]:
    if call.transport == "rest":
        return {"http.request.method": "POST", "http.route": call.route}
    if call.transport == "grpc":
        service, _, method = call.route.lstrip("/").partition("/")
        return {"rpc.system": "grpc", "rpc.service": service, "rpc.method": method}
    return {}


def _status_attributes(record: InferenceFinished) -> Mapping[str, Any]:
    if not record.status:
        return {}  # nothing was answered (the client went away)
    if record.transport == "rest" and record.status.isdigit():
        return {"http.response.status_code": int(record.status)}
    if record.transport == "grpc" and record.status in _GRPC_CODES:
        return {"rpc.grpc.status_code": _GRPC_CODES[record.status]}
    return {}


def tracer_for(settings: Settings) -> InferenceTracer | None:
    """The tracer of the settings: spans exported to ``tracing_server`` over OTLP/gRPC.

    ``None`` when ``tracing_server`` is not set, or when OpenTelemetry is not installed (then
    with one warning naming the extra: the server serves without tracing rather than failing).
    The provider is the tracer's own, with ``service.name`` = ``server_name``, a batch span
    processor and an insecure OTLP/gRPC exporter, as MLServer configures it.
    """
    if not settings.tracing_server:
        return None
    try:
        from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
        from opentelemetry.sdk.resources import SERVICE_NAME, SERVICE_VERSION, Resource
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import BatchSpanProcessor
    except ImportError as exc:
        log.warning(
            "tracing_server is set to %r but OpenTelemetry is not installed (%s): serving "
            "without tracing. Install it with: %s",
            settings.tracing_server,
            exc.name or exc,
            INSTALL_HINT,
        )
        return None
    resource = Resource.create(
        {
            SERVICE_NAME: settings.server_name,
            SERVICE_VERSION: settings.server_version or __version__,
        }
    )
    # No atexit hook (the SDK's default): the runner shuts the provider down when it stops,
    # and a hook would keep every provider of the process alive until exit.
    provider = TracerProvider(resource=resource, shutdown_on_exit=False)
    exporter = OTLPSpanExporter(endpoint=settings.tracing_server, insecure=True)
    provider.add_span_processor(BatchSpanProcessor(exporter))
    log.info("Tracing: exporting spans to %s (OTLP/gRPC)", settings.tracing_server)
    return InferenceTracer(provider, owned=True)

"""The V2 REST transport: ``create_rest_app(server)`` returns a Starlette app.

Handlers only translate: read the body (within the size limit), decode it straight into the
core's Structs with msgspec, call one ``Server`` method, encode the answer. Errors are mapped by
one table (:data:`STATUS`), resolved along the exception's MRO; anything that is not an
``InferkitError`` is logged once and answered with a generic 500, never with its text.

The app owns no event loop and no server: mount it anywhere (``Mount("/ml", app=...)``) and load
the models from the host app's lifespan (``await server.start()`` / ``await server.stop()``), or
let :mod:`inferkit.runner` serve it.
"""

from __future__ import annotations

import contextlib
import logging
import time
import zlib
from collections.abc import AsyncIterator, Awaitable, Callable
from contextvars import ContextVar
from typing import TYPE_CHECKING, Any

import msgspec
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.middleware.cors import CORSMiddleware
from starlette.middleware.gzip import GZipMiddleware
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route
from starlette.types import ASGIApp, Receive, Scope, Send

from .. import errors
from ..events import Event, InferenceFinished
from ..logs import log_access
from ..server import Server
from ..settings import Settings
from ..types import InferenceRequest, RepositoryIndexRequest, encode_json
from .binary import HEADER_LENGTH, decode_binary_request, encode_binary_response
from .openapi import docs_routes

if TYPE_CHECKING:
    from .tracing import InferenceTracer

__all__ = ["STATUS", "create_rest_app", "error_response", "status_for"]

log = logging.getLogger("inferkit.rest")

#: Error class -> HTTP status. Looked up along the MRO, so subclasses inherit their parent's.
STATUS: dict[type[Exception], int] = {
    errors.InferkitError: 500,
    errors.InvalidRequest: 400,
    errors.InvalidShape: 400,
    errors.UnsupportedDatatype: 400,
    errors.OutputNotFound: 400,
    errors.PayloadTooLarge: 413,
    errors.ModelNotFound: 404,
    # V2: a model that exists but cannot serve is a client-side condition (Triton answers 400).
    errors.ModelNotReady: 400,
    errors.ModelLoadError: 500,
    errors.InferenceFailed: 500,
    errors.InferenceTimeout: 504,
    errors.QueueFull: 503,
    errors.ShuttingDown: 503,
    errors.SettingsError: 500,
}

#: Seconds a client should wait before retrying a retryable error (``Retry-After``).
RETRY_AFTER_S = 1

_JSON = "application/json"
Handler = Callable[[Request], Awaitable[Response]]


def status_for(exc: BaseException) -> int:
    """The HTTP status of an error, from :data:`STATUS` along its MRO (500 if none)."""
    for cls in type(exc).__mro__:
        status = STATUS.get(cls)
        if status is not None:
            return status
    return 500


def error_response(exc: errors.InferkitError) -> Response:
    """``{"error": message, "code": CODE}`` with the status from the table."""
    body = msgspec.json.encode({"error": exc.message, "code": exc.code})
    headers = {"Retry-After": str(RETRY_AFTER_S)} if exc.retryable else None
    return Response(body, status_for(exc), headers=headers, media_type=_JSON)


def _guard(handler: Handler) -> Handler:
    async def guarded(request: Request) -> Response:
        try:
            return await handler(request)
        except errors.InferkitError as exc:
            return error_response(exc)
        except Exception:
            log.exception("Unexpected error on %s %s", request.method, request.url.path)
            return error_response(errors.InferkitError("Internal server error"))

    return guarded


def create_rest_app(
    server: Server, settings: Settings | None = None, *, tracer: InferenceTracer | None = None
) -> Starlette:
    """The V2 REST API of ``server`` as a Starlette app (settings default to the server's).

    With a ``tracer`` (:mod:`inferkit.transports.tracing`), every inference request gets an
    OpenTelemetry SERVER span.
    """
    settings = settings if settings is not None else server.settings
    api = _Api(server, settings.max_request_size, tracer)
    return Starlette(routes=api.routes(), middleware=_middleware(settings))


def _middleware(settings: Settings) -> list[Middleware]:
    middleware = []
    cors = settings.cors_settings
    if cors is not None and (cors.allow_origins or cors.allow_origin_regex):
        middleware.append(
            Middleware(
                CORSMiddleware,
                allow_origins=cors.allow_origins,
                allow_origin_regex=cors.allow_origin_regex,
                allow_credentials=cors.allow_credentials,
                allow_methods=cors.allow_methods,
                allow_headers=cors.allow_headers,
                expose_headers=cors.expose_headers,
                max_age=cors.max_age,
            )
        )
    if settings.gzip_enabled:
        middleware.append(Middleware(_GzipIfAccepted))
    return middleware


class _GzipIfAccepted:
    """Starlette's GZipMiddleware, skipped for clients that do not accept gzip.

    Most V2 clients and load generators send no ``Accept-Encoding: gzip``; for them the
    request goes straight to the app instead of through GZip's response wrapper.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app
        self.gzip = GZipMiddleware(app, minimum_size=1024)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            for key, value in scope["headers"]:
                if key == b"accept-encoding" and b"gzip" in value:
                    await self.gzip(scope, receive, send)
                    return
        await self.app(scope, receive, send)


class _Api:
    """The route handlers, bound to one server."""

    def __init__(
        self, server: Server, max_request_size: int, tracer: InferenceTracer | None = None
    ) -> None:
        self.server = server
        self.limit = max_request_size
        self.tracer = tracer
        self._decode_request = msgspec.json.Decoder(InferenceRequest).decode
        self._decode_index = msgspec.json.Decoder(RepositoryIndexRequest).decode
        # Server-Timing is fed by the core's events: one listener per server, however many apps.
        with contextlib.suppress(ValueError):
            server.remove_listener(_remember_inference)
        server.add_listener(_remember_inference)

    def routes(self) -> list[BaseRoute]:
        model = "/v2/models/{name}"
        versioned = "/v2/models/{name}/versions/{version}"
        # Inference first: Starlette tries routes in order, so the hot path matches at once.
        table: list[tuple[str, Handler, str]] = [
            (f"{model}/infer", self.infer, "POST"),
            (f"{versioned}/infer", self.infer, "POST"),
            ("/v2/health/live", self.live, "GET"),
            ("/v2/health/ready", self.ready, "GET"),
            ("/v2", self.metadata, "GET"),
            ("/v2/models/stats", self.stats, "GET"),  # before {name}, which would match "stats"
            (f"{model}/stats", self.stats, "GET"),
            (f"{versioned}/stats", self.stats, "GET"),
            (model, self.model_metadata, "GET"),
            (versioned, self.model_metadata, "GET"),
            (f"{model}/ready", self.model_ready, "GET"),
            (f"{versioned}/ready", self.model_ready, "GET"),
            ("/v2/repository/index", self.index, "POST"),
            ("/v2/repository/models/{name}/load", self.load, "POST"),
            ("/v2/repository/models/{name}/unload", self.unload, "POST"),
        ]
        routes: list[BaseRoute] = [
            Route(
                path, self._infer_handler(path) if h == self.infer else _guard(h), methods=[method]
            )
            for path, h, method in table
        ]
        return [*routes, *docs_routes()]

    def _infer_handler(self, route: str) -> Handler:
        # Tracing adds its layer only when a tracer is given: without one, nothing changes.
        if self.tracer is None:
            return _observed(_guard(self.infer))
        return _observed(_guard(_traced(self.infer, self.tracer, route)))

    async def live(self, request: Request) -> Response:
        return _probe(await self.server.live())

    async def ready(self, request: Request) -> Response:
        return _probe(await self.server.ready())

    async def metadata(self, request: Request) -> Response:
        return _json(await self.server.metadata())

    async def model_metadata(self, request: Request) -> Response:
        name, version = _model(request)
        return _json(await self.server.model_metadata(name, version))

    async def model_ready(self, request: Request) -> Response:
        name, version = _model(request)
        return _probe(await self.server.model_ready(name, version))

    async def infer(self, request: Request) -> Response:
        name, version = _model(request)
        headers = _headers(request)
        body = await self._body(request, headers)
        header_length = headers.get(HEADER_LENGTH)
        if header_length is None:
            payload = self._decode(self._decode_request, body)
        else:
            payload = decode_binary_request(
                body, _int_header(header_length), self._decoder_for_header()
            )
        request.state.request_id = payload.id
        if self.tracer is not None:
            # The model sees the server span's context, so its own spans become children.
            self.tracer.inject(headers)
        payload.parameters = {**(payload.parameters or {}), "headers": headers}
        response = await self.server.infer(name, payload, version)
        request.state.request_id = response.id
        all_binary = bool(payload.parameters.get("binary_data_output"))
        return _infer_response(response, all_binary)

    def _decoder_for_header(self) -> Callable[[bytes], InferenceRequest]:
        return lambda data: self._decode(self._decode_request, data)

    async def stats(self, request: Request) -> Response:
        params = request.path_params
        return _json(await self.server.model_statistics(params.get("name"), params.get("version")))

    async def index(self, request: Request) -> Response:
        body = await self._body(request, _headers(request))
        query = self._decode(self._decode_index, body) if body.strip() else None
        items = await self.server.index(query.ready if query else None)
        return _json(items)

    async def load(self, request: Request) -> Response:
        await self.server.load(request.path_params["name"])
        return Response(status_code=200)

    async def unload(self, request: Request) -> Response:
        await self.server.unload(request.path_params["name"])
        return Response(status_code=200)

    @staticmethod
    def _decode(decode: Callable[[bytes], Any], body: bytes) -> Any:
        try:
            return decode(body)
        except msgspec.ValidationError as exc:
            raise errors.InvalidRequest(str(exc)) from None
        except msgspec.DecodeError as exc:
            raise errors.InvalidRequest(f"Invalid JSON: {exc}") from None

    async def _body(self, request: Request, headers: dict[str, str]) -> bytes:
        """The body, refused with 413 as soon as it is known to exceed the limit."""
        stream = request.stream()
        declared = headers.get("content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.limit:
            await self._discard(stream)
            raise self._too_large()
        chunks = []
        size = 0
        async for chunk in stream:
            size += len(chunk)
            if size > self.limit:
                await self._discard(stream)
                raise self._too_large()
            chunks.append(chunk)
        body = b"".join(chunks)
        encoding = headers.get("content-encoding", "").lower()
        if encoding in ("gzip", "deflate"):
            body = self._inflate(body, encoding)
        return body

    async def _discard(self, stream: AsyncIterator[bytes]) -> None:
        # Read (and drop) a bounded amount of what the client is still sending before the 413:
        # closing a socket with unread data makes the kernel send a reset, which can destroy
        # the response before the client reads it (nginx's "lingering close" is the same idea).
        # Nothing is kept, and past another ``limit`` bytes the connection is simply dropped.
        drained = 0
        async for chunk in stream:
            drained += len(chunk)
            if drained > self.limit:
                return

    def _inflate(self, body: bytes, encoding: str) -> bytes:
        # Bounded, so a small compressed body cannot expand past the limit (a "zip bomb").
        inflater = zlib.decompressobj(wbits=31 if encoding == "gzip" else 15)
        try:
            data = inflater.decompress(body, self.limit + 1)
        except zlib.error:
            raise errors.InvalidRequest(f"Body is not valid {encoding} data") from None
        if len(data) > self.limit or inflater.unconsumed_tail:
            raise self._too_large()
        return data

    def _too_large(self) -> errors.PayloadTooLarge:
        return errors.PayloadTooLarge(
            f"Request body is larger than the limit of {self.limit} bytes (max_request_size)"
        )


def _headers(request: Request) -> dict[str, str]:
    # One pass over the raw ASGI headers (already lower-case); Starlette's ``Headers`` scans
    # the list again on every lookup. The dict also becomes ``parameters.headers``.
    return {k.decode("latin-1"): v.decode("latin-1") for k, v in request.scope["headers"]}


def _model(request: Request) -> tuple[str, str | None]:
    params = request.path_params
    return params["name"], params.get("version")


def _int_header(value: str) -> int:
    if not value.isdigit():
        raise errors.InvalidRequest(
            f"Inference-Header-Content-Length must be a non-negative integer, got {value!r}"
        )
    return int(value)


def _probe(ok: bool) -> Response:
    # V2 health and readiness: 200 when true, 400 otherwise, no body needed.
    return Response(status_code=200 if ok else 400)


def _json(obj: Any) -> Response:
    return Response(encode_json(obj), media_type=_JSON)


def _infer_response(response: Any, all_binary: bool) -> Response:
    headers: dict[str, str] = {}
    params = response.parameters
    if params and isinstance(params.get("headers"), dict):
        # MLServer lets a model set response headers through ``parameters.headers``.
        headers.update({str(k): str(v) for k, v in params.pop("headers").items()})
        response.parameters = params or None
    body, header_length = encode_binary_response(response, all_binary)
    if header_length is None:
        return Response(body, headers=headers, media_type=_JSON)
    headers["Inference-Header-Content-Length"] = str(header_length)
    return Response(body, headers=headers, media_type="application/octet-stream")


# -- Server-Timing and the access log of the infer routes ------------------------------------

#: The InferenceFinished event of this request's inference. The core calls listeners
#: synchronously inside ``Server.infer``, so the listener sets it in the handler's own context.
_inference: ContextVar[InferenceFinished | None] = ContextVar("inferkit_inference", default=None)


def _remember_inference(event: Event) -> None:
    if type(event) is InferenceFinished:
        _inference.set(event)


def _observed(handler: Handler) -> Handler:
    """Add ``Server-Timing`` and log one access line around a (guarded) infer handler."""

    async def observed(request: Request) -> Response:
        started = time.perf_counter()
        token = _inference.set(None)
        try:
            response = await handler(request)
            event = _inference.get()
        finally:
            _inference.reset(token)
        if event is not None:
            response.headers["Server-Timing"] = _server_timing(event)
        name, version = _model(request)
        log_access(
            method=request.method,
            path=request.scope["path"],
            status=response.status_code,
            duration_s=time.perf_counter() - started,
            request_id=getattr(request.state, "request_id", None)
            or request.headers.get("x-request-id", ""),
            model=event.model if event else name,
            version=event.version if event else version or "",
        )
        return response

    return observed


def _traced(handler: Handler, tracer: InferenceTracer, route: str) -> Handler:
    """One OpenTelemetry SERVER span around an infer handler, inside the error guard.

    Named by the route's template (``POST /v2/models/{name}/infer``), never the raw path, as
    OpenTelemetry's HTTP conventions ask: model names stay out of span names.
    """
    name = f"POST {route}"
    http = {"http.request.method": "POST", "http.route": route}

    async def traced(request: Request) -> Response:
        model, version = _model(request)
        status: int | None = None
        code = "CANCELLED"  # the handler was cancelled: the client went away
        with tracer.span(name, request.headers, transport="rest", attributes=http) as span:
            try:
                response = await handler(request)
                status, code = response.status_code, ""
                return response
            except errors.InferkitError as exc:
                status, code = status_for(exc), exc.code
                raise
            except Exception:
                status, code = 500, "INTERNAL"
                raise
            finally:
                # The core's event knows the resolved version, also when the model failed.
                event = _inference.get()
                span.finish(
                    model=model,
                    version=event.version if event is not None else version,
                    request_id=getattr(request.state, "request_id", None),
                    error_code=code,
                    attributes={} if status is None else {"http.response.status_code": status},
                )

    return traced


def _server_timing(event: InferenceFinished) -> str:
    # "queue" is everything but predict until batching measures the real wait (milliseconds).
    queue_ms = max(event.duration_s - event.compute_s, 0.0) * 1000
    return f"queue;dur={queue_ms:.3f}, compute;dur={event.compute_s * 1000:.3f}"

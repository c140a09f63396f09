"""The REST inference endpoint: a plain ASGI app, because it is the hot path.

Every other route is a Starlette handler. This one is called thousands of times a second, so
it speaks ASGI itself: it reads the body from ``receive``, calls ``Server.infer`` and sends the
answer as two messages, without Starlette's ``Request``/``Response`` objects or its
per-request exception wrapper (together about a third of the app's own cost per small request;
``benchmarks/profile_rest.py`` measures it). Starlette still routes to it (so the route
template, path parameters, CORS and gzip apply as for any route) and its behaviour is the
other routes' own: the same error table, ``Server-Timing``, one access line.

With a tracer (:mod:`.tracing`), :meth:`InferEndpoint.for_route` puts each request in an
OpenTelemetry SERVER span; without one the route gets the endpoint itself, untouched.
"""

from __future__ import annotations

import contextlib
import logging
import time
import zlib
from collections.abc import Callable
from contextvars import ContextVar
from typing import TYPE_CHECKING, Any

import msgspec
from starlette.types import Message, Receive, Scope, Send

from .. import errors
from ..events import Event, InferenceFinished
from ..logs import log_access
from ..server import Server
from ..types import InferenceRequest, InferenceResponse
from .binary import HEADER_LENGTH, decode_binary_request, encode_binary_response

if TYPE_CHECKING:
    from .tracing import InferenceSpan, InferenceTracer

__all__ = [
    "STATUS",
    "BodyReader",
    "ClientGone",
    "InferEndpoint",
    "decode",
    "error_parts",
    "scope_headers",
    "status_for",
]

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

_JSON = b"application/json"
_BINARY = b"application/octet-stream"

Headers = list[tuple[bytes, bytes]]


def status_for(exc: BaseException) -> int:
    """The HTTP status of an error, from :data:`STATUS` along its MRO (500 if none)."""
    for cls in type(exc).__mro__:
        status = STATUS.get(cls)
        if status is not None:
            return status
    return 500


def error_parts(exc: errors.InferkitError) -> tuple[int, bytes, Headers]:
    """Status, ``{"error": message, "code": CODE}`` body and headers of an error answer."""
    body = msgspec.json.encode({"error": exc.message, "code": exc.code})
    headers = [(b"content-type", _JSON), (b"content-length", str(len(body)).encode())]
    if exc.retryable:
        headers.append((b"retry-after", str(RETRY_AFTER_S).encode()))
    return status_for(exc), body, headers


class ClientGone(Exception):
    """The client disconnected before its request body was read; there is no one to answer."""


class BodyReader:
    """Reads a request body from ASGI ``receive``, refusing it with 413 past ``limit`` bytes."""

    def __init__(self, limit: int) -> None:
        self.limit = limit

    async def read(self, receive: Receive, headers: dict[str, str]) -> bytes:
        """The whole body (inflated when gzip/deflate encoded), or PayloadTooLarge/ClientGone."""
        declared = headers.get("content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.limit:
            await self._discard(receive)
            raise self._too_large()
        message = await receive()
        body = self._chunk(message)
        if message.get("more_body", False):
            # Most bodies arrive in one message; only longer ones pay for the list and join.
            chunks = [body]
            size = len(body)
            more = True
            while more:
                message = await receive()
                chunk = self._chunk(message)
                size += len(chunk)
                if size > self.limit:
                    await self._discard(receive)
                    raise self._too_large()
                chunks.append(chunk)
                more = message.get("more_body", False)
            body = b"".join(chunks)
        elif len(body) > self.limit:
            raise self._too_large()
        encoding = headers.get("content-encoding")
        if encoding is not None and encoding.lower() in ("gzip", "deflate"):
            body = self._inflate(body, encoding.lower())
        return body

    @staticmethod
    def _chunk(message: Message) -> bytes:
        if message["type"] == "http.disconnect":
            raise ClientGone
        body: bytes = message.get("body", b"")
        return body

    async def _discard(self, receive: Receive) -> None:
        # Read (and drop) a bounded amount of what the client is still sending before the 413:
        # closing a socket with unread data makes the kernel send a reset, which can destroy
        # the response before the client reads it (nginx's "lingering close" is the same idea).
        # Nothing is kept, and past another ``limit`` bytes the connection is simply dropped.
        drained = 0
        while drained <= self.limit:
            message = await receive()
            if message["type"] != "http.request":
                return
            drained += len(message.get("body", b""))
            if not message.get("more_body", False):
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


def decode(decoder: Callable[[bytes], Any], body: bytes) -> Any:
    """Decode a JSON body, msgspec's errors turned into INVALID_REQUEST."""
    try:
        return decoder(body)
    except msgspec.ValidationError as exc:
        raise errors.InvalidRequest(str(exc)) from None
    except msgspec.DecodeError as exc:
        raise errors.InvalidRequest(f"Invalid JSON: {exc}") from None


def scope_headers(scope: Scope) -> dict[str, str]:
    """The request headers as one dict (names are lower-case in ASGI)."""
    # One pass over the raw headers; Starlette's ``Headers`` scans the list on every lookup.
    # The dict also becomes ``parameters.headers``.
    return {k.decode("latin-1"): v.decode("latin-1") for k, v in scope["headers"]}


#: The InferenceFinished event of this request's inference. The core calls listeners
#: synchronously inside ``Server.infer``, so the listener sets it in the endpoint's own context.
_inference: ContextVar[InferenceFinished | None] = ContextVar("inferkit_inference", default=None)


def _remember_inference(event: Event) -> None:
    if type(event) is InferenceFinished:
        _inference.set(event)


class InferEndpoint:
    """``POST /v2/models/{name}[/versions/{version}]/infer`` of one server, as an ASGI app."""

    def __init__(
        self, server: Server, max_request_size: int, tracer: InferenceTracer | None = None
    ) -> None:
        self.server = server
        self.reader = BodyReader(max_request_size)
        self.tracer = tracer
        self._decode_request = msgspec.json.Decoder(InferenceRequest).decode
        # Server-Timing is fed by the core's events: one listener per server, however many apps.
        with contextlib.suppress(ValueError):
            server.remove_listener(_remember_inference)
        server.add_listener(_remember_inference)

    def for_route(self, route: str) -> Any:
        """The ASGI app to route ``route`` (a template) to: traced when there is a tracer."""
        if self.tracer is None:
            return self
        return _Traced(self, self.tracer, route)

    async def __call__(
        self,
        scope: Scope,
        receive: Receive,
        send: Send,
        span: InferenceSpan | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        started = time.perf_counter()
        params = scope["path_params"]
        name: str = params["name"]
        version: str | None = params.get("version")
        if headers is None:
            headers = scope_headers(scope)
        request_id = ""
        code = ""
        token = _inference.set(None)
        try:
            try:
                payload = await self._payload(receive, headers)
                request_id = payload.id or ""
                if span is not None:
                    # The model sees the server span's context, so its spans become children.
                    span.inject(headers)
                payload.parameters = {**(payload.parameters or {}), "headers": headers}
                response = await self.server.infer(name, payload, version)
                request_id = response.id or request_id
                status, body, out = _answer(response, payload.parameters)
            except ClientGone:
                log.debug("Client went away before sending its request to %s", scope["path"])
                if span is not None:
                    span.finish(
                        model=name,
                        version=version,
                        request_id=None,
                        error_code="CANCELLED",
                        attributes={},
                    )
                return
            except errors.InferkitError as exc:
                status, body, out = error_parts(exc)
                code = exc.code
            except Exception:
                log.exception("Unexpected error on POST %s", scope["path"])
                status, body, out = error_parts(errors.InferkitError("Internal server error"))
                code = "INTERNAL"
            event = _inference.get()
        finally:
            _inference.reset(token)
        if event is not None:
            out.append((b"server-timing", _server_timing(event)))
        await send({"type": "http.response.start", "status": status, "headers": out})
        await send({"type": "http.response.body", "body": body})
        log_access(
            method="POST",
            path=scope["path"],
            status=status,
            duration_s=time.perf_counter() - started,
            request_id=request_id or headers.get("x-request-id", ""),
            model=event.model if event else name,
            version=event.version if event else version or "",
        )
        if span is not None:
            span.finish(
                model=name,
                # The core's event knows the resolved version, also when the model failed.
                version=event.version if event else version,
                request_id=request_id or None,
                error_code=code,
                attributes={"http.response.status_code": status},
            )

    async def _payload(self, receive: Receive, headers: dict[str, str]) -> InferenceRequest:
        body = await self.reader.read(receive, headers)
        header_length = headers.get(HEADER_LENGTH)
        if header_length is None:
            payload: InferenceRequest = decode(self._decode_request, body)
            return payload
        return decode_binary_request(body, _int_header(header_length), self._decode_json_part)

    def _decode_json_part(self, data: bytes) -> InferenceRequest:
        payload: InferenceRequest = decode(self._decode_request, data)
        return payload


class _Traced:
    """The endpoint inside one OpenTelemetry SERVER span per request.

    Named by the route's template (``POST /v2/models/{name}/infer``), never the raw path, as
    OpenTelemetry's HTTP conventions ask: model names stay out of span names. A class, not a
    closure: Starlette routes to functions as request/response handlers, to objects as ASGI.
    """

    __slots__ = ("attributes", "endpoint", "name", "tracer")

    def __init__(self, endpoint: InferEndpoint, tracer: InferenceTracer, route: str) -> None:
        self.endpoint = endpoint
        self.tracer = tracer
        self.name = f"POST {route}"
        self.attributes = {"http.request.method": "POST", "http.route": route}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        # Read once: the span's parent comes from these headers, then the model gets them.
        headers = scope_headers(scope)
        with self.tracer.span(
            self.name, headers, transport="rest", attributes=self.attributes
        ) as span:
            await self.endpoint(scope, receive, send, span, headers)


def _int_header(value: str) -> int:
    if not value.isdigit():
        raise errors.InvalidRequest(
            f"Inference-Header-Content-Length must be a non-negative integer, got {value!r}"
        )
    return int(value)


def _answer(
    response: InferenceResponse, request_params: dict[str, Any]
) -> tuple[int, bytes, Headers]:
    headers: Headers = []
    params = response.parameters
    if params and isinstance(params.get("headers"), dict):
        # MLServer lets a model set response headers through ``parameters.headers``; the
        # length is ours to say, and a content type the model chose replaces ours.
        headers.extend(
            (key, str(v).encode("latin-1"))
            for k, v in params.pop("headers").items()
            if (key := str(k).lower().encode("latin-1")) != b"content-length"
        )
        response.parameters = params or None
    all_binary = bool(request_params.get("binary_data_output"))
    body, header_length = encode_binary_response(response, all_binary)
    if header_length is not None:
        headers.append((b"inference-header-content-length", str(header_length).encode()))
    if not any(key == b"content-type" for key, _ in headers):
        headers.append((b"content-type", _JSON if header_length is None else _BINARY))
    headers.append((b"content-length", str(len(body)).encode()))
    return 200, body, headers


def _server_timing(event: InferenceFinished) -> bytes:
    # "queue" is everything but predict until batching measures the real wait (milliseconds).
    queue_ms = max(event.duration_s - event.compute_s, 0.0) * 1000
    return f"queue;dur={queue_ms:.3f}, compute;dur={event.compute_s * 1000:.3f}".encode()

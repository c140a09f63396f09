"""The REST inference endpoints: plain ASGI apps, because they are the hot path.

Every other route is a Starlette handler. ``infer`` is called thousands of times a second, so
it speaks ASGI itself: it reads the body from ``receive`` and sends the answer as two
messages, without Starlette's ``Request``/``Response`` objects or its per-request exception
wrapper (together about a third of the app's own cost per small request;
``benchmarks/profile_rest.py`` measures it). Starlette still routes to it (so the route
template, path parameters, CORS and gzip apply as for any route).

The endpoints only translate. The core's request pipeline (``Server.handle`` and
``Server.handle_stream``) drives each call through an *exchange* defined here: it decides
when to read and what to answer, catches every error, and records one outcome per call,
which the access log, metrics, statistics and tracing are built from.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from typing import Any

import msgspec
from starlette.types import Message, Receive, Scope, Send

from .. import errors
from ..pipeline import Call, ClientGone
from ..server import Server
from ..types import InferenceRequest, InferenceResponse, encode_json
from .binary import HEADER_LENGTH, decode_binary_request, encode_binary_response, header_length
from .body import BodyReader
from .json_numbers import MIN_ARRAY_BYTES, NumbersDecoder

__all__ = [
    "CLIENT_GONE",
    "STATUS",
    "BodyReader",
    "ClientGone",
    "InferEndpoint",
    "StreamEndpoint",
    "decode",
    "error_body",
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
    errors.RequestTimeout: 408,
    errors.ModelNotFound: 404,
    # V2: a model that exists but cannot serve is a client-side condition (Triton answers 400).
    errors.ModelNotReady: 400,
    errors.ModelLoadError: 500,
    errors.InferenceFailed: 500,
    errors.WorkerLost: 503,
    errors.InferenceTimeout: 504,
    errors.QueueFull: 503,
    errors.ShuttingDown: 503,
    errors.SettingsError: 500,
    errors.Unauthenticated: 401,
    errors.PermissionDenied: 403,
    errors.RepositoryReadOnly: 403,
}

#: The status recorded for a client that disconnected before its answer (nginx's 499,
#: "client closed request"): nothing is sent, and metrics count it apart from server errors.
CLIENT_GONE = "499"

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


def error_body(exc: errors.InferkitError) -> bytes:
    """``{"error": message, "code": CODE}``: the body of an error answer (or SSE event)."""
    return msgspec.json.encode({"error": exc.message, "code": exc.code})


def error_parts(exc: errors.InferkitError) -> tuple[int, bytes, Headers]:
    """Status, ``{"error": message, "code": CODE}`` body and headers of an error answer."""
    body = error_body(exc)
    headers = [(b"content-type", _JSON), (b"content-length", str(len(body)).encode())]
    if isinstance(exc, errors.PayloadTooLarge | errors.RequestTimeout):
        # The rest of the body is not read: the connection cannot carry another request.
        headers.append((b"connection", b"close"))
    if exc.retryable:
        headers.append((b"retry-after", str(RETRY_AFTER_S).encode()))
    return status_for(exc), body, headers


def decode(decoder: Callable[[bytes], Any], body: bytes) -> Any:
    """Decode a JSON body, msgspec's errors turned into INVALID_REQUEST."""
    try:
        return decoder(body)
    except RecursionError:
        # msgspec decodes nested arrays and objects recursively: past the interpreter's
        # recursion limit (about a thousand levels), the body is refused, not a crash.
        raise errors.InvalidRequest("Invalid JSON: nested too deeply") from None
    except msgspec.ValidationError as exc:
        raise errors.InvalidRequest(str(exc)) from None
    except msgspec.DecodeError as exc:
        raise errors.InvalidRequest(f"Invalid JSON: {exc}") from None


def scope_headers(scope: Scope) -> dict[str, str]:
    """The request headers as one dict (names are lower-case in ASGI)."""
    # One pass over the raw headers; Starlette's ``Headers`` scans the list on every lookup.
    # The dict also becomes ``parameters.headers``.
    return {k.decode("latin-1"): v.decode("latin-1") for k, v in scope["headers"]}


class InferEndpoint:
    """``POST /v2/models/{name}[/versions/{version}]/infer`` of one server, as an ASGI app.

    It only translates: the core's :meth:`~inferkit.Server.handle` drives the call (errors,
    timing, the outcome record that feeds the access log, metrics and tracing) and this
    endpoint's exchange reads the body and writes the answer.
    """

    def __init__(self, server: Server, reader: BodyReader) -> None:
        self.server = server
        self.reader = reader
        self._decode_request = msgspec.json.Decoder(InferenceRequest).decode
        self._numbers = NumbersDecoder(self._decode_request)

    def for_route(self, route: str) -> Any:
        """The ASGI app to route ``route`` (a template) to."""
        return _Routed(self, route)

    async def payload(self, receive: Receive, headers: dict[str, str]) -> InferenceRequest:
        """Read and decode a request body: JSON, or JSON + binary tensors (Triton's extension)."""
        body = await self.reader.read(receive, headers)
        declared = headers.get(HEADER_LENGTH)
        if declared is None:
            if len(body) >= MIN_ARRAY_BYTES:
                # Large numeric tensors: their numbers parsed in C (same answers, errors too).
                fast = self._numbers.decode(body)
                if fast is not None:
                    return fast
            payload: InferenceRequest = decode(self._decode_request, body)
            return payload
        return decode_binary_request(body, header_length(declared), self._decode_json_part)

    async def read(self, call: Call, receive: Receive, headers: dict[str, str]) -> InferenceRequest:
        """:meth:`payload`, recording a client that left mid-body as status 499 (nginx's)."""
        try:
            return await self.payload(receive, headers)
        except ClientGone:
            call.status = CLIENT_GONE
            raise

    def _decode_json_part(self, data: bytes) -> InferenceRequest:
        payload: InferenceRequest = decode(self._decode_request, data)
        return payload

    def call(self, scope: Scope, route: str, headers: dict[str, str], stream: bool) -> Call:
        """The pipeline's call of a request to ``route``."""
        params = scope["path_params"]
        call = Call(
            transport="rest",
            route=route,
            path=scope["path"],
            headers=headers,
            model=params["name"],
            version=params.get("version"),
            stream=stream,
        )
        call.request_id = headers.get("x-request-id", "")
        return call


class _Routed:
    """The endpoint bound to the route template it serves (which names it in records)."""

    __slots__ = ("endpoint", "route")

    def __init__(self, endpoint: InferEndpoint, route: str) -> None:
        self.endpoint = endpoint
        self.route = route

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        endpoint = self.endpoint
        headers = scope_headers(scope)
        call = endpoint.call(scope, self.route, headers, stream=False)
        await endpoint.server.handle(call, _Exchange(endpoint, receive, send, headers))


class _Body:
    """What an exchange of a REST request holds: the endpoint, the ASGI channels, the headers."""

    __slots__ = ("endpoint", "headers", "receive_", "send_")

    def __init__(
        self, endpoint: InferEndpoint, receive: Receive, send: Send, headers: dict[str, str]
    ) -> None:
        self.endpoint = endpoint
        self.receive_ = receive
        self.send_ = send
        self.headers = headers

    async def _whole(self, call: Call, status: int, body: bytes, headers: Headers) -> None:
        """Send a whole answer (start and body) and record its status."""
        call.status = str(status)
        await self.send_({"type": "http.response.start", "status": status, "headers": headers})
        await self.send_({"type": "http.response.body", "body": body})


class _Exchange(_Body):
    """One ``infer`` request: the body in, one answer out."""

    __slots__ = ("payload",)

    #: The request, once read (an answer is only sent after it).
    payload: InferenceRequest

    async def receive(self, call: Call) -> InferenceRequest | None:
        self.payload = await self.endpoint.read(call, self.receive_, self.headers)
        return self.payload

    async def send(self, call: Call, response: InferenceResponse) -> None:
        params = self.payload.parameters
        status, body, headers = _answer(response, params or {})
        await self._send(call, status, body, headers)

    async def send_error(self, call: Call, error: errors.InferkitError) -> None:
        await self._send(call, *error_parts(error))

    async def _send(self, call: Call, status: int, body: bytes, headers: Headers) -> None:
        if call.resolved:
            headers.append((b"server-timing", _server_timing(call)))
        await self._whole(call, status, body, headers)


class StreamEndpoint:
    """``POST /v2/models/{name}[/versions/{version}]/infer_stream`` (and ``generate_stream``).

    MLServer's REST streaming: one request in, the model's responses out as Server-Sent Events
    (``text/event-stream``), one ``data: {json}`` event per response. An error before the first
    response is a plain error answer with its status; after it, an ``event: error`` whose data
    is ``{"error": message, "code": CODE}``, and the stream ends. A client that disconnects
    cancels the call, which closes the model's iterator.
    """

    def __init__(self, endpoint: InferEndpoint) -> None:
        self.endpoint = endpoint

    def for_route(self, route: str) -> Any:
        """The ASGI app to route ``route`` (a template) to."""
        return _RoutedStream(self.endpoint, route)


class _RoutedStream(_Routed):
    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        endpoint = self.endpoint
        headers = scope_headers(scope)
        call = endpoint.call(scope, self.route, headers, stream=True)
        events = _EventStream(endpoint, receive, send, headers)
        try:
            await endpoint.server.handle_stream(call, events)
        except asyncio.CancelledError:
            if not events.gone:
                raise
            _uncancel()
            return  # the client went away: the call was cancelled for that, and recorded
        finally:
            events.stop_watching()
        await events.finish()


def _uncancel() -> None:
    # The cancellation was ours (the client left); the task itself goes on (Python >= 3.11
    # counts cancellations, and a pending one would break later awaits of this task).
    task = asyncio.current_task()
    if task is not None and hasattr(task, "uncancel"):
        task.uncancel()


class _EventStream(_Body):
    """One ``infer_stream`` request: the body in, Server-Sent Events out."""

    __slots__ = ("gone", "read", "started", "watcher")

    def __init__(
        self, endpoint: InferEndpoint, receive: Receive, send: Send, headers: dict[str, str]
    ) -> None:
        super().__init__(endpoint, receive, send, headers)
        self.read = False
        self.started = False
        #: The client disconnected (and the call was cancelled for it).
        self.gone = False
        self.watcher: asyncio.Task[None] | None = None

    async def receive(self, call: Call) -> InferenceRequest | None:
        if self.read:
            return None  # one request per REST stream
        self.read = True
        payload = await self.endpoint.read(call, self.receive_, self.headers)
        task = asyncio.current_task()
        assert task is not None
        # With the body read, the next thing ASGI can tell is the client leaving.
        self.watcher = asyncio.get_running_loop().create_task(self._watch(task))
        return payload

    async def _watch(self, task: asyncio.Task[Any]) -> None:
        while (await self.receive_())["type"] != "http.disconnect":
            pass
        self.gone = True
        task.cancel()

    def stop_watching(self) -> None:
        """Stop waiting for the client to leave (the call is over)."""
        if self.watcher is not None:
            self.watcher.cancel()

    async def send(self, call: Call, response: InferenceResponse) -> None:
        if not self.started:
            await self._start(call)
        await self._event(b"data: " + encode_json(response) + b"\n\n")

    async def send_error(self, call: Call, error: errors.InferkitError) -> None:
        if self.started:
            await self._event(b"event: error\ndata: " + error_body(error) + b"\n\n")
            return
        self.started = True
        await self._whole(call, *error_parts(error))
        self.send_ = _closed

    async def _start(self, call: Call) -> None:
        self.started = True
        call.status = "200"
        headers = [
            (b"content-type", b"text/event-stream"),
            (b"cache-control", b"no-cache"),
            # Proxies that buffer (nginx) would hold the events back until the end.
            (b"x-accel-buffering", b"no"),
        ]
        await self.send_({"type": "http.response.start", "status": 200, "headers": headers})

    async def _event(self, data: bytes) -> None:
        await self.send_({"type": "http.response.body", "body": data, "more_body": True})

    async def finish(self) -> None:
        """End the response (after the last event)."""
        if self.started:
            await self.send_({"type": "http.response.body", "body": b""})


async def _closed(message: Message) -> None:
    # A stream refused before its first event was answered whole; nothing more goes out.
    return None


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


def _server_timing(call: Call) -> bytes:
    # Milliseconds. "queue" is everything but predict (reading, decoding, validation, encoding
    # and, for a batching model, the wait for a batch); "batch" is that wait alone; "compute" is
    # predict (a batch's, for a batching model).
    total_ms = (time.perf_counter() - call.started) * 1000
    compute_ms = call.compute_s * 1000
    timing = f"queue;dur={max(total_ms - compute_ms, 0.0):.3f}, compute;dur={compute_ms:.3f}"
    if call.batched:
        timing += f", batch;dur={call.queue_s * 1000:.3f}"
    return timing.encode()

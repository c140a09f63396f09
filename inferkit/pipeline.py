"""The request pipeline: how the core answers a call, whatever transport carried it.

A transport translates bytes into requests and responses into bytes; everything else about a
call belongs to the core, so that REST, gRPC and any transport added later report the same
facts the same way. The pieces:

- :class:`Call`: one call's context as the transport knows it (its name, the route, the
  headers, a deadline, the model named in the URL), completed by the core as the call goes on
  (the resolved version, the request id, timings, the outcome). It ends as one outcome record,
  :class:`~inferkit.events.InferenceFinished`, sent to the server's listeners (statistics,
  metrics, the access log).
- :class:`Exchange`: the transport's half of a call: receive the next request, send a
  response, send an error. ``Server.handle`` and ``Server.handle_stream`` drive it: they decide
  what happens when, catch every error, and time the call.
- :class:`CallHook`: code that runs around every call, e.g. tracing (a span opened when the
  call starts, its trace context handed to the model, closed with the outcome).

Nothing here does I/O; the transports' exchanges do.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import (
    AsyncGenerator,
    AsyncIterable,
    AsyncIterator,
    Awaitable,
    Callable,
    Iterator,
)
from typing import Any, Protocol

from .errors import InferkitError, InvalidRequest
from .events import Event, InferenceFinished, Listener
from .logs import escape_for_log
from .types import InferenceRequest, InferenceResponse

__all__ = ["UNEXPECTED", "Call", "CallHook", "ClientGone", "Exchange", "Pipeline", "Refuse"]

log = logging.getLogger("inferkit.server")

#: What a client is told about an unexpected exception (its text goes to the log only).
UNEXPECTED = "Internal server error"


class ClientGone(Exception):
    """The client went away (raised by a transport's exchange): nobody is left to answer."""


#: Answers a request of a stream that cannot be admitted (the stream then goes on).
Refuse = Callable[[InferkitError], Awaitable[None]]


class Call:
    """One call through the pipeline: what the transport knows, then what the core learned.

    A transport builds it with what arrived (``transport``, ``route``, ``path``, ``headers``,
    ``deadline``, and ``model``/``version`` when the URL names them) and may fill ``model`` /
    ``version`` in :meth:`Exchange.receive` when the message names them (gRPC). The core sets
    the rest. ``headers`` become the request's ``parameters["headers"]`` (MLServer's way of
    showing a model its request headers); ``None`` adds nothing.
    """

    __slots__ = (
        "batch_size",
        "batched",
        "code",
        "compute_s",
        "deadline",
        "headers",
        "model",
        "path",
        "queue_s",
        "request_id",
        "resolved",
        "responses",
        "route",
        "started",
        "status",
        "stream",
        "transport",
        "version",
    )

    def __init__(
        self,
        *,
        transport: str = "",
        route: str = "",
        path: str = "",
        headers: dict[str, str] | None = None,
        deadline: float | None = None,
        model: str = "",
        version: str | None = None,
        stream: bool = False,
    ) -> None:
        self.transport = transport
        self.route = route
        self.path = path or route
        self.headers = headers
        #: ``time.monotonic()`` after which the client no longer waits (e.g. a gRPC deadline).
        self.deadline = deadline
        self.model = model
        #: The version asked for, then the resolved one ("" for an unversioned model).
        self.version = version
        self.stream = stream
        self.started = time.perf_counter()
        #: Whether the call reached a model (its name and version resolved).
        self.resolved = False
        self.request_id = ""
        self.status = ""
        self.code = ""
        self.compute_s = 0.0
        #: Seconds the request waited for a batch (a batching model only).
        self.queue_s = 0.0
        self.batched = False
        self.batch_size = 1
        self.responses = 0

    def fork(self) -> Call:
        """A new call in the same context (the model the URL named, too): one message of a
        stream answered on its own."""
        call = Call(
            transport=self.transport,
            route=self.route,
            path=self.path,
            headers=None if self.headers is None else dict(self.headers),
            deadline=self.deadline,
            model=self.model,
            version=self.version,
            stream=self.stream,
        )
        call.request_id = self.request_id
        return call

    def remaining(self) -> float | None:
        """Seconds left before the deadline (negative once passed), ``None`` without one."""
        return None if self.deadline is None else self.deadline - time.monotonic()

    def fail(self, exc: BaseException) -> None:
        """Record how the call failed: the error's ``code``, and the model on the error."""
        if isinstance(exc, InferkitError):
            self.code = exc.code
            if self.resolved:
                exc.model, exc.version = exc.model or self.model, exc.version or self.version
        elif isinstance(exc, ClientGone | GeneratorExit) or _cancelled(exc):
            self.code = "CANCELLED"
        else:
            self.code = "INTERNAL"

    def record(self) -> InferenceFinished:
        """The outcome record of the call, as listeners get it."""
        return InferenceFinished(
            model=self.model,
            version=self.version or "",
            duration_s=time.perf_counter() - self.started,
            compute_s=self.compute_s,
            ok=not self.code,
            code=self.code,
            found=self.resolved,
            batch_size=self.batch_size,
            transport=self.transport,
            route=self.route,
            path=self.path,
            status=self.status,
            request_id=self.request_id,
            stream=self.stream,
            responses=self.responses,
            batched=self.batched,
            queue_s=self.queue_s,
        )


def _cancelled(exc: BaseException) -> bool:
    # asyncio.CancelledError, without importing asyncio's exceptions by name here.
    return type(exc).__name__ == "CancelledError"


class Exchange(Protocol):
    """A transport's half of one call: it reads and writes, the core decides.

    Each method may raise :class:`ClientGone` when the client went away. ``send`` and
    ``send_error`` set ``call.status`` to the transport's status of what they sent.
    """

    async def receive(self, call: Call) -> InferenceRequest | None:
        """The next request of the call (``None``: the client sends no more).

        Raises an :class:`~inferkit.errors.InferkitError` for a request that cannot be read
        (too large, malformed); a stream goes on with the next one.
        """
        ...

    async def send(self, call: Call, response: InferenceResponse) -> None:
        """Send one response."""
        ...

    async def send_error(self, call: Call, error: InferkitError) -> None:
        """Send an error (the whole answer of a unary call; one message of a stream)."""
        ...


class CallHook(Protocol):
    """Code run around every call (``Server.add_hook``): e.g. a tracer.

    ``started`` runs before the core reads the request and may change ``call.headers`` (the
    model sees them); what it returns comes back to ``finished`` with the outcome record.
    """

    def started(self, call: Call) -> Any:
        """The call begins."""
        ...

    def finished(self, call: Call, record: InferenceFinished, token: Any) -> None:
        """The call ended with ``record``; ``token`` is what :meth:`started` returned."""
        ...


class Pipeline:
    """The calls of one server: their hooks and listeners, and how each call is driven.

    The server gives it the three things only the core can do: run one request on the
    model a call names (``infer``), run a stream of requests through it (``stream``), and
    tell whether that model has its own ``predict_stream`` (``natively``). The pipeline does
    the rest: it drives a transport's :class:`Exchange`, catches every error and sends it
    (an unexpected one as a generic INTERNAL error, its text to the log only), and ends
    every call with one outcome record.
    """

    def __init__(
        self,
        listeners: list[Listener],
        *,
        infer: Callable[[Call, InferenceRequest], Awaitable[InferenceResponse]],
        stream: Callable[
            [Call, AsyncIterable[InferenceRequest], Refuse | None],
            AsyncGenerator[InferenceResponse, None],
        ],
        natively: Callable[[Call], bool],
    ) -> None:
        self.listeners = listeners
        self.hooks: list[CallHook] = []
        #: Unary calls of transports in hand: from the start of reading the request to the
        #: end of sending the answer (the batcher asks whether more requests are on the way).
        self.active = 0
        self._infer = infer
        self._stream = stream
        self._natively = natively

    def emit(self, event: Event) -> None:
        """Send an event to every listener; a failing listener is logged, never raised."""
        for listener in self.listeners:
            try:
                listener(event)
            except Exception:
                log.exception("Event listener %r failed", listener)

    def begin(self, call: Call) -> list[tuple[CallHook, Any]] | None:
        """Run the hooks' ``started``; returns the hooks and their tokens for :meth:`end`."""
        if not self.hooks:
            return None
        return [(hook, _guarded(hook.started, call)) for hook in self.hooks]

    @contextlib.contextmanager
    def recording(self, call: Call) -> Iterator[Call]:
        """The block as one call of its own (a direct ``Server`` call): hooks around it, its
        failure recorded, and its outcome record emitted at the end."""
        tokens = self.begin(call)
        try:
            yield call
        except BaseException as exc:
            call.fail(exc)
            raise
        finally:
            self.end(call, tokens)

    def end(
        self, call: Call, tokens: list[tuple[CallHook, Any]] | None, *, emit: bool = True
    ) -> None:
        """Make the outcome record, run the hooks' ``finished`` (last first) and emit it
        (unless ``emit`` is false: the hooks still end what they started)."""
        record = call.record()
        if tokens is not None:
            for hook, token in reversed(tokens):
                _guarded(hook.finished, call, record, token)
        if emit:
            self.emit(record)

    async def handle(self, call: Call, exchange: Exchange) -> None:
        """Answer one unary call of a transport: receive, infer, send, and record the outcome.

        Errors are sent through the exchange, never raised: an unexpected one is logged once
        and sent as a generic INTERNAL error. A client that went away ends the call silently.
        """
        tokens = self.begin(call)
        self.active += 1
        try:
            request = await exchange.receive(call)
            if request is None:
                raise InvalidRequest("The call carried no request")
            await self._answer(call, exchange, request)
        except BaseException as exc:
            await self._fail(call, exchange, exc)
        finally:
            self.active -= 1
            self.end(call, tokens)

    async def handle_stream(self, call: Call, exchange: Exchange) -> None:
        """Answer a stream call of a transport (gRPC ``ModelStreamInfer``, REST ``infer_stream``).

        The model named by the first request decides. If it has its own ``predict_stream``,
        the stream is that model's: every request goes to it (one naming another model is
        refused, and the stream goes on), its responses are sent as it yields them, an error
        it raises is sent and ends the stream; one outcome record for the stream. Otherwise
        each request is answered on its own, as Triton does: a failed one gets its error and
        the stream goes on; one outcome record per request. (A message that cannot be read at
        all is answered with its error and decides nothing.)
        """
        first = True
        while True:
            message = call.fork()
            try:
                request = await exchange.receive(message)
            except ClientGone:
                return
            except InferkitError as exc:  # this message only: it is answered, the stream goes on
                await self._refuse(message, exchange, exc)
                continue
            if request is None:
                return
            if first and self._natively(message):
                call.model, call.version = message.model, message.version
                await self._model_stream(call, exchange, request)
                return
            first = False  # request by request from now on, whatever later requests name
            message.started = time.perf_counter()  # waiting for the client is not the call's
            tokens = self.begin(message)
            try:
                await self._answer(message, exchange, request)
            except BaseException as exc:
                await self._fail(message, exchange, exc)
            finally:
                self.end(message, tokens)

    async def _answer(self, call: Call, exchange: Exchange, request: InferenceRequest) -> None:
        response = await self._infer(call, request)
        call.responses = 1
        await exchange.send(call, response)

    async def _fail(self, call: Call, exchange: Exchange, exc: BaseException) -> None:
        """Record a failed call and tell the client (cancellation propagates)."""
        call.fail(exc)
        if isinstance(exc, ClientGone):
            return
        if not isinstance(exc, Exception):
            raise exc  # cancelled: the client or the server gave up on the call
        if not isinstance(exc, InferkitError):
            log.error(
                "Unexpected error answering %s %s",
                call.transport,
                escape_for_log(call.path),
                exc_info=exc,
            )
            exc = InferkitError(UNEXPECTED)
        with contextlib.suppress(ClientGone):
            await exchange.send_error(call, exc)

    async def _refuse(self, message: Call, exchange: Exchange, exc: InferkitError) -> None:
        """One message of a stream answered with its error, and recorded as a call of its
        own; the stream goes on, and its own status and outcome are not the message's."""
        tokens = self.begin(message)
        await self._fail(message, exchange, exc)
        self.end(message, tokens)

    async def _model_stream(self, call: Call, exchange: Exchange, first: InferenceRequest) -> None:
        """A stream given whole to a model's own ``predict_stream``."""
        tokens = self.begin(call)
        asked = (call.model, call.version or None)

        async def refuse(exc: InferkitError, message: Call | None = None) -> None:
            if message is None:  # a request the feed did not admit: one of the stream's
                message = call.fork()
                message.resolved = call.resolved
            await self._refuse(message, exchange, exc)

        async def requests() -> AsyncIterator[InferenceRequest]:
            request: InferenceRequest | None = first
            while request is not None:
                yield request
                request = await self._next_of_stream(call, exchange, asked, refuse)

        try:
            stream = self._stream(call, requests(), refuse)
            async with contextlib.aclosing(stream):
                async for response in stream:
                    await exchange.send(call, response)
        except BaseException as exc:
            await self._fail(call, exchange, exc)
        finally:
            # A stream that carried nothing the model read (its requests all refused, each
            # recorded on its own) and failed in nothing has no outcome of its own.
            self.end(call, tokens, emit=bool(call.batch_size or call.responses or call.code))

    async def _next_of_stream(
        self,
        call: Call,
        exchange: Exchange,
        asked: tuple[str, str | None],
        refuse: Callable[[InferkitError, Call], Awaitable[None]],
    ) -> InferenceRequest | None:
        """The next request for the stream's model; others are refused, the stream goes on."""
        while True:
            probe = call.fork()
            try:
                request = await exchange.receive(probe)
            except InferkitError as exc:
                await refuse(exc, probe)
                continue
            if request is None or (probe.model, probe.version or None) == asked:
                return request
            error = InvalidRequest(
                f"This stream serves model '{asked[0]}' (named by its first request); "
                f"send requests for model '{probe.model}' on a stream of their own"
            )
            await refuse(error, probe)


def _guarded(func: Callable[..., Any], *args: Any) -> Any:
    # A broken hook must not break the call it observes.
    try:
        return func(*args)
    except Exception:
        log.exception("Call hook %r failed", func)
        return None

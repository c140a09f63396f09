"""The V2 gRPC services of a ``Server``: ``create_grpc_service(server)`` for grpclib.

``InferenceService`` is ``inference.GRPCInferenceService`` (KServe's and Triton's V2 service);
``RepositoryService`` is MLServer's older ``inference.model_repository.ModelRepositoryService``,
kept so clients written against it keep working. Both subclass the betterproto2-generated
bases, and each RPC only translates: decode with :mod:`.convert` (ModelInfer and
ModelStreamInfer: with :mod:`._wire`, straight from the bytes), call one ``Server`` method,
encode. The inference RPCs are exchanges of the core's request pipeline
(``Server.handle`` / ``Server.handle_stream``), which records, logs and traces each call; the
service only reads and writes messages. Every handler runs inside :func:`.status.guard` (the
one error table), behind a size limit checked before a message is parsed, is counted while
in flight so the listener can drain on shutdown, and is recorded in the server's request
metrics (``inferkit_grpc_requests_total{method,code}`` and its latency histogram).

The services own no loop and no socket: put them in any grpclib ``Server``::

    grpclib.server.Server(create_grpc_service(server))
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable, Iterator, Mapping
from typing import Any

import h2.exceptions
from grpclib.const import Handler
from grpclib.exceptions import GRPCError, ProtocolError, StreamTerminatedError
from grpclib.server import Stream

from inferkit import errors
from inferkit.metrics import MLServerGrpcMethod, MLServerGrpcMetrics, RequestMetrics
from inferkit.pipeline import Call, ClientGone
from inferkit.server import Server
from inferkit.settings import Settings
from inferkit.types import InferenceRequest, InferenceResponse

from . import _strict, _wire
from ._generated import inference as pb
from ._generated.inference import model_repository as mr
from .convert import (
    index_request_from_proto,
    index_to_model_repository_proto,
    index_to_proto,
    model_metadata_to_proto,
    model_name_of,
    model_ref,
    response_metadata,
    server_metadata_to_proto,
    statistics_to_proto,
)
from .health import create_health
from .status import guard, send_error, status_for

__all__ = ["InferenceService", "Inflight", "RepositoryService", "create_grpc_service"]

log = logging.getLogger("inferkit.grpc")

MODEL_INFER = "/inference.GRPCInferenceService/ModelInfer"
MODEL_STREAM_INFER = "/inference.GRPCInferenceService/ModelStreamInfer"


def create_grpc_service(server: Server, settings: Settings | None = None) -> list[Any]:
    """The gRPC services of ``server``: V2 inference, MLServer's repository service, health.

    Settings default to the server's; ``grpc_max_message_length`` (or else
    ``max_request_size``) bounds the size of a received message. Tracing, like the access log
    and metrics, is the server's: ``server.add_hook(tracer)`` traces every transport.
    """
    settings = settings if settings is not None else server.settings
    limit = settings.grpc_max_message_length or settings.max_request_size
    inflight = Inflight()
    # MLServer's gRPC metric names too (``metrics_compat``), recorded beside inferkit's own.
    mlserver = settings.metrics_compat == "mlserver" and bool(settings.metrics_endpoint)
    services: list[Any] = [
        InferenceService(
            server, max_message_length=limit, inflight=inflight, mlserver_metrics=mlserver
        ),
        RepositoryService(
            server, max_message_length=limit, inflight=inflight, mlserver_metrics=mlserver
        ),
    ]
    # grpclib's health service too: behind the guard, the size limit and strict parsing.
    health = [_Protected(service, limit) for service in create_health(server, services)]
    return [*services, *health]


class Inflight:
    """Counts the requests being answered, so a listener can wait for them before closing."""

    def __init__(self) -> None:
        self.count = 0
        self._idle = asyncio.Event()
        self._idle.set()

    def enter(self) -> None:
        """Count one more request in flight (each ``enter`` needs its ``leave``)."""
        self.count += 1
        self._idle.clear()

    def leave(self) -> None:
        """Count one request fewer in flight."""
        self.count -= 1
        if not self.count:
            self._idle.set()

    @contextlib.contextmanager
    def track(self) -> Iterator[None]:
        """Count the block as one request in flight."""
        self.enter()
        try:
            yield
        finally:
            self.leave()

    async def idle(self) -> None:
        """Return once no request is in flight."""
        await self._idle.wait()


class _Strict:
    """A message type for grpclib's codec that answers a message that does not parse as an
    invalid request, naming the type expected and the field at fault (grpclib's codec calls
    ``FromString`` on the request type of the handler). Generated classes are checked by
    :mod:`._strict` first: betterproto2's own parser accepts garbage."""

    __slots__ = ("message_type",)

    def __init__(self, message_type: Any) -> None:
        self.message_type = message_type

    def FromString(self, data: bytes) -> Any:  # the protobuf API's name
        name = self.message_type.__name__
        try:
            _strict.check(self.message_type, data)  # betterproto2 alone takes garbage
        except ValueError as exc:
            raise errors.InvalidRequest(f"Expected a `{name}` message: {exc}") from None
        try:
            return self.message_type.FromString(data)
        except Exception:
            raise errors.InvalidRequest(
                f"Expected a `{name}` message, got {len(data)} bytes that do not parse"
            ) from None


class _TooLarge(errors.PayloadTooLarge):
    """A message refused on its declared length, before its body is read."""


class _Compressed(errors.InvalidRequest):
    """A compressed message: grpclib has no decompression, so it is refused unread."""


class _Unreadable(errors.InvalidRequest):
    """The request ended inside a message: no later message can be found, so it ends a
    stream too (the others are answered one message at a time, and the stream goes on)."""


#: Errors found in the framing of a message, before its body is read: they end a unary call
#: at once (see :func:`_bounded`).
_UNREAD = (_TooLarge, _Compressed, _Unreadable)

# Bytes of a refused message discarded per read, so skipping one holds no more than this
# (and the flow control window) in memory.
_SKIP_CHUNK = 1 << 16


class _BoundedReader:
    """The ``recv_data`` of grpclib's protocol stream for one call, refusing an oversize (or
    compressed) message on its length prefix, before its body is read.

    grpclib reads a message as its 5-byte prefix (compressed flag, big-endian length), then
    ``recv_data(length)``, which buffers the whole body (acknowledging each DATA frame as it
    arrives, so HTTP/2 flow control never holds the client back) before the codec sees it.
    So the limit applies to the prefix: calls alternate prefix, body, and a refused prefix
    raises out of grpclib's read, whose body read never happens. A stream goes on after the
    refused message: its body is discarded in small reads before the next prefix is read.
    """

    __slots__ = ("limit", "prefix", "read", "skip")

    def __init__(self, read: Callable[[int], Awaitable[bytes]], limit: int) -> None:
        self.read = read
        self.limit = limit
        self.prefix = True
        self.skip = 0  # bytes of a refused message still to discard

    async def __call__(self, size: int) -> bytes:
        try:
            while self.skip:
                self.skip -= len(await self.read(min(self.skip, _SKIP_CHUNK)))
            data = await self.read(size)
        except AssertionError:  # grpclib's Buffer: the stream ended inside what was asked for
            raise _Unreadable("The request ended inside a message (truncated)") from None
        if not self.prefix:
            self.prefix = True
        elif data:  # an empty read is the end of the stream: the next read is a prefix again
            length = int.from_bytes(data[1:5], "big")
            if data[0]:
                self.skip = length
                raise _Compressed("Compressed messages are not supported: send them uncompressed")
            if length > self.limit:
                self.skip = length
                raise _TooLarge(
                    f"Message of {length} bytes is larger than the limit of {self.limit} bytes "
                    "(grpc_max_message_length)"
                )
            self.prefix = False
        return data


def _bounded(
    func: Callable[[Stream[Any, Any]], Any], limit: int
) -> Callable[[Stream[Any, Any]], Any]:
    """``func`` with its messages read through a :class:`_BoundedReader`; a refused message
    that ends the call (always, for a unary one) makes a client still sending stop."""

    async def bounded(stream: Stream[Any, Any]) -> None:
        # grpclib has no size limit and no hook before a body is read but the protocol
        # stream's own ``recv_data``, shadowed here for this call only.
        protocol = stream._stream
        protocol.recv_data = _BoundedReader(protocol.recv_data, limit)  # type: ignore[method-assign]
        try:
            await func(stream)
        except _UNREAD as exc:
            await send_error(stream, exc)
            # Trailers sent, the body maybe still coming: RST_STREAM(NO_ERROR) asks the client
            # to stop sending (RFC 9113 section 8.1), as grpc-go does, rather than stream the
            # rest to a server that drops it. A client that already ended its side needs none.
            with contextlib.suppress(ProtocolError, h2.exceptions.H2Error):
                await stream.cancel()

    return bounded


class _Protected:
    """A service of grpclib's own (health) behind the error guard, the size limit and strict
    parsing, as inferkit's services are (without them a message that does not parse is
    logged with its traceback and answered UNKNOWN)."""

    def __init__(self, service: Any, limit: int) -> None:
        self.service = service
        self.limit = limit

    def __mapping__(self) -> dict[str, Handler]:
        return {
            path: handler._replace(
                func=guard(_bounded(handler.func, self.limit), path),
                request_type=_Strict(handler.request_type),
            )
            for path, handler in self.service.__mapping__().items()
        }


def _guarded(
    mapping: Mapping[str, Handler],
    limit: int,
    inflight: Inflight,
    requests: RequestMetrics,
    mlserver: MLServerGrpcMetrics | None = None,
) -> dict[str, Handler]:
    """Each handler behind the error guard and the size limit (checked on each message's length
    prefix, before its body is read), counted in the request metrics and (unary ones) in
    flight."""
    wrapped = {}
    for path, handler in mapping.items():
        # Streams with a client side count their messages in flight themselves, if at all.
        tracked = None if handler.cardinality.client_streaming else inflight
        card = handler.cardinality
        compat = None
        if mlserver is not None:
            compat = mlserver.method(path, card.client_streaming, card.server_streaming)
        func = _measured(handler.func, path.rsplit("/", 1)[1], requests, tracked, compat)
        wrapped[path] = handler._replace(
            func=guard(_bounded(func, limit), path), request_type=_Strict(handler.request_type)
        )
    return wrapped


def _measured(
    func: Callable[[Stream[Any, Any]], Any],
    method: str,
    requests: RequestMetrics,
    inflight: Inflight | None,
    mlserver: MLServerGrpcMethod | None = None,
) -> Callable[[Stream[Any, Any]], Any]:
    """``func`` recorded in ``inferkit_grpc_requests_total{method,code}`` and its histogram,
    and under MLServer's names too when ``mlserver`` is given.

    Inside the guard, so the exception tells the status the guard is about to send.
    """

    # enter/leave rather than track(): a generator-based context manager per request costs
    # more than the rest of this wrapper.
    async def measured(stream: Stream[Any, Any]) -> None:
        started = requests.started()
        if mlserver is not None:
            mlserver.started()
        code = "CANCELLED"  # cancelled, or the client went away mid-call
        if inflight is not None:
            inflight.enter()
        try:
            await func(stream)
            code = "OK"
        except GRPCError as exc:
            code = exc.status.name
            raise
        except StreamTerminatedError:
            raise
        except Exception as exc:
            code = status_for(exc).name
            raise
        finally:
            if inflight is not None:
                inflight.leave()
            requests.finished(started, method, code)
            if mlserver is not None:
                mlserver.finished(started, code)

    return measured


class InferenceService(pb.GrpcInferenceServiceBase):
    """The V2 ``inference.GRPCInferenceService`` answered by a ``Server``."""

    def __init__(
        self,
        server: Server,
        *,
        max_message_length: int,
        inflight: Inflight,
        mlserver_metrics: bool = False,
    ) -> None:
        self.server = server
        self.inflight = inflight
        self._limit = max_message_length
        self._requests = _request_metrics(server)
        self._mlserver = MLServerGrpcMetrics(server.metrics) if mlserver_metrics else None

    def __mapping__(self) -> dict[str, Handler]:
        mapping = super().__mapping__()
        # The infer RPCs take the stream itself: they read its metadata and may set trailers.
        # Their messages are read and written by ._wire, not by the generated classes.
        wire = {"request_type": _wire.ModelInferRequest, "reply_type": _wire.Encoded}
        mapping[MODEL_INFER] = mapping[MODEL_INFER]._replace(func=self._model_infer, **wire)
        mapping[MODEL_STREAM_INFER] = mapping[MODEL_STREAM_INFER]._replace(
            func=self._model_stream_infer, **wire
        )
        return _guarded(mapping, self._limit, self.inflight, self._requests, self._mlserver)

    # -- health and metadata -----------------------------------------------------------------

    async def server_live(self, message: pb.ServerLiveRequest) -> pb.ServerLiveResponse:
        return pb.ServerLiveResponse(live=await self.server.live())

    async def server_ready(self, message: pb.ServerReadyRequest) -> pb.ServerReadyResponse:
        return pb.ServerReadyResponse(ready=await self.server.ready())

    async def model_ready(self, message: pb.ModelReadyRequest) -> pb.ModelReadyResponse:
        return pb.ModelReadyResponse(ready=await self.server.model_ready(*model_ref(message)))

    async def server_metadata(self, message: pb.ServerMetadataRequest) -> pb.ServerMetadataResponse:
        return server_metadata_to_proto(await self.server.metadata())

    async def model_metadata(self, message: pb.ModelMetadataRequest) -> pb.ModelMetadataResponse:
        return model_metadata_to_proto(await self.server.model_metadata(*model_ref(message)))

    async def model_statistics(
        self, message: pb.ModelStatisticsRequest
    ) -> pb.ModelStatisticsResponse:
        name, version = model_ref(message)
        return statistics_to_proto(await self.server.model_statistics(name or None, version))

    # -- inference ---------------------------------------------------------------------------

    async def _model_infer(self, stream: Stream[_wire.ModelInferRequest, _wire.Encoded]) -> None:
        exchange = _Unary(stream)
        await self.server.handle(_call(stream, MODEL_INFER), exchange)
        if exchange.error is not None:
            raise exchange.error  # the guard ends the call with its status (the one table)

    async def _model_stream_infer(
        self, stream: Stream[_wire.ModelInferRequest, _wire.Encoded]
    ) -> None:
        # Answers go out as messages, errors included (``error_message``), as in Triton; the
        # call itself ends OK unless the client went away.
        exchange = _Streaming(stream, self.inflight)
        try:
            await self.server.handle_stream(_call(stream, MODEL_STREAM_INFER, True), exchange)
        finally:
            exchange.idle()
        if exchange.fatal is not None:
            raise exchange.fatal  # a message that could not be read ends the call with its status

    # -- repository --------------------------------------------------------------------------

    async def repository_index(
        self, message: pb.RepositoryIndexRequest
    ) -> pb.RepositoryIndexResponse:
        query = index_request_from_proto(message)
        return index_to_proto(await self.server.index(query.ready, rescan=True))

    async def repository_model_load(
        self, message: pb.RepositoryModelLoadRequest
    ) -> pb.RepositoryModelLoadResponse:
        name = await _model_name(self.server, message)
        await self.server.load(name)
        return pb.RepositoryModelLoadResponse(model_name=name, is_loaded=True)

    async def repository_model_unload(
        self, message: pb.RepositoryModelUnloadRequest
    ) -> pb.RepositoryModelUnloadResponse:
        name = await _model_name(self.server, message)
        await self.server.unload(name)
        return pb.RepositoryModelUnloadResponse(model_name=name, is_unloaded=True)


class RepositoryService(mr.ModelRepositoryServiceBase):
    """MLServer's ``inference.model_repository.ModelRepositoryService`` answered by a Server."""

    def __init__(
        self,
        server: Server,
        *,
        max_message_length: int,
        inflight: Inflight,
        mlserver_metrics: bool = False,
    ) -> None:
        self.server = server
        self.inflight = inflight
        self._limit = max_message_length
        self._requests = _request_metrics(server)
        self._mlserver = MLServerGrpcMetrics(server.metrics) if mlserver_metrics else None

    def __mapping__(self) -> dict[str, Handler]:
        return _guarded(
            super().__mapping__(), self._limit, self.inflight, self._requests, self._mlserver
        )

    async def repository_index(
        self, message: mr.RepositoryIndexRequest
    ) -> mr.RepositoryIndexResponse:
        query = index_request_from_proto(message)
        return index_to_model_repository_proto(await self.server.index(query.ready, rescan=True))

    async def repository_model_load(
        self, message: mr.RepositoryModelLoadRequest
    ) -> mr.RepositoryModelLoadResponse:
        await self.server.load(await _model_name(self.server, message))
        return mr.RepositoryModelLoadResponse()

    async def repository_model_unload(
        self, message: mr.RepositoryModelUnloadRequest
    ) -> mr.RepositoryModelUnloadResponse:
        await self.server.unload(await _model_name(self.server, message))
        return mr.RepositoryModelUnloadResponse()


def _request_metrics(server: Server) -> RequestMetrics:
    # The same families in the server's store for every service: a second service finds them.
    return RequestMetrics(server.metrics, "grpc", ("method", "code"))


def _call(stream: Stream[Any, Any], route: str, streaming: bool = False) -> Call:
    """The pipeline's call of an RPC: its metadata as headers, and its deadline."""
    metadata = stream.metadata
    # As on REST (and in MLServer), the model sees the call's headers in parameters.
    headers = {k: v for k, v in metadata.items() if isinstance(v, str)} if metadata else None
    deadline = None
    if stream.deadline is not None:
        deadline = time.monotonic() + stream.deadline.time_remaining()
    return Call(transport="grpc", route=route, headers=headers, deadline=deadline, stream=streaming)


class _Unary:
    """One ``ModelInfer`` call: a message in, a message (and trailers) out.

    An error is kept for the handler to raise, so that the guard answers it with the
    status, message and code of the one error table.
    """

    __slots__ = ("error", "raw", "stream")

    def __init__(self, stream: Stream[_wire.ModelInferRequest, _wire.Encoded]) -> None:
        self.stream = stream
        self.raw = False
        self.error: errors.InferkitError | None = None

    async def receive(self, call: Call) -> InferenceRequest | None:
        message = await _recv(self.stream)
        if message is None:
            return None
        self.raw = bool(message.raw_input_contents)  # a raw request is answered raw
        return _read(call, message)

    async def send(self, call: Call, response: InferenceResponse) -> None:
        trailers = response_metadata(response)
        reply = _wire.write_infer_response(response, raw=self.raw)
        try:
            await self.stream.send_message(_wire.Encoded(reply))
            if trailers:
                await self.stream.send_trailing_metadata(metadata=trailers)
        except StreamTerminatedError:
            raise ClientGone from None
        call.status = "OK"

    async def send_error(self, call: Call, error: errors.InferkitError) -> None:
        self.error = error
        call.status = status_for(error).name


class _Streaming:
    """One ``ModelStreamInfer`` call: messages in, messages out, each request counted in
    flight from its arrival to the next read (so a drain waits for answers, not for idle
    streams)."""

    __slots__ = ("counted", "fatal", "inflight", "raw", "stream")

    def __init__(
        self, stream: Stream[_wire.ModelInferRequest, _wire.Encoded], inflight: Inflight
    ) -> None:
        self.stream = stream
        self.inflight = inflight
        self.raw = False
        self.counted = False
        #: The error that ended the stream: no later message can be found after it.
        self.fatal: errors.InferkitError | None = None

    async def receive(self, call: Call) -> InferenceRequest | None:
        self.idle()
        try:
            message = await _recv(self.stream)
        except _Unreadable as exc:
            # Not one message's error (those are answered and the stream goes on): the stream
            # stops here, and the handler ends the call with this error's status.
            self.fatal = exc
            raise ClientGone from None
        if message is None:
            return None
        self.inflight.enter()
        self.counted = True
        self.raw = bool(message.raw_input_contents)
        return _read(call, message)

    def idle(self) -> None:
        """No request of this stream is being answered."""
        if self.counted:
            self.counted = False
            self.inflight.leave()

    async def send(self, call: Call, response: InferenceResponse) -> None:
        response_metadata(response)  # a stream has no trailers per message: headers dropped
        reply = _wire.write_infer_response(response, raw=self.raw)
        await self._send(_wire.write_stream_response(infer_response=reply))
        call.status = "OK"

    async def send_error(self, call: Call, error: errors.InferkitError) -> None:
        await self._send(_wire.write_stream_response(error.message))
        call.status = status_for(error).name

    async def _send(self, message: bytes) -> None:
        try:
            await self.stream.send_message(_wire.Encoded(message))
        except StreamTerminatedError:
            raise ClientGone from None


async def _recv(stream: Stream[_wire.ModelInferRequest, Any]) -> _wire.ModelInferRequest | None:
    try:
        return await stream.recv_message()
    except StreamTerminatedError:
        raise ClientGone from None


def _read(call: Call, message: _wire.ModelInferRequest) -> InferenceRequest:
    """The request of a message, and the model it names into the call."""
    call.model, call.version = message.model_name, message.model_version or None
    return _wire.request_of(message)


async def _model_name(
    server: Server,
    message: pb.RepositoryModelLoadRequest
    | pb.RepositoryModelUnloadRequest
    | mr.RepositoryModelLoadRequest
    | mr.RepositoryModelUnloadRequest,
) -> str:
    # Only KServe's numbering needs the known names (field 1 holds the model); the index also
    # picks up models added to the repository folder since start-up, as load does.
    known: set[str] = set()
    if not message.model_name:
        known = {item.name for item in await server.index(rescan=True)}
    return model_name_of(message, known.__contains__)

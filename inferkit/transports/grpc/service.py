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
from collections.abc import Callable, Iterator, Mapping
from typing import Any

from grpclib.const import Handler
from grpclib.exceptions import GRPCError, StreamTerminatedError
from grpclib.server import Stream

from inferkit import errors
from inferkit.metrics import MLServerGrpcMethod, MLServerGrpcMetrics, RequestMetrics
from inferkit.pipeline import Call, ClientGone
from inferkit.server import Server
from inferkit.settings import Settings
from inferkit.types import InferenceRequest, InferenceResponse

from . import _wire
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
from .status import guard, status_for

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
    return [*services, *create_health(server, services)]


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


class _Limited:
    """A message type for grpclib's codec that refuses oversize messages before parsing them.

    grpclib has no message size limit of its own; its codec calls ``FromString`` on the
    request type of the handler, so the limit sits here, with the service.
    """

    __slots__ = ("limit", "message_type")

    def __init__(self, message_type: Any, limit: int) -> None:
        self.message_type = message_type
        self.limit = limit

    def FromString(self, data: bytes) -> Any:  # the protobuf API's name
        if len(data) > self.limit:
            raise errors.PayloadTooLarge(
                f"Message of {len(data)} bytes is larger than the limit of {self.limit} bytes "
                "(grpc_max_message_length)"
            )
        try:
            return self.message_type.FromString(data)
        except Exception:
            name = self.message_type.__name__
            raise errors.InvalidRequest(
                f"Expected a `{name}` message, got {len(data)} bytes that do not parse"
            ) from None


def _guarded(
    mapping: Mapping[str, Handler],
    limit: int,
    inflight: Inflight,
    requests: RequestMetrics,
    mlserver: MLServerGrpcMetrics | None = None,
) -> dict[str, Handler]:
    """Each handler behind the error guard and the size limit, counted in the request metrics
    and (unary ones) in flight."""
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
            func=guard(func, path), request_type=_Limited(handler.request_type, limit)
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

    __slots__ = ("counted", "inflight", "raw", "stream")

    def __init__(
        self, stream: Stream[_wire.ModelInferRequest, _wire.Encoded], inflight: Inflight
    ) -> None:
        self.stream = stream
        self.inflight = inflight
        self.raw = False
        self.counted = False

    async def receive(self, call: Call) -> InferenceRequest | None:
        self.idle()
        message = await _recv(self.stream)
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

"""The V2 gRPC services of a ``Server``: ``create_grpc_service(server)`` for grpclib.

``InferenceService`` is ``inference.GRPCInferenceService`` (KServe's and Triton's V2 service);
``RepositoryService`` is MLServer's older ``inference.model_repository.ModelRepositoryService``,
kept so clients written against it keep working. Both subclass the betterproto2-generated
bases, and each RPC only translates: decode with :mod:`.convert` (ModelInfer and
ModelStreamInfer: with :mod:`._wire`, straight from the bytes), call one ``Server`` method,
encode. Every handler runs inside :func:`.status.guard` (the one error table), behind a size
limit checked before a message is parsed, is counted while in flight so the listener can drain
on shutdown, and is recorded in the server's request metrics
(``inferkit_grpc_requests_total{method,code}`` and its latency histogram).

The services own no loop and no socket: put them in any grpclib ``Server``::

    grpclib.server.Server(create_grpc_service(server))
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Iterator, Mapping
from typing import TYPE_CHECKING, Any

from grpclib.const import Handler, Status
from grpclib.exceptions import GRPCError, StreamTerminatedError
from grpclib.server import Stream
from multidict import MultiDict

from inferkit import errors
from inferkit.logs import log_access
from inferkit.metrics import RequestMetrics
from inferkit.server import Server
from inferkit.settings import Settings
from inferkit.types import InferenceResponse

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
from .status import UNEXPECTED, guard, status_for

if TYPE_CHECKING:
    from ..tracing import InferenceTracer

__all__ = ["InferenceService", "Inflight", "RepositoryService", "create_grpc_service"]

log = logging.getLogger("inferkit.grpc")

MODEL_INFER = "/inference.GRPCInferenceService/ModelInfer"
MODEL_STREAM_INFER = "/inference.GRPCInferenceService/ModelStreamInfer"

# OpenTelemetry's RPC conventions: span name "service/method", rpc.* attributes.
_RPC = {"rpc.system": "grpc", "rpc.service": "inference.GRPCInferenceService"}
_INFER_SPAN = MODEL_INFER[1:]
_INFER_RPC = {**_RPC, "rpc.method": "ModelInfer"}
_STREAM_SPAN = MODEL_STREAM_INFER[1:]
_STREAM_RPC = {**_RPC, "rpc.method": "ModelStreamInfer"}


def create_grpc_service(
    server: Server, settings: Settings | None = None, *, tracer: InferenceTracer | None = None
) -> list[Any]:
    """The gRPC services of ``server``: V2 inference, MLServer's repository service, health.

    Settings default to the server's; ``grpc_max_message_length`` (or else
    ``max_request_size``) bounds the size of a received message. With a ``tracer``
    (:mod:`inferkit.transports.tracing`), every inference request gets an OpenTelemetry
    SERVER span.
    """
    settings = settings if settings is not None else server.settings
    limit = settings.grpc_max_message_length or settings.max_request_size
    inflight = Inflight()
    services: list[Any] = [
        InferenceService(server, max_message_length=limit, inflight=inflight, tracer=tracer),
        RepositoryService(server, max_message_length=limit, inflight=inflight),
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
    mapping: Mapping[str, Handler], limit: int, inflight: Inflight, requests: RequestMetrics
) -> dict[str, Handler]:
    """Each handler behind the error guard and the size limit, counted in the request metrics
    and (unary ones) in flight."""
    wrapped = {}
    for path, handler in mapping.items():
        # Streams with a client side count their messages in flight themselves, if at all.
        tracked = None if handler.cardinality.client_streaming else inflight
        func = _measured(handler.func, path.rsplit("/", 1)[1], requests, tracked)
        wrapped[path] = handler._replace(
            func=guard(func, path), request_type=_Limited(handler.request_type, limit)
        )
    return wrapped


def _measured(
    func: Callable[[Stream[Any, Any]], Any],
    method: str,
    requests: RequestMetrics,
    inflight: Inflight | None,
) -> Callable[[Stream[Any, Any]], Any]:
    """``func`` recorded in ``inferkit_grpc_requests_total{method,code}`` and its histogram.

    Inside the guard, so the exception tells the status the guard is about to send.
    """

    # enter/leave rather than track(): a generator-based context manager per request costs
    # more than the rest of this wrapper.
    async def measured(stream: Stream[Any, Any]) -> None:
        started = requests.started()
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

    return measured


class InferenceService(pb.GrpcInferenceServiceBase):
    """The V2 ``inference.GRPCInferenceService`` answered by a ``Server``.

    With a ``tracer``, each ``ModelInfer`` call and each ``ModelStreamInfer`` message gets an
    OpenTelemetry SERVER span.
    """

    def __init__(
        self,
        server: Server,
        *,
        max_message_length: int,
        inflight: Inflight,
        tracer: InferenceTracer | None = None,
    ) -> None:
        self.server = server
        self.inflight = inflight
        self.tracer = tracer
        self._limit = max_message_length
        self._requests = _request_metrics(server)

    def __mapping__(self) -> dict[str, Handler]:
        mapping = super().__mapping__()
        # The infer RPCs take the stream itself: they read its metadata and may set trailers.
        # Their messages are read and written by ._wire, not by the generated classes.
        # Tracing picks its handler here, once: without a tracer, nothing changes per call.
        wire = {"request_type": _wire.ModelInferRequest, "reply_type": _wire.Encoded}
        infer = self._model_infer_rpc if self.tracer is None else self._traced_model_infer_rpc
        mapping[MODEL_INFER] = mapping[MODEL_INFER]._replace(func=infer, **wire)
        mapping[MODEL_STREAM_INFER] = mapping[MODEL_STREAM_INFER]._replace(
            func=self._model_stream_infer_rpc, **wire
        )
        return _guarded(mapping, self._limit, self.inflight, self._requests)

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

    async def _infer(
        self, message: _wire.ModelInferRequest, metadata: MultiDict[Any] | None
    ) -> tuple[InferenceResponse, bytes, dict[str, str]]:
        """The response to one request, serialized, and the headers the model set (for
        trailing metadata)."""
        request = _wire.request_of(message)
        if metadata or self.tracer is not None:
            # As on REST (and in MLServer), the model sees the call's headers in parameters.
            headers = {k: v for k, v in (metadata or {}).items() if isinstance(v, str)}
            if self.tracer is not None:
                # The server span's context, so that the model's spans become its children.
                self.tracer.inject(headers)
            request.parameters = {**(request.parameters or {}), "headers": headers}
        response = await self.server.infer(
            message.model_name, request, message.model_version or None
        )
        trailers = response_metadata(response)
        raw = bool(message.raw_input_contents)  # a raw request is answered raw
        return response, _wire.write_infer_response(response, raw=raw), trailers

    async def _traced_model_infer_rpc(
        self, stream: Stream[_wire.ModelInferRequest, _wire.Encoded]
    ) -> None:
        assert self.tracer is not None
        message: _wire.ModelInferRequest | None = None
        reply: InferenceResponse | None = None
        version: str | None = None
        status: Status | None = None
        code = "CANCELLED"  # the handler was cancelled: the client went away
        # The span starts before the message is read, so that oversize and unparseable
        # messages are traced too; the model's name is known once it is read.
        with self.tracer.span(
            _INFER_SPAN, stream.metadata, transport="grpc", attributes=_INFER_RPC
        ) as span:
            try:
                message = await stream.recv_message()
                assert message is not None
                reply = await self._model_infer_rpc(stream, message)
                status, code, version = Status.OK, "", reply.model_version or ""
            except errors.InferkitError as exc:
                status, code, version = status_for(exc), exc.code, exc.version
                raise
            except Exception as exc:
                status, code = status_for(exc), "INTERNAL"
                raise
            finally:
                span.finish(
                    model=message.model_name if message else "",
                    version=version if version is not None else _version_of(message),
                    request_id=reply.id if reply else message.id if message else None,
                    error_code=code,
                    attributes={} if status is None else {"rpc.grpc.status_code": status.value},
                )

    async def _model_infer_rpc(
        self,
        stream: Stream[_wire.ModelInferRequest, _wire.Encoded],
        message: _wire.ModelInferRequest | None = None,
    ) -> InferenceResponse:
        """Answer one ``ModelInfer`` call and log it; returns the response (grpclib ignores it).

        The traced handler reads the ``message`` itself, inside its span, and passes it in.
        """
        if message is None:
            message = await stream.recv_message()
            assert message is not None
        started = time.perf_counter()
        status = "CANCELLED"
        try:
            response, reply, trailers = await self._infer(message, stream.metadata)
            await stream.send_message(_wire.Encoded(reply))
            if trailers:
                await stream.send_trailing_metadata(metadata=trailers)
            status = "OK"
            return response
        except Exception as exc:
            status = status_for(exc).name
            raise
        finally:
            log_access(
                method="POST",
                path=MODEL_INFER,
                status=status,
                duration_s=time.perf_counter() - started,
                request_id=message.id,
                model=message.model_name,
                version=message.model_version,
            )

    async def _model_stream_infer_rpc(
        self, stream: Stream[_wire.ModelInferRequest, _wire.Encoded]
    ) -> None:
        # Requests are answered one by one, in order. A failed request is answered with its
        # error_message and the stream goes on, as in Triton.
        while True:
            try:
                message = await stream.recv_message()
            except errors.InferkitError as exc:  # too large or unparseable: this one only
                await stream.send_message(_wire.Encoded(_wire.write_stream_response(exc.message)))
                continue
            if message is None:
                return
            with self.inflight.track():
                if self.tracer is None:
                    reply = await self._stream_reply(message, stream.metadata)
                else:
                    reply = await self._traced_stream_reply(message, stream.metadata)
            await stream.send_message(_wire.Encoded(reply))

    async def _stream_reply(
        self, message: _wire.ModelInferRequest, metadata: MultiDict[Any] | None
    ) -> bytes:
        """The serialized ``ModelStreamInferResponse`` answering one request of the stream."""
        try:
            _, reply, _ = await self._infer(message, metadata)
        except Exception as exc:
            return _stream_error(exc)
        return _wire.write_stream_response(infer_response=reply)

    async def _traced_stream_reply(
        self, message: _wire.ModelInferRequest, metadata: MultiDict[Any] | None
    ) -> bytes:
        # One span per message: each is an inference of its own, answered in the stream (a
        # failed one with its error_message; the stream's gRPC status is not the message's).
        assert self.tracer is not None
        with self.tracer.span(
            _STREAM_SPAN, metadata, transport="grpc", attributes=_STREAM_RPC
        ) as span:
            version = None
            code = "CANCELLED"
            reply: InferenceResponse | None = None
            try:
                reply, serialized, _ = await self._infer(message, metadata)
                code, version = "", reply.model_version or ""
                return _wire.write_stream_response(infer_response=serialized)
            except Exception as exc:
                code = exc.code if isinstance(exc, errors.InferkitError) else "INTERNAL"
                version = exc.version if isinstance(exc, errors.InferkitError) else None
                return _stream_error(exc)
            finally:
                span.finish(
                    model=message.model_name,
                    version=version if version is not None else _version_of(message),
                    request_id=reply.id if reply else message.id,
                    error_code=code,
                    attributes={},
                )

    # -- repository --------------------------------------------------------------------------

    async def repository_index(
        self, message: pb.RepositoryIndexRequest
    ) -> pb.RepositoryIndexResponse:
        query = index_request_from_proto(message)
        return index_to_proto(await self.server.index(query.ready))

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

    def __init__(self, server: Server, *, max_message_length: int, inflight: Inflight) -> None:
        self.server = server
        self.inflight = inflight
        self._limit = max_message_length
        self._requests = _request_metrics(server)

    def __mapping__(self) -> dict[str, Handler]:
        return _guarded(super().__mapping__(), self._limit, self.inflight, self._requests)

    async def repository_index(
        self, message: mr.RepositoryIndexRequest
    ) -> mr.RepositoryIndexResponse:
        query = index_request_from_proto(message)
        return index_to_model_repository_proto(await self.server.index(query.ready))

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


def _stream_error(exc: Exception) -> bytes:
    """The stream's answer to a failed message: the error's message, or a generic one."""
    if isinstance(exc, errors.InferkitError):
        return _wire.write_stream_response(exc.message)
    log.exception("Unexpected error in %s", MODEL_STREAM_INFER, exc_info=exc)
    return _wire.write_stream_response(UNEXPECTED)


def _version_of(message: _wire.ModelInferRequest | None) -> str:
    # The version asked for, when no answer or error resolved one.
    return message.model_version if message else ""


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
        known = {item.name for item in await server.index()}
    return model_name_of(message, known.__contains__)

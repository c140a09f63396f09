"""``Server``: the sans-I/O facade every transport calls.

A ``Server`` holds models (through the registry), codecs and listeners, and answers the V2
operations as plain async methods on msgspec Structs. It opens no socket, installs no signal
handler and reads no environment variable, so the same instance can be mounted inside an existing
ASGI app, attached to a grpclib server, or run standalone with :meth:`Server.serve`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import (
    AsyncGenerator,
    AsyncIterable,
    AsyncIterator,
    Awaitable,
    Coroutine,
    Iterable,
)
from typing import TYPE_CHECKING, Any, cast

from . import codecs as _codecs
from ._version import __version__
from .admission import Feed, batch_size, check_inputs, closing, complete, scheduling, stamp
from .batching import Batched, BatchingModel, batching_enabled
from .errors import (
    InferenceFailed,
    InferenceTimeout,
    InferkitError,
    ModelLoadError,
    ModelNotFound,
    SettingsError,
    ShuttingDown,
)
from .events import Listener
from .handlers import HandlerRoute, HandlerTable, RouteCheck
from .ids import RequestIds
from .logs import access_listener
from .metrics import MetricStore
from .model import Model, ModelProtocol, StreamingModel, has_own_stream
from .pipeline import Call, CallHook, Exchange, Pipeline, Refuse
from .registry import Registry, Slot
from .settings import ModelSettings, Settings
from .statistics import ModelStatisticsResponse, Statistics
from .types import (
    InferenceRequest,
    InferenceResponse,
    MetadataModelResponse,
    MetadataServerResponse,
    RepositoryIndexResponseItem,
    State,
)

if TYPE_CHECKING:
    from .repository import DiscoveryFailure, ModelRepository

__all__ = ["Server"]

log = logging.getLogger("inferkit.server")


class Server:
    """Models, codecs and the V2 operations, with no I/O.

    ``models`` may hold model instances (``Model`` subclasses, or anything with the same shape)
    and ``ModelSettings`` whose ``implementation`` is imported when the model loads. With a
    ``repository``, :meth:`rescan` (run by :meth:`start` and :meth:`load`) picks up models
    added to its folder after start-up and drops those whose folder is gone.
    """

    def __init__(
        self,
        models: Iterable[ModelProtocol | ModelSettings] = (),
        *,
        settings: Settings | None = None,
        codecs: _codecs.CodecRegistry | Iterable[type[Any]] | None = None,
        repository: ModelRepository | None = None,
    ) -> None:
        self.settings = settings if settings is not None else Settings()
        self.codecs = _codecs.as_registry(codecs)
        self.repository = repository
        #: Protocol extensions advertised by ``metadata()``; transports may add theirs.
        self.extensions: list[str] = ["model_repository", "statistics", *self.settings.extensions]
        # One statistics store per server, fed by the events, read by every transport.
        self._statistics = Statistics()
        # The request pipeline of every transport: statistics and the access log listen to
        # its outcome records like any other listener.
        self._pipeline = Pipeline(
            [self._statistics, access_listener],
            infer=self._infer,
            stream=self._stream,
            natively=self._streams_natively,
        )
        #: Metrics of the transports and custom metrics of the models, for exporters.
        self.metrics = MetricStore()
        # Custom REST handlers (``@custom_handler``) of the loaded models, served by transports.
        self._handlers = HandlerTable()
        self._registry = Registry(
            self._pipeline.emit,
            attach=self._attach_handlers,
            detach=self._detach_handlers,
            expose_errors=self.settings.expose_load_errors,
        )
        # Unary calls waiting in a batcher (queued or in a running batch): the calls in hand
        # beyond these are being read or answered, and may bring a batch more requests.
        self._parked = 0
        # Ids of requests that come without one (each server its own: no shared counter).
        self._ids = RequestIds()
        self._closing = False
        self._started = False
        # Versions the last repository scan found, to tell which folders have disappeared.
        self._found: set[tuple[str, str]] = set()
        for model in models:
            self.add(model)

    # -- building -------------------------------------------------------------------------

    def add(self, model: ModelProtocol | ModelSettings) -> None:
        """Add a model instance or the settings of one (not loaded until :meth:`load`)."""
        if isinstance(model, ModelSettings):
            self._registry.add(model, self._build)
            return
        if isinstance(model, Model):
            model.codecs = self.codecs
            self.metrics.attach(model.metrics)
        instance = model
        self._registry.add(model.settings, lambda settings: self._batching(settings, instance))

    def _batching(self, settings: ModelSettings, model: ModelProtocol) -> ModelProtocol:
        """``model``, in a :class:`BatchingModel` if its settings turn batching on."""
        if not batching_enabled(settings):
            if settings.max_batch_size > 1 or settings.max_batch_time > 0:
                log.warning(
                    "Model '%s': batching is off (it needs max_batch_size above 1 and "
                    "max_batch_time above 0; got %s and %s)",
                    settings.name,
                    settings.max_batch_size,
                    settings.max_batch_time,
                )
            return model
        return BatchingModel(
            model,
            max_batch_size=settings.max_batch_size,
            max_batch_time=settings.max_batch_time,
            on_batch=self._pipeline.emit,
            arriving=self._arriving,
        )

    def _arriving(self) -> bool:
        """Whether transports have calls in hand that are not waiting in a batcher."""
        return self._pipeline.active > self._parked

    def _build(self, settings: ModelSettings) -> ModelProtocol:
        """A new model for ``settings`` (the registry's factory): the model class's instance, or
        a proxy of worker processes running it, batching if the settings say so."""
        return self._batching(settings, self._create(settings))

    def _create(self, settings: ModelSettings) -> ModelProtocol:
        workers = settings.parallel_workers
        if workers is None:
            workers = self.settings.parallel_workers
        parameters = settings.parameters
        own_environment = parameters is not None and bool(
            parameters.environment_path or parameters.environment_tarball
        )
        if own_environment:
            # A model in its own Python environment can only run in a worker (as in MLServer).
            workers = max(workers, 1)
        if workers > 0:
            from .parallel import ParallelModel

            parallel = ParallelModel(
                settings, workers=workers, server_settings=self.settings, codecs=self.codecs
            )
            self.metrics.attach(parallel.metrics)
            return parallel
        from .repository import resolve_implementation

        cls = resolve_implementation(settings)
        model: ModelProtocol = cls(settings)
        if isinstance(model, Model):
            model.codecs = self.codecs
            self.metrics.attach(model.metrics)
        return model

    def _attach_handlers(self, slot: Slot, model: ModelProtocol) -> None:
        while isinstance(model, BatchingModel):
            model = model.model
        self._handlers.attach(slot.name, slot.version, model)

    def _detach_handlers(self, slot: Slot) -> None:
        self._handlers.detach(slot.name, slot.version)

    def custom_routes(self) -> list[HandlerRoute]:
        """The custom handlers (``@custom_handler``) of the loaded models, for transports."""
        return self._handlers.routes()

    def add_route_check(self, check: RouteCheck) -> None:
        """Refuse custom handler paths ``check`` names a reason for (a transport's own routes):
        a model declaring one fails to load with that reason."""
        if check not in self._handlers.checks:
            self._handlers.checks.append(check)

    def add_listener(self, listener: Listener) -> None:
        """Call ``listener(event)`` for every event (inference finished, model loaded, ...)."""
        self._pipeline.listeners.append(listener)

    def remove_listener(self, listener: Listener) -> None:
        """Stop calling a listener added with :meth:`add_listener`."""
        self._pipeline.listeners.remove(listener)

    def add_hook(self, hook: CallHook) -> None:
        """Run ``hook`` around every inference call (e.g. a tracer); added once however often."""
        if hook not in self._pipeline.hooks:
            self._pipeline.hooks.append(hook)

    def remove_hook(self, hook: CallHook) -> None:
        """Stop running a hook added with :meth:`add_hook`."""
        self._pipeline.hooks.remove(hook)

    # -- lifecycle ------------------------------------------------------------------------

    async def start(self) -> None:
        """Discover the repository and load every model (unless ``load_models_at_startup``
        is off). Models that fail end FAILED with a reason; the others serve. A stopped server
        may start again (an embedding app's lifespan can run twice)."""
        self._closing = False
        await self.rescan()
        if self.settings.load_models_at_startup:
            names = {slot.name for slot in self._registry if slot.state != "FAILED"}
            await asyncio.gather(*(self._load_quietly(name) for name in sorted(names)))
        self._started = True

    async def _load_quietly(self, name: str) -> None:
        try:
            await self._registry.load(name)
        except ModelLoadError:
            pass  # already recorded as FAILED and logged by the registry

    async def rescan(self) -> None:
        """Scan the repository folder again, off the event loop, and apply what changed.

        New model folders are added (not loaded) and broken ones are listed FAILED. A version
        whose folder is gone leaves the index: at once if it is not loaded (UNAVAILABLE,
        FAILED); a loaded one is in memory and keeps serving until it is unloaded, then it goes.
        Run by :meth:`start`, :meth:`load` and ``index(rescan=True)``; nothing else reads the
        disk. Does nothing without a repository.
        """
        await self._rescan()

    async def _rescan(self) -> list[ModelSettings]:
        if self.repository is None:
            return []
        # Walking the tree and reading settings files blocks; no model module is imported here.
        found, failures = await asyncio.to_thread(self.repository.discover)
        self._discover(found, failures)
        return found

    def _discover(self, found: list[ModelSettings], failures: list[DiscoveryFailure]) -> None:
        # Applied with no await in between, so no request sees half of a scan.
        keys = {(s.name, s.version or "") for s in found} | {(f.name, f.version) for f in failures}
        for name, version in sorted(self._found - keys):
            self._registry.forget(name, version)
        self._found = keys
        for settings in found:
            if self._is_new(settings):
                self.add(settings)
        for failure in failures:
            if failure.name not in self._registry:
                error = SettingsError(failure.reason, model=failure.name)
                self._registry.fail(failure.name, failure.version, error)

    def _is_new(self, settings: ModelSettings) -> bool:
        try:
            slot = self._registry.get(settings.name, settings.version or "")
        except ModelNotFound:
            return True
        # A loaded version whose folder went away and came back takes its settings again.
        return slot.gone

    async def stop(self) -> None:
        """Refuse new requests, wait for in-flight ones, and unload every model."""
        self._closing = True
        self._started = False
        for name in sorted({slot.name for slot in self._registry}):
            await self._registry.unload(name)

    def begin_shutdown(self) -> None:
        """Refuse new inference requests (SHUTTING_DOWN) while in-flight ones finish."""
        self._closing = True

    async def __aenter__(self) -> Server:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.stop()

    def serve(self) -> None:
        """Serve REST, gRPC and metrics as the settings say, until SIGINT/SIGTERM (blocking)."""
        from .runner import serve

        serve(self)

    async def serve_async(self) -> None:
        """Serve in the running event loop until cancelled or signalled."""
        from .runner import serve_async

        await serve_async(self)

    # -- health and metadata --------------------------------------------------------------

    async def live(self) -> bool:
        """Whether the process is up (the V2 liveness probe)."""
        return True

    async def ready(self) -> bool:
        """Whether the server takes inference requests: started, not draining, nothing LOADING.

        A FAILED model does not make the server unready, so one broken model never takes the
        working ones out of a load balancer; it is reported in the repository index instead.
        """
        if self._closing or not self._started:
            return False
        return all(slot.state != "LOADING" for slot in self._registry)

    async def metadata(self) -> MetadataServerResponse:
        """Server name, version and the protocol extensions it supports."""
        return MetadataServerResponse(
            name=self.settings.server_name,
            version=self.settings.server_version or __version__,
            extensions=list(self.extensions),
        )

    async def model_ready(self, name: str, version: str | None = None) -> bool:
        """Whether a model (version) is READY; raises ModelNotFound for an unknown one."""
        return _state(self._registry.get(name, version))[0] == "READY"

    async def model_metadata(self, name: str, version: str | None = None) -> MetadataModelResponse:
        """A model's metadata; ``versions`` lists the versions that are loaded."""
        slot = self._registry.get(name, version)
        model = slot.model
        meta = model.metadata() if model is not None else _settings_metadata(slot.settings)
        loaded = [s.version for s in self._registry.versions(name) if s.state == "READY"]
        meta.versions = [v for v in loaded if v] or meta.versions
        return meta

    async def index(
        self, ready: bool | None = None, *, rescan: bool = False
    ) -> list[RepositoryIndexResponseItem]:
        """Every model version and its state; ``ready`` filters on READY (or not READY).

        Reads memory only, so metrics scrapes and statistics never touch the disk. With
        ``rescan`` the repository folder is scanned first (:meth:`rescan`): the V2 repository
        index call passes it, so models added to the folder show up, as in MLServer.
        """
        if rescan:
            await self.rescan()
        items = [
            RepositoryIndexResponseItem(
                name=slot.name, version=slot.version, state=state, reason=why
            )
            for slot in self._registry
            for state, why in [_state(slot)]
        ]
        if ready is not None:
            items = [item for item in items if (item.state == "READY") == ready]
        return items

    async def model_statistics(
        self, name: str | None = None, version: str | None = None
    ) -> ModelStatisticsResponse:
        """Triton's statistics extension: every READY model version, or one model (version)."""
        return self._statistics.report(await self.index(), name, version)

    # -- repository -----------------------------------------------------------------------

    async def load(self, name: str, version: str | None = None) -> None:
        """Load (or reload) a model; raises ModelNotFound, or ModelLoadError with the reason.

        With a repository, the folder is scanned first (:meth:`rescan`) and the model's settings
        are read again, so new versions and edited settings apply.
        """
        for settings in await self._rescan():
            if settings.name == name:
                self.add(settings)
        await self._registry.load(name, version)

    async def unload(self, name: str, version: str | None = None) -> None:
        """Unload a model after its in-flight requests; it stays listed as UNAVAILABLE (unless
        its repository folder is gone: see :meth:`rescan`)."""
        await self._registry.unload(name, version)

    # -- inference ------------------------------------------------------------------------

    async def infer(
        self,
        name: str,
        request: InferenceRequest,
        version: str | None = None,
        *,
        context: Call | None = None,
    ) -> InferenceResponse:
        """Run one inference request on a model (its default version unless one is given).

        ``context`` is a transport's call (:class:`~inferkit.pipeline.Call`: headers, deadline,
        ...), whose outcome record the transport's :meth:`handle` emits; without one, the call
        is this method's own and its record is emitted here.
        """
        call, recording = self._call(name, version, context, stream=False)
        with recording:
            return await self._infer(call, request)

    async def infer_stream(
        self,
        name: str,
        requests: AsyncIterable[InferenceRequest],
        version: str | None = None,
        *,
        context: Call | None = None,
    ) -> AsyncIterator[InferenceResponse]:
        """Run a stream of requests through a model: its responses, as it yields them.

        A model with its own ``predict_stream`` gets the requests as an async iterator and
        answers as it likes (MLServer's signature); any other model gets MLServer's default,
        one ``predict`` per request, in order. Requests are checked as they arrive. An error
        (the model's, or an invalid request) ends the stream; closing the iterator early
        closes the model's. ``context`` is as for :meth:`infer`.
        """
        call, recording = self._call(name, version, context, stream=True)
        with recording:
            async with contextlib.aclosing(self._stream(call, requests)) as stream:
                async for response in stream:
                    yield response

    def _call(
        self, name: str, version: str | None, context: Call | None, *, stream: bool
    ) -> tuple[Call, contextlib.AbstractContextManager[Any]]:
        """The call of a direct inference: the transport's ``context`` (whose handler records
        it), or a call of its own, recorded by the block the second item opens."""
        if context is not None:
            context.model, context.version = name, version
            return context, contextlib.nullcontext()
        call = Call(model=name, version=version, stream=stream)
        return call, self._pipeline.recording(call)

    def handle(self, call: Call, exchange: Exchange) -> Coroutine[Any, Any, None]:
        """Answer one unary call of a transport through the request pipeline (await it).

        The transport's ``exchange`` reads the request and writes the answer; the core does
        the rest (see :meth:`~inferkit.pipeline.Pipeline.handle`). Errors are sent, never
        raised.
        """
        # The pipeline's coroutine itself, not one more around it: this is every call's path.
        return self._pipeline.handle(call, exchange)

    def handle_stream(self, call: Call, exchange: Exchange) -> Coroutine[Any, Any, None]:
        """Answer a stream call of a transport (gRPC ``ModelStreamInfer``, REST
        ``infer_stream``) through the request pipeline (await it); see
        :meth:`~inferkit.pipeline.Pipeline.handle_stream`."""
        return self._pipeline.handle_stream(call, exchange)

    def _streams_natively(self, call: Call) -> bool:
        try:
            model = self._registry.get(call.model, call.version).model
        except ModelNotFound:
            return False
        return model is not None and has_own_stream(model)

    async def _infer(self, call: Call, request: InferenceRequest) -> InferenceResponse:
        """Run one request on the model ``call`` names."""
        call.request_id = request.id or call.request_id  # known even if the model is not
        slot = self._resolve(call)
        self._admit(call, request, slot)
        call.batch_size = batch_size(request)
        model = slot.enter()
        try:
            response = await self._predict(model, request, slot, call)
        finally:
            slot.leave()
        response = complete(response, request, slot.name, slot.version, self._ids)
        call.request_id = response.id or ""
        return response

    def _resolve(self, call: Call) -> Slot:
        """The slot of the model (version) ``call`` names; ``call`` learns the resolved names."""
        if self._closing:
            raise ShuttingDown(
                "The server is shutting down", model=call.model, version=call.version
            )
        slot = self._registry.get(call.model, call.version)
        call.model, call.version, call.resolved = slot.name, slot.version, True
        return slot

    def _admit(self, call: Call, request: InferenceRequest, slot: Slot) -> None:
        """Ready a request for the model: the call's headers in its parameters, inputs checked."""
        if call.headers is not None:
            # As MLServer does: the model sees the request's headers (and the trace context).
            request.parameters = {**(request.parameters or {}), "headers": call.headers}
        check_inputs(request, slot.settings.inputs)

    async def _stream(
        self,
        call: Call,
        requests: AsyncIterable[InferenceRequest],
        refuse: Refuse | None = None,
    ) -> AsyncGenerator[InferenceResponse, None]:
        """The responses of a stream to the model ``call`` names; ``refuse`` (if given)
        answers invalid requests, which are then skipped, instead of ending the stream."""
        slot = self._resolve(call)
        model = slot.enter()  # held for the whole stream: an unload waits for it to end
        feed = Feed(
            call, lambda request: self._admit(call, request, slot), requests, refuse, self._ids
        )
        try:
            if not has_own_stream(model):
                async with contextlib.aclosing(feed.requests()) as each:
                    async for request in each:
                        response = await self._predict(model, request, slot, call)
                        call.responses += 1
                        yield complete(response, request, slot.name, slot.version, self._ids)
                return
            streaming = cast(StreamingModel, model)
            async with closing(streaming.predict_stream(feed.requests())) as responses:
                while True:
                    started, waited = time.perf_counter(), feed.waited_s
                    try:
                        response = await anext(responses)
                    except StopAsyncIteration:
                        return
                    except Exception as exc:
                        # The feed's own errors (the client's) and ours pass as they are.
                        if exc is feed.error or isinstance(exc, InferkitError):
                            raise
                        raise _model_failed(slot, "predict_stream") from None
                    # The model's time, less the time it waited for the client's requests.
                    call.compute_s += time.perf_counter() - started - (feed.waited_s - waited)
                    call.responses += 1
                    response = stamp(response, feed.latest, slot.name, slot.version, self._ids)
                    call.request_id = call.request_id or response.id or ""
                    yield response
        finally:
            slot.leave()

    async def _predict(
        self, model: ModelProtocol, request: InferenceRequest, slot: Slot, call: Call
    ) -> InferenceResponse:
        requested, priority = scheduling(request)
        timeout = self._timeout(call, slot, requested)
        started = time.perf_counter()
        work: Coroutine[Any, Any, InferenceResponse]
        if isinstance(model, BatchingModel):
            deadline = None if timeout is None else asyncio.get_running_loop().time() + timeout
            work = self._from_batch(
                model.submit(request, deadline=deadline, priority=priority), call
            )
        else:
            work = model.predict(request)
        try:
            response = await (work if timeout is None else asyncio.wait_for(work, timeout))
        except InferkitError:
            raise
        except asyncio.TimeoutError:
            raise InferenceTimeout(
                f"Model '{slot.name}' did not answer within {timeout:g}s"
            ) from None
        except Exception:
            raise _model_failed(slot, "predict") from None
        if not call.batched:
            call.compute_s += time.perf_counter() - started
        return response

    async def _from_batch(self, batched: Awaitable[Batched], call: Call) -> InferenceResponse:
        """The response of a request answered from a batch; ``call`` learns the wait and the
        batch's compute time."""
        # Only a transport's unary calls are counted in hand (Pipeline.active).
        parked = bool(call.transport) and not call.stream
        self._parked += parked
        try:
            answer = await batched
        finally:
            self._parked -= parked
        call.batched = True
        call.queue_s += answer.queued_s
        call.compute_s += answer.compute_s
        return answer.response

    def _timeout(self, call: Call, slot: Slot, requested: float | None) -> float | None:
        """Seconds the model may take: ``inference_timeout``, or less if the request's own
        ``timeout`` or the client's deadline comes first (a request whose deadline already
        passed does not run)."""
        timeout = self.settings.inference_timeout
        if requested is not None:
            timeout = requested if timeout is None else min(timeout, requested)
        remaining = call.remaining()
        if remaining is None:
            return timeout
        if remaining <= 0:
            raise InferenceTimeout(
                f"The request's deadline passed before model '{slot.name}' could run it"
            )
        return remaining if timeout is None else min(timeout, remaining)


def _model_failed(slot: Slot, method: str) -> InferenceFailed:
    # The exception's text stays in the server log: it may carry internals or secrets.
    log.exception("Model '%s'%s raised during %s", slot.name, _v(slot.version), method)
    return InferenceFailed(f"Model '{slot.name}' failed to run inference; see the server log")


def _state(slot: Slot) -> tuple[State, str]:
    """The slot's state, unless a loaded model says it cannot serve (``model.ready`` false:
    e.g. every worker process of a parallel model is down and restarting)."""
    if slot.state == "READY" and getattr(slot.model, "ready", True) is False:
        return "UNAVAILABLE", "The model is loaded but reports it cannot serve right now"
    return slot.state, slot.reason


def _settings_metadata(settings: ModelSettings) -> MetadataModelResponse:
    return Model(settings).metadata()


def _v(version: str) -> str:
    return f" version '{version}'" if version else ""

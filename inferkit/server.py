"""``Server``: the sans-I/O facade every transport calls.

A ``Server`` holds models (through the registry), codecs and listeners, and answers the V2
operations as plain async methods on msgspec Structs. It opens no socket, installs no signal
handler and reads no environment variable, so the same instance can be mounted inside an existing
ASGI app, attached to a grpclib server, or run standalone with :meth:`Server.serve`.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from . import codecs as _codecs
from ._version import __version__
from .errors import (
    InferenceFailed,
    InferenceTimeout,
    InferkitError,
    InvalidRequest,
    InvalidShape,
    ModelLoadError,
    ModelNotFound,
    OutputNotFound,
    ShuttingDown,
)
from .events import Event, InferenceFinished, Listener
from .metrics import MetricStore
from .model import Model, ModelProtocol
from .registry import ModelFactory, Registry, Slot
from .settings import ModelSettings, Settings
from .statistics import ModelStatisticsResponse, Statistics
from .types import (
    InferenceRequest,
    InferenceResponse,
    MetadataModelResponse,
    MetadataServerResponse,
    MetadataTensor,
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
        self.codecs = _codec_registry(codecs)
        self.repository = repository
        #: Protocol extensions advertised by ``metadata()``; transports may add theirs.
        self.extensions: list[str] = ["model_repository", "statistics", *self.settings.extensions]
        # One statistics store per server, fed by the events, read by every transport.
        self._statistics = Statistics()
        self._listeners: list[Listener] = [self._statistics]
        #: Metrics of the transports and custom metrics of the models, for exporters.
        self.metrics = MetricStore()
        self._registry = Registry(self._emit)
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
            self._registry.add(model, self._factory_for(model))
            return
        if isinstance(model, Model):
            model.codecs = self.codecs
            self.metrics.attach(model.metrics)
        instance = model
        self._registry.add(model.settings, lambda _settings: instance)

    def _factory_for(self, settings: ModelSettings) -> ModelFactory:
        def build(settings: ModelSettings) -> ModelProtocol:
            workers = settings.parallel_workers
            if workers is None:
                workers = self.settings.parallel_workers
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

        return build

    def add_listener(self, listener: Listener) -> None:
        """Call ``listener(event)`` for every event (inference finished, model loaded, ...)."""
        self._listeners.append(listener)

    def remove_listener(self, listener: Listener) -> None:
        """Stop calling a listener added with :meth:`add_listener`."""
        self._listeners.remove(listener)

    def _emit(self, event: Event) -> None:
        for listener in self._listeners:
            try:
                listener(event)
            except Exception:
                log.exception("Event listener %r failed", listener)

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
        keys = {(s.name, s.version or "") for s in found} | {(f.name, "") for f in failures}
        for name, version in sorted(self._found - keys):
            self._registry.forget(name, version)
        self._found = keys
        for settings in found:
            if self._is_new(settings):
                self.add(settings)
        for name, reason in failures:
            if name not in self._registry:
                self._registry.fail(name, "", reason)

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
        self, name: str, request: InferenceRequest, version: str | None = None
    ) -> InferenceResponse:
        """Run one inference request on a model (its default version unless one is given)."""
        if self._closing:
            raise ShuttingDown("The server is shutting down", model=name, version=version)
        slot = self._registry.get(name, version)
        started = time.perf_counter()
        compute_s = 0.0
        code = ""
        try:
            _check_inputs(request, slot.settings.inputs)
            model = slot.enter()
            try:
                t0 = time.perf_counter()
                response = await self._predict(model, request, slot)
                compute_s = time.perf_counter() - t0
            finally:
                slot.leave()
            return _complete(response, request, slot)
        except InferkitError as exc:
            code = exc.code
            exc.model, exc.version = exc.model or slot.name, exc.version or slot.version
            raise
        except Exception:
            code = "INTERNAL"
            raise
        finally:
            self._emit(
                InferenceFinished(
                    model=slot.name,
                    version=slot.version,
                    duration_s=time.perf_counter() - started,
                    compute_s=compute_s,
                    ok=not code,
                    code=code,
                    batch_size=_batch_size(request),
                )
            )

    async def _predict(
        self, model: ModelProtocol, request: InferenceRequest, slot: Slot
    ) -> InferenceResponse:
        timeout = self.settings.inference_timeout
        try:
            if timeout is None:
                return await model.predict(request)
            return await asyncio.wait_for(model.predict(request), timeout)
        except InferkitError:
            raise
        except asyncio.TimeoutError:
            raise InferenceTimeout(
                f"Model '{slot.name}' did not answer within {timeout:g}s"
            ) from None
        except Exception:
            # The exception's text stays in the server log: it may carry internals or secrets.
            log.exception("Model '%s'%s raised during predict", slot.name, _v(slot.version))
            raise InferenceFailed(
                f"Model '{slot.name}' failed to run inference; see the server log"
            ) from None


def _codec_registry(
    codecs: _codecs.CodecRegistry | Iterable[type[Any]] | None,
) -> _codecs.CodecRegistry:
    if isinstance(codecs, _codecs.CodecRegistry):
        return codecs
    registry = _codecs.default_codecs()
    for codec in codecs or ():
        if hasattr(codec, "decode_request"):
            registry.register_request_codec(codec)
        else:
            registry.register_input_codec(codec)
    return registry


def _check_inputs(request: InferenceRequest, declared: list[MetadataTensor]) -> None:
    """Validate every input's tensor, then against the model's declared inputs, if any."""
    by_name = {tensor.name: tensor for tensor in declared}
    for i, tensor in enumerate(request.inputs):
        where = f"$.inputs[{i}]"
        _codecs.check_tensor(tensor, where)
        spec = by_name.get(tensor.name)
        if spec is None:
            continue
        if spec.datatype and spec.datatype != tensor.datatype:
            raise InvalidRequest(
                f"Expected datatype {spec.datatype} for input '{tensor.name}', "
                f"got {tensor.datatype}",
                where=f"{where}.datatype",
            )
        if spec.shape and not _shape_fits(spec.shape, tensor.shape):
            raise InvalidShape(
                f"Expected shape {spec.shape} for input '{tensor.name}', got {tensor.shape}",
                where=f"{where}.shape",
            )


def _shape_fits(spec: list[int], shape: list[int]) -> bool:
    return len(spec) == len(shape) and all(s in (-1, d) for s, d in zip(spec, shape, strict=True))


def _complete(
    response: InferenceResponse, request: InferenceRequest, slot: Slot
) -> InferenceResponse:
    """Fill id, name and version, and keep only the requested outputs (V2 ``outputs``)."""
    response.id = request.id or response.id or str(uuid.uuid4())
    response.model_name = slot.name
    response.model_version = slot.version or None
    if request.outputs:
        produced = {output.name: output for output in response.outputs}
        selected = []
        for i, wanted in enumerate(request.outputs):
            output = produced.get(wanted.name)
            if output is None:
                raise OutputNotFound(
                    f"Model '{slot.name}' has no output '{wanted.name}'; it produced "
                    f"{sorted(produced)}",
                    where=f"$.outputs[{i}].name",
                )
            if wanted.parameters:
                output.parameters = {**(output.parameters or {}), **wanted.parameters}
            selected.append(output)
        response.outputs = selected
    return response


def _batch_size(request: InferenceRequest) -> int:
    if request.inputs and request.inputs[0].shape:
        return max(int(request.inputs[0].shape[0]), 1)
    return 1


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

"""``ParallelModel``: a model in the registry whose predictions run in worker processes.

It has the shape of any model (:class:`~inferkit.model.ModelProtocol`), so the registry, the
server and the transports do not know workers exist: ``load()`` starts the workers, ``predict``
sends the request to the least-loaded one, ``unload()`` stops them. See ``docs/parallel.md``.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import multiprocessing
import multiprocessing.util
from collections.abc import AsyncIterator
from typing import Any

import msgspec

from ..codecs import BUILTIN_INPUT_CODECS, BUILTIN_REQUEST_CODECS, CodecRegistry
from ..errors import ModelLoadError, ModelNotReady, QueueFull
from ..metrics import ModelMetrics
from ..model import Model
from ..settings import ModelSettings, Settings
from ..types import InferenceRequest, InferenceResponse, MetadataModelResponse
from .environment import Environment, find_environment, wants_environment
from .metrics import MetricChange, apply_changes
from .process import END, WorkerProcess, describe_exit
from .worker import WorkerConfig

__all__ = [
    "DEFAULT_ARENA_SIZE",
    "DEFAULT_INLINE_THRESHOLD",
    "DEFAULT_MAX_INFLIGHT",
    "ParallelModel",
]

log = logging.getLogger("inferkit.parallel")

#: Requests in flight per worker before it counts as full: enough that a few hundred
#: concurrent clients queue rather than fail, few enough that a queue stays short in time.
DEFAULT_MAX_INFLIGHT = 128
#: Tensors of at least this many bytes travel through shared memory; smaller ones inline.
#: Measured: below ~16 KiB both take the same time, from 64 KiB shared memory is faster.
DEFAULT_INLINE_THRESHOLD = 32 * 1024
#: Size of each shared-memory arena (one per direction per worker). Sparse: only pages that
#: are written take memory. A tensor that does not fit travels inline instead.
DEFAULT_ARENA_SIZE = 256 * 1024 * 1024
# Seconds between attempts to restart a worker whose model fails to load again, doubling.
_RETRY_FIRST_S, _RETRY_MAX_S = 0.5, 30.0


class ParallelModel:
    """Runs a model's ``predict`` in ``workers`` processes, each loading the model once.

    ``server_settings`` gives the logging settings and ``parallel_workers_timeout`` (how long a
    worker may take to stop before it is killed); ``codecs`` are the server's, whose custom
    classes are imported in every worker by name. ``max_inflight`` bounds the requests sent to
    one worker: when every worker is full, :meth:`predict` raises
    :class:`~inferkit.errors.QueueFull`.
    """

    def __init__(
        self,
        settings: ModelSettings,
        *,
        workers: int,
        server_settings: Settings | None = None,
        codecs: CodecRegistry | None = None,
        max_inflight: int = DEFAULT_MAX_INFLIGHT,
        inline_threshold: int = DEFAULT_INLINE_THRESHOLD,
        arena_size: int = DEFAULT_ARENA_SIZE,
    ) -> None:
        if workers < 1:
            raise ValueError(f"A ParallelModel needs at least 1 worker, got {workers}")
        if max_inflight < 1:
            raise ValueError(f"max_inflight must be at least 1, got {max_inflight}")
        self.settings = settings
        self.workers = workers
        #: Custom metrics the model records in its workers, added up here for the server.
        self.metrics = ModelMetrics(settings.name, settings.version or "")
        self.max_inflight = max_inflight
        server = server_settings if server_settings is not None else Settings()
        self._stop_timeout = server.parallel_workers_timeout
        self._environments_dir = server.environments_dir
        #: The model's own Python environment (``environment_path`` / ``_tarball``), once
        #: loaded; None: workers run the server's interpreter.
        self.environment: Environment | None = None
        self._config = WorkerConfig(
            settings=settings,
            index=0,
            arena_size=arena_size,
            threshold=inline_threshold,
            server=server,
            log_level=logging.getLevelName(logging.getLogger("inferkit").getEffectiveLevel()),
            codecs=_codec_paths(codecs),
        )
        self._context = multiprocessing.get_context("spawn")
        self._pool: list[WorkerProcess] = []
        self._ids = itertools.count()
        self._restarts: set[asyncio.Task[None]] = set()
        self._at_exit: multiprocessing.util.Finalize | None = None
        self._metadata: MetadataModelResponse | None = None
        #: Whether the model (in the workers) has its own ``predict_stream``; known once
        #: loaded. The server streams through :meth:`predict_stream` only then, and calls
        #: :meth:`predict` once per request otherwise.
        self.streams_natively = False
        self._loaded = False
        self._closing = False

    @property
    def name(self) -> str:
        """The model's name."""
        return self.settings.name

    @property
    def version(self) -> str | None:
        """The model's version, or None when unversioned."""
        return self.settings.version

    @property
    def ready(self) -> bool:
        """Loaded, and at least one worker alive (the others may be restarting)."""
        return self._loaded and any(w.state == "ready" for w in self._pool)

    @ready.setter
    def ready(self, value: bool) -> None:
        # The registry marks models ready/unready; liveness of workers is checked on top.
        self._loaded = value

    @property
    def pids(self) -> list[int]:
        """Process ids of the live workers, by worker index."""
        return [w.pid for w in self._pool if w.state == "ready" and w.pid is not None]

    @property
    def inflight(self) -> int:
        """Requests (and streams) sent to workers and not answered yet."""
        return sum(w.inflight for w in self._pool)

    def metadata(self) -> MetadataModelResponse:
        """The metadata the model gave in its worker (as from settings before loading)."""
        if self._metadata is None:
            return Model(self.settings).metadata()
        return msgspec.structs.replace(self._metadata)  # the server edits what it gets

    # -- lifecycle ---------------------------------------------------------------------

    async def load(self) -> bool:
        """Start every worker and wait until each has loaded the model.

        Raises :class:`~inferkit.errors.ModelLoadError` with the first worker's reason (the
        others are stopped) if any fails.
        """
        if self._pool:
            raise RuntimeError(f"Model '{self.name}' is already loaded")
        self._closing = False
        if wants_environment(self.settings):
            loop = asyncio.get_running_loop()
            environment = await loop.run_in_executor(
                None, find_environment, self.settings, self._environments_dir
            )
            if environment is not None:
                log.info("Model '%s' runs with %s", self.name, environment.python)
            self.environment = environment
        self._pool = [self._new_worker(i) for i in range(self.workers)]
        # Run at interpreter exit *before* multiprocessing joins its children (which would
        # wait forever for workers still connected to us), unless unload() came first.
        self._at_exit = multiprocessing.util.Finalize(None, self._abandon, exitpriority=100)
        try:
            outcomes = await asyncio.gather(
                *(w.start() for w in self._pool), return_exceptions=True
            )
        except BaseException:
            await self.unload()
            raise
        failures = [o for o in outcomes if isinstance(o, BaseException)]
        if failures:
            await self.unload()
            raise failures[0]
        if handlers := self._pool[0].handlers:
            await self.unload()
            raise ModelLoadError(
                f"Custom handlers ({', '.join(handlers)}) are not served for models in worker "
                "processes (parallel_workers above 0, or a model environment): set "
                "parallel_workers to 0 for this model",
                model=self.name,
                version=self.version,
            )
        self._metadata = self._pool[0].metadata
        self.streams_natively = self._pool[0].streams
        self._loaded = True
        log.info("Model '%s' runs in %d worker processes %s", self.name, self.workers, self.pids)
        return True

    async def unload(self) -> bool:
        """Stop every worker (and any restart in progress); no process outlives this."""
        self._closing = True
        self._loaded = False
        for task in self._restarts:
            task.cancel()
        await asyncio.gather(*self._restarts, return_exceptions=True)
        pool, self._pool = self._pool, []
        await asyncio.gather(*(w.stop(self._stop_timeout) for w in pool))
        if self._at_exit is not None:
            self._at_exit.cancel()
            self._at_exit = None
        return True

    def _new_worker(self, index: int) -> WorkerProcess:
        config = msgspec.structs.replace(self._config, index=index)
        return WorkerProcess(
            self._context, config, self._on_death, self._on_metrics, self.environment
        )

    def _on_metrics(self, changes: list[MetricChange]) -> None:
        apply_changes(self.metrics, changes)

    def _abandon(self) -> None:
        # Interpreter exit without unload (an embedding app that never stopped its server).
        for worker in self._pool:
            worker.abandon(self._stop_timeout)

    # -- restarts ----------------------------------------------------------------------

    async def wait_workers(self) -> None:
        """Wait until no worker is being restarted (at once if all are alive)."""
        while self._restarts:
            await asyncio.wait(list(self._restarts))

    def _on_death(self, worker: WorkerProcess) -> None:
        if self._closing:
            return
        task = asyncio.get_running_loop().create_task(self._restart(worker))
        self._restarts.add(task)
        task.add_done_callback(self._restarts.discard)

    async def _restart(self, dead: WorkerProcess) -> None:
        code = await dead.wait_exit(self._stop_timeout)
        dead.dispose()
        log.error(
            "Worker %d (pid %s) of model '%s' %s; %d in-flight requests failed; restarting it",
            dead.index,
            dead.pid,
            self.name,
            describe_exit(code),
            dead.lost_calls,
        )
        delay = _RETRY_FIRST_S
        while not self._closing:
            worker = self._new_worker(dead.index)
            self._pool[self._pool.index(dead)] = worker
            try:
                await worker.start()
            except Exception as exc:
                await worker.stop(self._stop_timeout)
                reason = exc.message if isinstance(exc, ModelLoadError) else repr(exc)
                log.error(
                    "Worker %d of model '%s' failed to restart: %s; retrying in %gs",
                    dead.index,
                    self.name,
                    reason,
                    delay,
                )
                dead = worker
                await asyncio.sleep(delay)  # backoff between attempts, not synchronisation
                delay = min(delay * 2, _RETRY_MAX_S)
                continue
            log.info("Worker %d of model '%s' is back (pid %s)", dead.index, self.name, worker.pid)
            return

    # -- inference ---------------------------------------------------------------------

    def _pick(self) -> WorkerProcess:
        """The live worker with the fewest requests in flight, if it has room."""
        best: WorkerProcess | None = None
        alive = False
        for worker in self._pool:
            if worker.state != "ready":
                continue
            alive = True
            if worker.inflight < self.max_inflight and (
                best is None or worker.inflight < best.inflight
            ):
                best = worker
        if best is not None:
            return best
        if alive:
            raise QueueFull(
                f"All {self.workers} workers of model '{self.name}' are busy",
                model=self.name,
                version=self.version,
            )
        state = "restarting" if self._loaded else "not loaded"
        raise ModelNotReady(
            f"Model '{self.name}' is not ready (all {self.workers} workers are {state})",
            model=self.name,
            version=self.version,
        )

    async def predict(self, payload: InferenceRequest) -> InferenceResponse:
        """Run ``predict`` in the least-loaded worker."""
        worker = self._pick()
        id = next(self._ids)
        future = worker.call(id, payload)
        try:
            return await future
        except asyncio.CancelledError:
            worker.cancel(id)  # e.g. the inference timeout: the worker drops the task too
            raise

    async def predict_stream(
        self, payloads: AsyncIterator[InferenceRequest]
    ) -> AsyncIterator[InferenceResponse]:
        """Run the model's ``predict_stream`` in one worker (the least-loaded one)."""
        worker = self._pick()
        id = next(self._ids)
        queue = worker.open_stream(id)

        async def pump() -> None:
            try:
                async for payload in payloads:
                    worker.push(id, payload)
            except Exception as exc:
                queue.put_nowait(exc)  # the caller's own iterator failed: end with its error
                return
            worker.push(id, None)

        feeder = asyncio.get_running_loop().create_task(pump())
        finished = False
        try:
            while (item := await queue.get()) is not END:
                if isinstance(item, BaseException):
                    finished = True
                    raise item
                yield item
            finished = True
        finally:
            feeder.cancel()
            if not finished:
                worker.cancel(id)
            await asyncio.gather(feeder, return_exceptions=True)


def _codec_paths(codecs: CodecRegistry | None) -> list[str]:
    """Import paths of the custom codecs (built-ins exist in every worker already)."""
    if codecs is None:
        return []
    builtin = {*BUILTIN_INPUT_CODECS, *BUILTIN_REQUEST_CODECS}
    paths = []
    for codec in (*codecs.input_codecs, *codecs.request_codecs):
        cls: Any = codec if isinstance(codec, type) else type(codec)
        if cls in builtin:
            continue
        if "<locals>" in cls.__qualname__:
            log.warning("Codec %r is defined in a function: workers cannot import it", cls)
            continue
        paths.append(f"{cls.__module__}:{cls.__qualname__}")
    return paths

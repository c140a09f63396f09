"""The worker process: load one model, then answer the main process until told to stop.

:func:`run` is the target of every ``spawn``-ed worker. It resolves the implementation from the
``ModelSettings`` itself (classes imported from a model folder live under a synthetic module
name, so they cannot be pickled across), builds and loads the model once, sends
:class:`~inferkit.parallel.messages.Ready`, and runs each call as a task in its own event loop,
so async models overlap their awaits as they would in-process.

A worker ignores SIGINT (a Ctrl-C reaches the whole process group, but the main process decides
when workers stop, after draining) and exits when the main process's end of the socket closes,
so a killed server leaves no worker behind.
"""

from __future__ import annotations

import asyncio
import importlib
import inspect
import logging
import os
import signal
import socket
import sys
from collections.abc import AsyncIterator
from typing import Any, cast

import msgspec

from .. import errors
from ..errors import InferkitError, ModelLoadError
from ..handlers import find_handlers
from ..logs import configure_logging
from ..metrics import ModelMetrics
from ..model import Model, ModelProtocol, StreamingModel, has_own_stream
from ..repository import resolve_implementation
from ..settings import ModelSettings, Settings
from ..types import InferenceRequest, InferenceResponse
from .channel import Channel, open_channel
from .memory import Arena, InheritedFd
from .messages import (
    Call,
    Cancel,
    Close,
    Done,
    Failure,
    Item,
    LoadFailed,
    MainMessage,
    Metrics,
    Open,
    Push,
    Ready,
    Release,
    Reply,
    Stop,
    Wire,
)
from .metrics import MetricsDiff

__all__ = ["WorkerConfig", "run"]

log = logging.getLogger("inferkit.parallel.worker")


class WorkerConfig(msgspec.Struct, kw_only=True):
    """What a worker is told at start (sent as msgpack bytes, never pickled)."""

    settings: ModelSettings
    index: int
    arena_size: int
    threshold: int
    #: The server's settings, for logging the way the main process does.
    server: Settings = msgspec.field(default_factory=Settings)
    #: The main process's level for the ``inferkit`` loggers (it may come from the CLI).
    log_level: str = "INFO"
    #: Custom codecs of the server, as ``module:qualname``, registered on the model.
    codecs: list[str] = msgspec.field(default_factory=list)


def run(
    config: bytes, sock: socket.socket, requests_fd: InheritedFd, responses_fd: InheritedFd
) -> None:
    """Entry point of a worker process (``multiprocessing`` target)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    cfg = msgspec.msgpack.decode(config, type=WorkerConfig)
    configure_logging(cfg.server, level=cfg.log_level)
    requests = Arena(requests_fd.fd, cfg.arena_size)
    responses = Arena(responses_fd.fd, cfg.arena_size)
    try:
        ok = _run(_Worker(cfg, requests, responses).serve(sock))
    finally:
        requests.close()
        responses.close()
    if not ok:
        sys.exit(1)


class _Worker:
    def __init__(self, cfg: WorkerConfig, requests: Arena, responses: Arena) -> None:
        self.cfg = cfg
        self.name = cfg.settings.name
        self.wire = Wire(responses, requests, cfg.threshold, MainMessage)
        self.model: ModelProtocol | None = None
        self.metrics: MetricsDiff | None = None
        self.channel: Channel | None = None
        self.tasks: dict[int, asyncio.Task[None]] = {}
        self.streams: dict[int, asyncio.Queue[InferenceRequest | None]] = {}
        # Response blocks per call, freed when the main process says it copied them.
        self.blocks: dict[int, list[int]] = {}
        self.stop = asyncio.Event()
        self.lost = asyncio.Event()

    async def serve(self, sock: socket.socket) -> bool:
        self.channel = await open_channel(sock, self._on_frame, self._on_lost)
        try:
            self.model = await self._load()
        except Exception as exc:
            self._send(LoadFailed(reason=_reason(exc)))
            await self._close()
            return False
        metrics = getattr(self.model, "metrics", None)
        if isinstance(metrics, ModelMetrics):
            self.metrics = MetricsDiff(metrics)
        ready = Ready(
            pid=os.getpid(),
            metadata=self.model.metadata(),
            streams=has_own_stream(self.model),
            handlers=[f"{h.rest_method} {h.rest_path}" for h, _ in find_handlers(self.model)],
        )
        self._send(ready)
        await self.stop.wait()
        for task in list(self.tasks.values()):
            task.cancel()
        await asyncio.gather(*self.tasks.values(), return_exceptions=True)
        try:
            await self.model.unload()
        except Exception:
            log.exception("Model '%s' failed to unload", self.name)
        await self._close()
        return True

    async def _load(self) -> ModelProtocol:
        try:
            cls = resolve_implementation(self.cfg.settings)
            model: ModelProtocol = cls(self.cfg.settings)
            if isinstance(model, Model):
                _register_codecs(model, self.cfg.codecs)
            if await model.load() is False:
                raise ModelLoadError("load() returned False")
        except Exception as exc:
            log.error(
                "Model '%s' failed to load: %s",
                self.name,
                _reason(exc),
                exc_info=not isinstance(exc, InferkitError),
            )
            raise
        if hasattr(model, "ready"):
            model.ready = True
        return model

    async def _close(self) -> None:
        assert self.channel is not None
        self.channel.close()  # sends what is queued first
        await self.lost.wait()

    def _on_lost(self) -> None:
        self.lost.set()
        self.stop.set()  # the main process is gone: nobody is left to answer

    def _send(self, message: Any, shared: bool = False) -> None:
        assert self.channel is not None
        if not self.channel.open:
            return
        changes = self.metrics.changes() if self.metrics is not None else None
        if changes:
            self.channel.send(self.wire.encode(Metrics(changes=changes), shared=False)[0])
        frame, blocks = self.wire.encode(message, shared)
        if blocks:
            self.blocks[message.id] = blocks
        self.channel.send(frame)

    def _on_frame(self, frame: bytes | memoryview) -> None:
        try:
            message = self.wire.decode(frame)
        except Exception:
            log.exception("Worker of model '%s' received a message it cannot decode", self.name)
            return
        if isinstance(message, Call):
            self._start(message.id, self._call(message.id, message.request))
        elif isinstance(message, Push | Close):
            # A stream the model already ended (it may stop before reading every request)
            # has no queue any more: what still comes for it is dropped.
            queue = self.streams.get(message.id)
            if queue is not None:
                queue.put_nowait(message.request if isinstance(message, Push) else None)
        elif isinstance(message, Release):
            self.wire.free(self.blocks.pop(message.id, []))
        elif isinstance(message, Cancel):
            self._cancel(message.id)
        elif isinstance(message, Open):
            self.streams[message.id] = asyncio.Queue()
            self._start(message.id, self._stream(message.id))
        elif isinstance(message, Stop):
            self.stop.set()

    def _start(self, id: int, coro: Any) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self.tasks[id] = task
        task.add_done_callback(lambda task: self._ended(id, task))

    def _cancel(self, id: int) -> None:
        task = self.tasks.get(id)
        if task is None:
            return  # already answered
        task.cancel()
        coro = task.get_coro()
        if inspect.iscoroutine(coro) and inspect.getcoroutinestate(coro) == inspect.CORO_CREATED:
            # Not started, so its own handler will never run: say now that it is over (the
            # main process counts it in flight until then), before calls received after it.
            del self.tasks[id]
            self.streams.pop(id, None)
            self._fail(id, asyncio.CancelledError())

    def _ended(self, id: int, task: asyncio.Task[None]) -> None:
        if self.tasks.get(id) is task:
            del self.tasks[id]

    async def _call(self, id: int, request: InferenceRequest) -> None:
        assert self.model is not None
        try:
            response = await self.model.predict(request)
            self._send(Reply(id=id, response=response), shared=True)
        except BaseException as exc:
            self._fail(id, exc)

    async def _stream(self, id: int) -> None:
        assert self.model is not None
        queue = self.streams[id]

        latest: InferenceRequest | None = None

        async def requests() -> AsyncIterator[InferenceRequest]:
            nonlocal latest
            while (request := await queue.get()) is not None:
                latest = request
                yield request

        try:
            async for response in _responses(self.model, requests()):
                # Only here is it known which request the model read last: the main process
                # sends requests ahead of the model, so it cannot tell (it keeps this id).
                if not response.id and latest is not None:
                    response.id = latest.id
                self._send(Item(id=id, response=response))
            self._send(Done(id=id))
        except BaseException as exc:
            self._fail(id, exc)
        finally:
            self.streams.pop(id, None)

    def _fail(self, id: int, exc: BaseException) -> None:
        if isinstance(exc, InferkitError):
            failure = Failure(id=id, error=_error_name(exc), message=exc.detail, where=exc.where)
        elif isinstance(exc, asyncio.CancelledError):
            # The caller is gone; this only tells the main process the call is over.
            failure = Failure(id=id, error="InferenceFailed", message="Cancelled")
        elif isinstance(exc, Exception):
            # As in-process: the text stays in the log, the client gets a generic message.
            log.error("Model '%s' raised during predict", self.name, exc_info=exc)
            message = f"Model '{self.name}' failed to run inference; see the server log"
            failure = Failure(id=id, error="InferenceFailed", message=message)
        else:
            raise exc  # SystemExit, KeyboardInterrupt: not ours to swallow
        self._send(failure)


async def _responses(
    model: ModelProtocol, requests: AsyncIterator[InferenceRequest]
) -> AsyncIterator[InferenceResponse]:
    if has_own_stream(model):
        async for response in cast(StreamingModel, model).predict_stream(requests):
            yield response
        return
    async for request in requests:  # the default: one predict per request
        yield await model.predict(request)


def _error_name(exc: InferkitError) -> str:
    """The nearest class of :mod:`inferkit.errors` (a model's own subclass travels as its base)."""
    for cls in type(exc).__mro__:
        if getattr(errors, cls.__name__, None) is cls:
            return str(cls.__name__)
    return "InferenceFailed"


def _reason(exc: BaseException) -> str:
    # The same wording the registry uses for a model that fails to load in-process.
    if isinstance(exc, InferkitError):
        return exc.message
    text = str(exc)
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def _register_codecs(model: Model, paths: list[str]) -> None:
    if not paths:
        return
    model.codecs = model.codecs.copy()
    for path in paths:
        module, _, qualname = path.partition(":")
        try:
            codec: Any = importlib.import_module(module)
            for part in qualname.split("."):
                codec = getattr(codec, part)
        except Exception as exc:
            log.warning("Codec %s is not available in the worker: %s", path, _reason(exc))
            continue
        if hasattr(codec, "decode_request"):
            model.codecs.register_request_codec(codec)
        else:
            model.codecs.register_input_codec(codec)


def _run(main: Any) -> bool:
    # The same loop as the main process (uvloop when installed): a cheaper hop per message.
    try:
        import uvloop
    except ImportError:
        return asyncio.run(main)  # type: ignore[no-any-return]
    return uvloop.run(main)  # type: ignore[no-any-return]

"""The main process's end of one worker: its process, channel, arenas and the calls in flight.

A :class:`WorkerProcess` is started once and never restarted; ``ParallelModel`` replaces a
dead one with a new instance. Its ``state`` goes ``starting`` -> ``ready`` ->
``dead`` (the channel closed without being asked) or ``stopped``.
"""

from __future__ import annotations

import asyncio
import logging
import signal
import socket
from collections.abc import Callable
from dataclasses import dataclass, field
from multiprocessing.context import SpawnContext, SpawnProcess
from typing import Any, Literal

import msgspec

from .. import errors
from ..errors import InferenceFailed, InferkitError, ModelLoadError, WorkerLost
from ..types import InferenceRequest, InferenceResponse, MetadataModelResponse
from .channel import Channel, open_channel
from .environment import Environment, EnvironmentProcess
from .memory import Arena, InheritedFd
from .messages import (
    Call,
    Cancel,
    Close,
    Done,
    Failure,
    Item,
    LoadFailed,
    Metrics,
    Open,
    Push,
    Ready,
    Release,
    Reply,
    Stop,
    Wire,
    WorkerMessage,
)
from .metrics import MetricChange
from .worker import WorkerConfig, run

__all__ = ["END", "WorkerProcess", "describe_exit"]

log = logging.getLogger("inferkit.parallel")

WorkerState = Literal["starting", "ready", "dead", "stopped"]

_SOCKET_BUFFER = 1024 * 1024

#: Put in a stream's queue after its last response.
END: Any = object()


@dataclass(eq=False)
class _Pending:
    """A call (``future``) or a stream (``queue``) the worker has not finished."""

    future: asyncio.Future[InferenceResponse] | None = None
    queue: asyncio.Queue[Any] | None = None
    blocks: list[int] = field(default_factory=list)


class WorkerProcess:
    """One ``spawn``-ed worker as seen from the main process."""

    def __init__(
        self,
        context: SpawnContext,
        config: WorkerConfig,
        on_death: Callable[[WorkerProcess], None],
        on_metrics: Callable[[list[MetricChange]], None],
        environment: Environment | None = None,
    ) -> None:
        self.index = config.index
        self.model = config.settings.name
        self.state: WorkerState = "starting"
        self.pid: int | None = None
        self.metadata: MetadataModelResponse | None = None
        #: Whether the worker's model has its own ``predict_stream``.
        self.streams = False
        #: The model's custom REST handlers, as the worker reported them when it loaded.
        self.handlers: list[str] = []
        #: Calls and streams in flight, by id.
        self.pending: dict[int, _Pending] = {}
        #: How many of them failed when the worker died.
        self.lost_calls = 0
        self._context = context
        #: The model's own Python environment, whose interpreter runs the worker; or None.
        self._environment = environment
        self._config = config
        self._on_death = on_death
        self._on_metrics = on_metrics
        self._requests = Arena.create(config.arena_size)
        self._responses = Arena.create(config.arena_size)
        self._wire = Wire(self._requests, self._responses, config.threshold, WorkerMessage)
        self._sock: socket.socket | None = None
        self._channel: Channel | None = None
        self._process: SpawnProcess | None = None
        self._started: asyncio.Future[Ready | LoadFailed | None] | None = None
        self._disposed = False

    @property
    def inflight(self) -> int:
        """Calls and streams sent and not answered yet."""
        return len(self.pending)

    # -- lifecycle ---------------------------------------------------------------------

    async def start(self) -> None:
        """Spawn the process and wait until its model is loaded; raises ModelLoadError."""
        loop = asyncio.get_running_loop()
        self._started = loop.create_future()
        parent, child = socket.socketpair()
        for end in (parent, child):
            # Larger than the 208 KiB default, so an inline message rarely needs several
            # wake-ups of the reader; the kernel caps it at net.core.wmem_max.
            end.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, _SOCKET_BUFFER)
        self._sock = parent
        spec: dict[str, Any] = dict(
            target=run,
            args=(
                msgspec.msgpack.encode(self._config),
                child,
                InheritedFd(self._requests.fd),
                InheritedFd(self._responses.fd),
            ),
            name=f"inferkit-worker-{self.index}[{self.model}]",
        )
        process: SpawnProcess = (
            self._context.Process(**spec)
            if self._environment is None
            else EnvironmentProcess(self._environment, **spec)
        )
        try:
            process.start()
        except BaseException:
            parent.close()
            raise
        finally:
            child.close()  # the worker's end lives in the worker only, so its death is an EOF
        self._process = process
        self._channel = await open_channel(parent, self._on_frame, self._on_lost)
        outcome = await self._started
        if isinstance(outcome, Ready):
            self.pid, self.metadata, self.state = outcome.pid, outcome.metadata, "ready"
            self.streams = outcome.streams
            self.handlers = outcome.handlers
            return
        if isinstance(outcome, LoadFailed):
            raise ModelLoadError(outcome.reason, model=self.model)
        code = await self.wait_exit(5.0)
        raise ModelLoadError(
            f"Worker {self.index} of model '{self.model}' {describe_exit(code)} while loading",
            model=self.model,
        )

    async def stop(self, timeout: float) -> None:
        """Ask the worker to unload and exit; terminate, then kill it if it does not in time."""
        if self.state != "dead":
            self.state = "stopped"
        if self._channel is not None and self._channel.open:
            self._channel.send(msgspec.msgpack.encode(Stop()))
        if self._process is not None and await self.wait_exit(timeout) is None:
            log.warning(
                "Worker %d of model '%s' did not stop within %gs; terminating it",
                self.index,
                self.model,
                timeout,
            )
            self._process.terminate()
            if await self.wait_exit(timeout) is None:
                self._process.kill()
                await self.wait_exit(None)
        self.dispose()

    async def wait_exit(self, timeout: float | None) -> int | None:
        """Wait (without blocking the loop) for the process to end; its exit code, or None."""
        process = self._process
        if process is None:
            return None
        if process.exitcode is None:
            loop = asyncio.get_running_loop()
            ended: asyncio.Future[None] = loop.create_future()
            # The sentinel becomes readable when the process ends: no thread, no polling.
            loop.add_reader(process.sentinel, _settle, ended)
            try:
                await asyncio.wait_for(ended, timeout)
            except asyncio.TimeoutError:
                return None
            finally:
                loop.remove_reader(process.sentinel)
            process.join()  # reaps it; immediate once the sentinel fired
        return process.exitcode

    def dispose(self) -> None:
        """Release the channel, the mappings and the process handle (the process has ended)."""
        if self._disposed:
            return
        self._disposed = True
        if self._channel is not None:
            self._channel.close()
        self._requests.close()
        self._responses.close()
        if self._process is not None and self._process.exitcode is not None:
            self._process.close()

    def abandon(self, timeout: float) -> None:
        """At interpreter exit, with no event loop: hang up, wait a little, then kill."""
        process = self._process
        if process is None or process.exitcode is not None:
            return
        if self._sock is not None:
            try:
                self._sock.shutdown(socket.SHUT_RDWR)  # the worker sees EOF and exits
            except OSError:
                pass
        process.join(timeout)
        if process.exitcode is None:
            process.kill()
            process.join()

    # -- calls -------------------------------------------------------------------------

    def call(self, id: int, request: InferenceRequest) -> asyncio.Future[InferenceResponse]:
        """Send a request; the future gets the response or the error."""
        self._check_open()
        frame, blocks = self._wire.encode(Call(id=id, request=request))
        future: asyncio.Future[InferenceResponse] = asyncio.get_running_loop().create_future()
        self.pending[id] = _Pending(future=future, blocks=blocks)
        self._send(frame)
        return future

    def cancel(self, id: int) -> None:
        """Tell the worker the caller gave up on call or stream ``id``."""
        if id in self.pending and self._channel is not None and self._channel.open:
            self._send(msgspec.msgpack.encode(Cancel(id=id)))

    def open_stream(self, id: int) -> asyncio.Queue[Any]:
        """Start a stream; its queue gets responses, then :data:`END` or an error."""
        self._check_open()
        queue: asyncio.Queue[Any] = asyncio.Queue()
        self.pending[id] = _Pending(queue=queue)
        self._send(msgspec.msgpack.encode(Open(id=id)))
        return queue

    def push(self, id: int, request: InferenceRequest | None) -> None:
        """Send the next request of a stream (None: there are no more)."""
        if id not in self.pending or self._channel is None or not self._channel.open:
            return
        if request is None:
            self._send(msgspec.msgpack.encode(Close(id=id)))
        else:
            self._send(self._wire.encode(Push(id=id, request=request), shared=False)[0])

    def _check_open(self) -> None:
        # The socket can be closing a moment before the loop reports the worker gone.
        if self._channel is None or not self._channel.open:
            raise self._died()

    def _died(self) -> WorkerLost:
        return WorkerLost(
            f"Worker {self.index} (pid {self.pid}) of model '{self.model}' died "
            "while running this request",
            model=self.model,
        )

    def _send(self, frame: bytes) -> None:
        assert self._channel is not None
        self._channel.send(frame)

    # -- from the worker ---------------------------------------------------------------

    def _on_frame(self, frame: bytes | memoryview) -> None:
        message = self._wire.decode(frame)
        if isinstance(message, Reply):
            pending = self._finish(message.id)
            if self._wire.read_shared and self._channel is not None and self._channel.open:
                self._send(msgspec.msgpack.encode(Release(id=message.id)))
            if pending.future is not None and not pending.future.done():
                pending.future.set_result(message.response)
        elif isinstance(message, Failure):
            self._resolve(self._finish(message.id), _error(message))
        elif isinstance(message, Item):
            queue = self.pending[message.id].queue
            assert queue is not None
            queue.put_nowait(message.response)
        elif isinstance(message, Done):
            self._resolve(self._finish(message.id), END)
        elif isinstance(message, Metrics):
            self._on_metrics(message.changes)
        elif isinstance(message, (Ready, LoadFailed)):
            assert self._started is not None
            if not self._started.done():
                self._started.set_result(message)

    def _finish(self, id: int) -> _Pending:
        pending = self.pending.pop(id)
        self._wire.free(pending.blocks)
        return pending

    @staticmethod
    def _resolve(pending: _Pending, outcome: Any) -> None:
        if pending.queue is not None:
            pending.queue.put_nowait(outcome)
        elif pending.future is not None and not pending.future.done():
            pending.future.set_exception(outcome)

    def _on_lost(self) -> None:
        if self._started is not None and not self._started.done():
            self._started.set_result(None)
        if self.state == "stopped":
            return
        was_ready = self.state == "ready"
        self.state = "dead"
        self.lost_calls = len(self.pending)
        for pending in self.pending.values():
            # A fresh error per call: exceptions carry tracebacks and must not be shared.
            self._resolve(pending, self._died())
        self.pending.clear()
        if was_ready:
            self._on_death(self)


def _settle(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)


def _error(failure: Failure) -> InferkitError:
    cls = getattr(errors, failure.error, None)
    if not (isinstance(cls, type) and issubclass(cls, InferkitError)):
        cls = InferenceFailed
    return cls(failure.message, where=failure.where)


def describe_exit(code: int | None) -> str:
    """``exited with code 1``, ``was killed by SIGKILL``, or ``exited`` (code unknown)."""
    if code is None:
        return "exited"
    if code < 0:
        try:
            return f"was killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"was killed by signal {-code}"
    return f"exited with code {code}"

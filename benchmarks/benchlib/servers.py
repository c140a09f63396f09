"""Servers under test: how each is started, when it counts as ready, and how it is stopped.

A server is started pinned to the server CPU, on free loopback ports, with its output in a log
file. It is *ready* when every model it should serve is READY in its repository index (inferkit,
MLServer), when ``/v2/health/ready`` answers 200 (the bare REST apps) or when its gRPC port
accepts connections (the bare gRPC server); the time from ``Popen`` to that moment is its
start-to-ready time. A model that FAILED is left out and reported.
"""

from __future__ import annotations

import json
import os
import selectors
import signal
import socket
import subprocess
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from . import procstats
from .loaders import pinned
from .probe import exchange
from .scenarios import Payload

__all__ = [
    "Floor",
    "FloorFigures",
    "Ports",
    "RunningServer",
    "ServerFailed",
    "ServerSpec",
    "free_port",
    "measure_floor",
    "start_server",
    "stop_server",
]

#: Seconds to wait between readiness probes.
_POLL_S = 0.02
#: The script that imports the model libraries and loads the artefacts, no server.
_FLOOR_SCRIPT = Path(__file__).with_name("floor.py")


class ServerFailed(Exception):
    """A server exited or did not become ready; the message ends with its log's tail."""


def free_port() -> int:
    """A port that was free on 127.0.0.1 a moment ago."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass(frozen=True)
class Ports:
    """A server's listening ports (gRPC and metrics are taken even when unused: no clashes)."""

    http: int
    grpc: int
    metrics: int

    @classmethod
    def free(cls) -> Ports:
        """Three free loopback ports."""
        return cls(free_port(), free_port(), free_port())


@dataclass(frozen=True)
class ServerSpec:
    """How to run one server under test."""

    #: Short key used on the command line and in the results (``mlserver-pw0``).
    name: str
    #: The table's description (``MLServer 1.7.1, parallel_workers 0``).
    label: str
    #: "subject" (inferkit), "baseline" (MLServer), "ceiling" / "reference" (bare apps).
    role: str
    command: Sequence[str]
    ports: Ports
    #: The models it serves (its readiness waits for them).
    models: Sequence[str]
    #: "index": every model READY in ``/v2/repository/index``; "health": ``/v2/health/ready``;
    #: "grpc-port": the gRPC port accepts a connection.
    readiness: str
    transports: frozenset[str] = frozenset({"rest"})
    #: Address a payload by its key instead of its model's name (the fixed-reply app has one
    #: reply per payload, and two payloads share the ``sum`` model).
    by_payload: bool = False
    #: Answers by payload key that differ from the payload's own (a model built by another venv).
    expected: Mapping[str, tuple[float, ...]] = field(default_factory=dict)
    #: Payloads it is known not to support, by key, and why. They are still tried once: a
    #: server that refuses one shows "not supported" in that row (one that answers it right
    #: runs it like any other payload).
    unsupported: Mapping[str, str] = field(default_factory=dict)
    env: Mapping[str, str] | None = None
    #: The key of the floor (model libraries alone, same interpreter) its start-up is read
    #: against, for the servers that load the models; None for the others.
    floor: str | None = None

    def model_for(self, payload: Payload) -> str:
        """The model name in the URL for ``payload``."""
        return payload.key if self.by_payload else payload.model


@dataclass
class RunningServer:
    """A started server and what its start measured."""

    spec: ServerSpec
    process: subprocess.Popen[bytes]
    log: Path
    ready_s: float = 0.0
    #: Models that were READY; the others are in ``failed`` with the reason.
    ready_models: list[str] = field(default_factory=list)
    failed: dict[str, str] = field(default_factory=dict)

    def pids(self) -> list[int]:
        """The server's process and its descendants (workers)."""
        return procstats.process_tree(self.process.pid)


def start_server(spec: ServerSpec, log: Path, cpu: int | None, timeout_s: float) -> RunningServer:
    """Start ``spec`` pinned to ``cpu`` and wait until it is ready (or raise ServerFailed)."""
    env = {**os.environ, **(spec.env or {})}
    with log.open("wb") as stream:
        began = time.monotonic()
        process = subprocess.Popen(
            pinned(list(spec.command), cpu),
            stdout=stream,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=env,
        )
    running = RunningServer(spec, process, log)
    try:
        waits = {"index": _wait_for_models, "health": _wait_for_health, "grpc-port": _wait_for_port}
        waits[spec.readiness](running, began + timeout_s)
    except BaseException:
        stop_server(running)
        raise
    running.ready_s = time.monotonic() - began
    return running


def _wait_for_health(running: RunningServer, deadline: float) -> None:
    while True:
        _check_alive(running, deadline)
        try:
            if exchange(running.spec.ports.http, "GET", "/v2/health/ready", timeout=5)[0] == 200:
                running.ready_models = list(running.spec.models)
                return
        except OSError:
            pass
        time.sleep(_POLL_S)


def _wait_for_port(running: RunningServer, deadline: float) -> None:
    while True:
        _check_alive(running, deadline)
        try:
            socket.create_connection(("127.0.0.1", running.spec.ports.grpc), timeout=5).close()
        except OSError:
            time.sleep(_POLL_S)
            continue
        running.ready_models = list(running.spec.models)
        return


def _wait_for_models(running: RunningServer, deadline: float) -> None:
    wanted = set(running.spec.models)
    while True:
        _check_alive(running, deadline)
        try:
            status, body = exchange(
                running.spec.ports.http, "POST", "/v2/repository/index", b"{}", timeout=5
            )
        except OSError:
            status, body = 0, b""
        if status == 200:
            states = {item["name"]: item for item in json.loads(body) if item["name"] in wanted}
            ready = [name for name, item in states.items() if item.get("state") == "READY"]
            failed = {
                name: item.get("reason") or "FAILED"
                for name, item in states.items()
                if item.get("state") == "FAILED"
            }
            if len(ready) + len(failed) == len(wanted):
                running.ready_models = sorted(ready, key=running.spec.models.index)
                running.failed = failed
                return
        time.sleep(_POLL_S)


def _check_alive(running: RunningServer, deadline: float) -> None:
    code = running.process.poll()
    if code is not None:
        raise ServerFailed(f"{running.spec.name} exited with {code}:\n{_tail(running.log)}")
    if time.monotonic() > deadline:
        raise ServerFailed(f"{running.spec.name} was not ready in time:\n{_tail(running.log)}")


def _tail(log: Path, lines: int = 15) -> str:
    try:
        text = log.read_text(errors="replace")
    except OSError:
        return "(no log)"
    return "\n".join(text.splitlines()[-lines:])


def stop_server(running: RunningServer, grace_s: float = 20.0) -> None:
    """SIGTERM the server, then SIGKILL it and any of its workers still there after ``grace_s``."""
    alive = running.process.poll() is None
    tree = [(pid, procstats.start_time(pid)) for pid in running.pids()] if alive else []
    if running.process.poll() is None:
        running.process.send_signal(signal.SIGTERM)
    try:
        running.process.wait(timeout=grace_s)
    except subprocess.TimeoutExpired:
        running.process.kill()
        running.process.wait()
    # Workers it started and left behind are ours to end, by pid, if the pid is still theirs.
    for pid, started in tree[1:]:
        if started is not None and procstats.start_time(pid) == started:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass


@dataclass(frozen=True)
class Floor:
    """The model libraries alone, measured like a server: ``floor.py`` run by ``python``."""

    #: Its key in the start-up table (``floor``, ``floor-mlserver``).
    name: str
    label: str
    python: str
    #: Folder with ``<model>/model.*`` (the artefacts that interpreter built).
    artifacts: Path
    #: The models to load (``sum`` needs numpy only).
    models: Sequence[str]


@dataclass(frozen=True)
class FloorFigures:
    """Seconds from spawn to ``ready``, and the RSS then (bytes)."""

    ready_s: float
    rss: int
    models: list[str]


def measure_floor(floor: Floor, log: Path, cpu: int | None, timeout_s: float) -> FloorFigures:
    """Run ``floor`` pinned to ``cpu``, time it to its ``ready`` line, take its RSS, kill it.

    Raises ServerFailed (with its log's tail) when it exits or stays silent past ``timeout_s``.
    """
    command = [floor.python, str(_FLOOR_SCRIPT), str(floor.artifacts), *floor.models]
    with log.open("wb") as stream:
        began = time.monotonic()
        process = subprocess.Popen(
            pinned(command, cpu), stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=stream
        )
    assert process.stdout is not None
    try:
        with selectors.DefaultSelector() as selector:
            selector.register(process.stdout, selectors.EVENT_READ)
            remaining = timeout_s
            while remaining > 0 and not selector.select(remaining):
                remaining = began + timeout_s - time.monotonic()
            line = process.stdout.readline() if remaining > 0 else b""
        ready_s = time.monotonic() - began
        if not line.startswith(b"ready "):
            why = "was not ready in time" if remaining <= 0 else f"said {line[:200]!r}"
            raise ServerFailed(f"{floor.name} {why}:\n{_tail(log)}")
        rss = procstats.rss(procstats.process_tree(process.pid))
        figures = FloorFigures(ready_s, rss, json.loads(line[6:]))
    finally:
        process.kill()
        process.communicate()
    return figures

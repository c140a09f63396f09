"""Transport drivers: how a scenario's request is checked once and then sent under load.

A driver knows one transport. ``verify`` sends the request once with a real client, checks the
whole answer and returns the marker bytes the load generator looks for in every response;
``load`` drives the server for a fixed duration and returns a :class:`LoadResult`.

- ``rest``: :class:`RestDriver` here; the standard library checks, wrk or ``pyload`` loads.
- ``grpc``: :class:`~benchlib.grpcdriver.GrpcDriver`; grpcio checks (with Triton's generated
  messages from ``tritonclient.grpc``), h2load or ``pygrpcload`` loads. It needs
  ``tritonclient[grpc]``; without it the gRPC rows are skipped with a note saying so.
"""

from __future__ import annotations

import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import Protocol

from .answers import AnswerError, check_answer, data_marker
from .grpcloaders import h2load_version
from .loaders import LoadResult, LoadTarget, run_load
from .probe import exchange
from .scenarios import Request, Scenario
from .servers import RunningServer

__all__ = ["Driver", "RestDriver", "drivers"]


class Driver(Protocol):
    """What the harness needs of a transport."""

    #: How the load is generated, for the results (``wrk 4.1.0``).
    loader: str

    def verify(self, server: RunningServer, request: Request, expected: Sequence[float]) -> bytes:
        """Send ``request`` once, check the answer (raise ``AnswerError``), return the marker."""
        ...

    def load(
        self,
        server: RunningServer,
        request: Request,
        scenario: Scenario,
        marker: bytes,
        duration_s: int,
        cpu: int | None,
    ) -> LoadResult:
        """Closed-loop load for ``duration_s`` at the scenario's concurrency."""
        ...


class RestDriver:
    """V2 REST: ``POST /v2/models/{model}/infer`` (JSON or binary body), by wrk or ``pyload``."""

    def __init__(self, work_dir: Path, use_wrk: bool, loader: str) -> None:
        self.work_dir = work_dir
        self.use_wrk = use_wrk
        self.loader = loader
        self._bodies: dict[str, Path] = {}

    def _path(self, server: RunningServer, request: Request) -> str:
        return f"/v2/models/{server.spec.model_for(request.payload)}/infer"

    def verify(self, server: RunningServer, request: Request, expected: Sequence[float]) -> bytes:
        """One real exchange; the full answer is parsed and compared."""
        port, path = server.spec.ports.http, self._path(server, request)
        status, body = exchange(port, "POST", path, request.body, headers=request.headers)
        if status != 200:
            raise AnswerError(f"HTTP {status}: {body[:300].decode('utf-8', 'replace')}")
        check_answer(body, expected, request.rtol)
        return data_marker(body)

    def load(
        self,
        server: RunningServer,
        request: Request,
        scenario: Scenario,
        marker: bytes,
        duration_s: int,
        cpu: int | None,
    ) -> LoadResult:
        """wrk (or the asyncio fallback) against the server's HTTP port."""
        target = LoadTarget(
            host="127.0.0.1",
            port=server.spec.ports.http,
            path=self._path(server, request),
            body_file=self._body_file(request),
            marker=marker,
            concurrency=scenario.concurrency,
            duration_s=duration_s,
            timeout_s=scenario.timeout_s,
            headers=request.headers,
        )
        return run_load(target, self.work_dir, cpu, self.use_wrk)

    def _body_file(self, request: Request) -> Path:
        key = request.payload.key
        if key not in self._bodies:
            suffix = "bin" if request.payload.binary else "json"
            path = self.work_dir / f"body-{key}.{suffix}"
            path.write_bytes(request.body)
            self._bodies[key] = path
        return self._bodies[key]


def drivers(
    work_dir: Path, force_python_loader: bool, wrk_version: str | None
) -> tuple[dict[str, Driver], dict[str, str]]:
    """The drivers available here by transport, and why any other transport has none."""
    use_wrk = not force_python_loader and shutil.which("wrk") is not None
    loader = (wrk_version or "wrk") if use_wrk else "pyload (asyncio fallback: slower than wrk)"
    found: dict[str, Driver] = {"rest": RestDriver(work_dir, use_wrk, loader)}
    missing: dict[str, str] = {}
    try:
        from .grpcdriver import GrpcDriver
    except ImportError as exc:
        missing["grpc"] = (
            f"gRPC scenarios skipped: {exc.name or 'a module'} is not installed"
            " (the gRPC driver needs `pip install 'tritonclient[grpc]'`)"
        )
    else:
        h2load = None if force_python_loader else h2load_version()
        grpc_loader = h2load or "pygrpcload (grpcio asyncio fallback: slower than h2load)"
        found["grpc"] = GrpcDriver(work_dir, h2load is not None, grpc_loader)
    return found, missing

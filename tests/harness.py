"""Running the real ``inferkit start`` as a subprocess on free loopback ports, for e2e tests."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

#: Upper bound for a server to become ready; generous for a loaded 2-core CI machine.
READY_TIMEOUT_S = 60.0

ECHO_MODEL = '''
from inferkit import InferenceRequest, InferenceResponse, Model, ResponseOutput


class Echo(Model):
    """Returns every input as an output of the same name, datatype, shape and data."""

    async def predict(self, payload: InferenceRequest) -> InferenceResponse:
        return InferenceResponse(
            model_name=self.name,
            outputs=[
                ResponseOutput(name=t.name, shape=t.shape, datatype=t.datatype, data=t.data)
                for t in payload.inputs
            ],
        )


class Boom(Model):
    async def predict(self, payload: InferenceRequest) -> InferenceResponse:
        raise RuntimeError("secret-db-password")
'''


def free_port() -> int:
    """A port that was free on 127.0.0.1 a moment ago."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def write_repository(root: Path, models: dict[str, dict[str, Any]], **settings: Any) -> Path:
    """A model repository: ``settings.json`` and one folder per model with the echo module."""
    root.mkdir(parents=True, exist_ok=True)
    (root / "settings.json").write_text(json.dumps(settings))
    for folder, model_settings in models.items():
        (root / folder).mkdir(parents=True, exist_ok=True)
        (root / folder / "model-settings.json").write_text(json.dumps(model_settings))
        (root / folder / "model.py").write_text(ECHO_MODEL)
    return root


@dataclass
class Running:
    """A started ``inferkit start`` process and where it listens."""

    process: subprocess.Popen[str]
    http_port: int
    grpc_port: int
    metrics_port: int
    #: Where the server's stdout and stderr go: a file, so a chatty server never blocks on a
    #: full pipe that nobody reads while the test runs.
    log_path: Path
    #: "https" when the server's HTTP port speaks TLS.
    scheme: str = "http"

    @property
    def url(self) -> str:
        return f"{self.scheme}://127.0.0.1:{self.http_port}"

    @property
    def grpc(self) -> str:
        return f"127.0.0.1:{self.grpc_port}"

    def log(self) -> str:
        """What the server has written so far."""
        return self.log_path.read_text(errors="replace")

    def stop(self, timeout: float = 30.0) -> tuple[int, str]:
        """SIGTERM, wait, and return the exit code and what the server logged."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        return self.process.returncode, self.log()


@contextmanager
def inferkit_start(
    folder: Path,
    *extra: str,
    env: dict[str, str] | None = None,
    tls: dict[str, Any] | None = None,
) -> Iterator[Running]:
    """Start ``inferkit start folder`` on free loopback ports and wait until it is ready.

    With ``tls`` (``httpx.Client`` options: ``verify``, ``cert``), the HTTP port is polled
    over HTTPS with them.
    """
    ports = free_port(), free_port(), free_port()
    command = [
        sys.executable,
        "-m",
        "inferkit",
        "start",
        str(folder),
        "--host",
        "127.0.0.1",
        "--http-port",
        str(ports[0]),
        "--grpc-port",
        str(ports[1]),
        "--metrics-port",
        str(ports[2]),
        *extra,
    ]
    log_path = Path(tempfile.mkstemp(prefix="inferkit-e2e-", suffix=".log")[1])
    with log_path.open("w") as log:
        process = subprocess.Popen(
            command,
            stdout=log,
            stderr=subprocess.STDOUT,
            text=True,
            env={**os.environ, **(env or {})},
        )
    running = Running(process, *ports, log_path=log_path, scheme="https" if tls else "http")
    try:
        _wait_ready(running, tls or {})
        yield running
    finally:
        running.stop()
        log_path.unlink(missing_ok=True)


def _wait_ready(running: Running, options: dict[str, Any]) -> None:
    deadline = time.monotonic() + READY_TIMEOUT_S
    with httpx.Client(base_url=running.url, timeout=2.0, **options) as http:
        while time.monotonic() < deadline:
            if running.process.poll() is not None:
                raise RuntimeError(
                    f"inferkit exited with {running.process.returncode}:\n{running.log()}"
                )
            try:
                if http.get("/v2/health/ready").status_code == 200:
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.05)  # polling a probe, as Kubernetes does; bounded by the deadline
    raise TimeoutError(f"inferkit was not ready within {READY_TIMEOUT_S}s")

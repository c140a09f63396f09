"""Running the real ``inferkit start`` as a subprocess on free loopback ports, for e2e tests."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
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

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"

    @property
    def grpc(self) -> str:
        return f"127.0.0.1:{self.grpc_port}"

    def stop(self, timeout: float = 30.0) -> tuple[int, str]:
        """SIGTERM, wait, and return the exit code and what the server logged."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        try:
            _, err = self.process.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            _, err = self.process.communicate()
        return self.process.returncode, err


@contextmanager
def inferkit_start(
    folder: Path, *extra: str, env: dict[str, str] | None = None
) -> Iterator[Running]:
    """Start ``inferkit start folder`` on free loopback ports and wait until it is ready."""
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
    process = subprocess.Popen(
        command,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, **(env or {})},
    )
    running = Running(process, *ports)
    try:
        _wait_ready(running)
        yield running
    finally:
        running.stop()


def _wait_ready(running: Running) -> None:
    deadline = time.monotonic() + READY_TIMEOUT_S
    with httpx.Client(base_url=running.url, timeout=2.0) as http:
        while time.monotonic() < deadline:
            if running.process.poll() is not None:
                _, err = running.process.communicate()
                raise RuntimeError(f"inferkit exited with {running.process.returncode}:\n{err}")
            try:
                if http.get("/v2/health/ready").status_code == 200:
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.05)  # polling a probe, as Kubernetes does; bounded by the deadline
    raise TimeoutError(f"inferkit was not ready within {READY_TIMEOUT_S}s")

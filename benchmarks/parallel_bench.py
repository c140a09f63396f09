"""Throughput of ``parallel_workers`` 0, 1 and 2: ``python benchmarks/parallel_bench.py``.

Two models, served over REST by the real ``inferkit start`` and, beside it, by MLServer 1.7.1
(``mlserver start`` from ``benchmarks/.venv-mlserver``; skipped with a note when that venv is
missing or with ``--no-mlserver``) with the same settings: one server per (server, worker count),
all started first, runs interleaved so a noisy machine's drifts hit them alike:

- ``cpu``: a pure-Python loop of about 5 ms per request (calibrated here, then fixed), the case
  workers exist for: the GIL keeps an in-process model on one core;
- ``trivial``: returns its input; measures what the hop to a worker costs.

Load is closed-loop (``wrk`` if installed, else a small asyncio client) with a fixed number of
connections for a bounded duration; the table gives requests/s (median of the runs) and the
ratios to the same server's in-process row and to inferkit's. The load generator shares the
machine's cores with the servers and their workers: on a 2-core machine the figures are noisy and
the 2-worker gain is capped.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

MODELS = '''
import numpy as np

from inferkit import InferenceResponse, Model, ResponseOutput


class Spin(Model):
    """About 5 ms of pure-Python work per request (``parameters.extra.loops`` iterations)."""

    async def load(self):
        self.loops = int(self.settings.parameters.extra["loops"])
        return True

    async def predict(self, payload):
        total = 0
        for i in range(self.loops):
            total += i * i
        return InferenceResponse(
            model_name=self.name,
            outputs=[ResponseOutput(name="total", shape=[1], datatype="INT64", data=[total])],
        )


class Trivial(Model):
    async def predict(self, payload):
        t = payload.inputs[0]
        return InferenceResponse(
            model_name=self.name,
            outputs=[ResponseOutput(name=t.name, shape=t.shape, datatype=t.datatype, data=t.data)],
        )
'''

# The same two models for MLServer (its ``MLModel`` API); identical work per request.
MLSERVER_MODELS = """
from mlserver import MLModel
from mlserver.types import InferenceResponse, ResponseOutput


class Spin(MLModel):
    async def load(self):
        self.loops = int(self.settings.parameters.extra["loops"])
        return True

    async def predict(self, payload):
        total = 0
        for i in range(self.loops):
            total += i * i
        return InferenceResponse(
            model_name=self.name,
            outputs=[ResponseOutput(name="total", shape=[1], datatype="INT64", data=[total])],
        )


class Trivial(MLModel):
    async def load(self):
        return True

    async def predict(self, payload):
        t = payload.inputs[0]
        return InferenceResponse(
            model_name=self.name,
            outputs=[ResponseOutput(name=t.name, shape=t.shape, datatype=t.datatype, data=t.data)],
        )
"""

MLSERVER = Path(__file__).resolve().parent / ".venv-mlserver" / "bin" / "mlserver"
SERVERS = ("inferkit", "mlserver")
BODY = json.dumps(
    {"inputs": [{"name": "x", "shape": [1, 4], "datatype": "FP32", "data": [1, 2, 3, 4]}]}
)
WORKERS = (0, 1, 2)


def calibrate(target_s: float = 0.005) -> int:
    """Loop iterations taking about ``target_s`` here (best of several tries)."""
    loops = 20_000
    best = float("inf")
    for _ in range(20):
        started = time.perf_counter()
        total = 0
        for i in range(loops):
            total += i * i
        best = min(best, time.perf_counter() - started)
    return int(loops * target_s / best)


def repository(root: Path, server: str, workers: int, loops: int) -> Path:
    """A model repository with both models; MLServer's keeps its scratch folders inside it."""
    root.mkdir(parents=True)
    settings: dict[str, object] = {"parallel_workers": workers}
    if server == "mlserver":
        # Same host and ports as inferkit's command line; debug off so no per-request logging.
        settings |= {
            "debug": False, "host": "127.0.0.1", "http_port": free_port(),
            "grpc_port": free_port(), "metrics_port": free_port(),
            "metrics_dir": str(root / ".metrics"), "environments_dir": str(root / ".envs"),
        }  # fmt: skip
    (root / "settings.json").write_text(json.dumps(settings))
    source = MLSERVER_MODELS if server == "mlserver" else MODELS
    for name, cls, extra in (("cpu", "Spin", {"loops": loops}), ("trivial", "Trivial", {})):
        folder = root / name
        folder.mkdir()
        (folder / "models.py").write_text(source)
        settings = {"name": name, "implementation": f"models.{cls}", "parameters": {"extra": extra}}
        (folder / "model-settings.json").write_text(json.dumps(settings))
    return root


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def start(root: Path, server: str) -> tuple[subprocess.Popen[bytes], int]:
    """Start ``server`` on the repository ``root``; return it and its HTTP port once ready."""
    if server == "mlserver":
        port = int(json.loads((root / "settings.json").read_text())["http_port"])
        command = [str(MLSERVER), "start", str(root)]
    else:
        port = free_port()
        command = [
            sys.executable, "-m", "inferkit", "start", str(root), "--host", "127.0.0.1",
            "--http-port", str(port), "--grpc-port", str(free_port()),
            "--metrics-port", str(free_port()), "--log-level", "WARNING",
        ]  # fmt: skip
    # MLServer logs every start-up step; its output goes to a file shown if it fails.
    log = (root / "server.log").open("wb")
    process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, cwd=root)
    log.close()
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if process.poll() is not None:
            tail = (root / "server.log").read_text(errors="replace")[-2000:]
            raise RuntimeError(f"{server} exited with {process.returncode}:\n{tail}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1) as sock:
                sock.sendall(b"GET /v2/health/ready HTTP/1.1\r\nHost: x\r\n\r\n")
                if sock.recv(64).startswith(b"HTTP/1.1 200"):
                    return process, port
        except OSError:
            pass
        time.sleep(0.1)
    process.kill()
    raise TimeoutError(f"{server} did not become ready")


def verify(port: int, loops: int) -> None:
    """One request per model, checked against the expected answer (both servers do the same)."""
    expected = {"cpu": [sum(i * i for i in range(loops))], "trivial": [1, 2, 3, 4]}
    for model, data in expected.items():
        request = urllib.request.Request(
            f"http://127.0.0.1:{port}/v2/models/{model}/infer",
            data=BODY.encode(),
            headers={"Content-Type": "application/json"},
        )
        with urllib.request.urlopen(request, timeout=30) as response:
            got = json.loads(response.read())["outputs"][0]["data"]
        if got != data:
            raise AssertionError(f"{model} on port {port} answered {got!r}, not {data!r}")


def wrk(port: int, model: str, seconds: float, connections: int, script: Path) -> tuple[float, int]:
    url = f"http://127.0.0.1:{port}/v2/models/{model}/infer"
    threads = min(2, connections)
    out = subprocess.run(
        ["wrk", f"-t{threads}", f"-c{connections}", f"-d{seconds:g}s", "-s", str(script), url],
        capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip
    rate = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]
    bad = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    return rate, int(bad.group(1)) if bad else 0


async def pyload(port: int, model: str, seconds: float, connections: int) -> tuple[float, int]:
    """Closed-loop HTTP/1.1 keep-alive POSTs on raw connections (when wrk is not installed)."""
    body = BODY.encode()
    request = (
        f"POST /v2/models/{model}/infer HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    ).encode() + body
    deadline = time.monotonic() + seconds
    counts = [0, 0]

    async def client() -> None:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        while time.monotonic() < deadline:
            writer.write(request)
            head = await reader.readuntil(b"\r\n\r\n")
            length = int(re.search(rb"(?i)content-length: (\d+)", head).group(1))  # type: ignore[union-attr]
            await reader.readexactly(length)
            counts[0 if head.startswith(b"HTTP/1.1 200") else 1] += 1
        writer.close()

    started = time.monotonic()
    await asyncio.gather(*(client() for _ in range(connections)))
    return counts[0] / (time.monotonic() - started), counts[1]


def measure(
    port: int, model: str, seconds: float, connections: int, script: Path
) -> tuple[float, int]:
    """Requests/s and the count of non-2xx answers of one closed-loop run."""
    if shutil.which("wrk"):
        return wrk(port, model, seconds, connections, script)
    return asyncio.run(pyload(port, model, seconds, connections))


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--duration", type=float, default=5.0, help="seconds per run (5)")
    parser.add_argument("--runs", type=int, default=3, help="runs per cell, median (3)")
    parser.add_argument("--connections", type=int, default=8, help="concurrent clients (8)")
    parser.add_argument("--no-mlserver", action="store_true", help="inferkit only")
    args = parser.parse_args()
    servers: tuple[str, ...] = SERVERS
    if args.no_mlserver:
        servers = ("inferkit",)
    elif not MLSERVER.exists():
        print(f"MLServer skipped: {MLSERVER} not found", flush=True)
        servers = ("inferkit",)

    loops = calibrate()
    print(f"cpu model: {loops} loop iterations (~5 ms here); {os.cpu_count()} CPUs", flush=True)
    rates: dict[tuple[str, str, int], list[float]] = {}
    bad = 0
    with tempfile.TemporaryDirectory() as tmp:
        script = Path(tmp, "post.lua")
        script.write_text(
            f'wrk.method = "POST"\nwrk.body = {json.dumps(BODY)}\n'
            'wrk.headers["Content-Type"] = "application/json"\n'
        )
        running: dict[tuple[str, int], tuple[subprocess.Popen[bytes], int]] = {}
        try:
            for n in WORKERS:
                for server in servers:
                    root = repository(Path(tmp, f"{server}-w{n}"), server, n, loops)
                    running[server, n] = start(root, server)
                    verify(running[server, n][1], loops)
            for model in ("cpu", "trivial"):
                for _ in range(args.runs):
                    # Innermost loop over servers: each cell's runs are back to back.
                    for n in WORKERS:
                        for server in servers:
                            port = running[server, n][1]
                            measure(port, model, 1, args.connections, script)  # warm-up
                            rate, errors = measure(
                                port, model, args.duration, args.connections, script
                            )
                            rates.setdefault((server, model, n), []).append(rate)
                            bad += errors
        finally:
            for process, _ in running.values():
                process.send_signal(signal.SIGTERM)
            for process, _ in running.values():
                try:
                    process.wait(timeout=60)
                except subprocess.TimeoutExpired:
                    process.kill()
                    process.wait()

    header = f"{'server':<9} {'model':<8} {'workers':>7} {'req/s':>9} {'vs own 0':>9}"
    print(f"\n{header} {'vs inferkit 0':>13}   runs")
    for model in ("cpu", "trivial"):
        ours = statistics.median(rates["inferkit", model, 0])
        for n in WORKERS:
            for server in servers:
                runs = rates[server, model, n]
                median = statistics.median(runs)
                own = median / statistics.median(rates[server, model, 0])
                shown = " ".join(f"{r:.0f}" for r in runs)
                print(
                    f"{server:<9} {model:<8} {n:>7} {median:>9.0f} {own:>8.2f}x"
                    f" {median / ours:>12.2f}x   {shown}"
                )
    print(
        f"\nnon-2xx responses: {bad}; load: {'wrk' if shutil.which('wrk') else 'asyncio'}, "
        f"{args.connections} connections, {args.duration:g} s x {args.runs} runs (noisy)"
    )


if __name__ == "__main__":
    main()

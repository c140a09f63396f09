"""What Ray Serve's proxy costs: one small V2 inference through Ray Serve vs ``inferkit start``.

    python benchmarks/ray_overhead.py [--duration 10] [--concurrency 8]

Serves the same one-model repository (a model adding up four FP32 numbers) twice on loopback:
by ``inferkit start``, then by one Ray Serve replica of ``inferkit.integrations.ray_serve``
behind Ray's HTTP proxy (a local Ray instance: 2 CPUs, no dashboard). Each gets the same
closed-loop REST load for ``--duration`` seconds (wrk when on PATH, else the Python loader of
``benchlib``), after a short warm-up, and the table of requests/s and latencies is printed.
Needs the ``ray`` extra. The figures in ``docs/deploy.md`` come from this script.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import httpx
from benchlib.loaders import LoadResult, LoadTarget, run_load

SUM_MODEL = """
import numpy as np

from inferkit import Model, decode_args


class Sum(Model):
    @decode_args
    async def predict(self, x: np.ndarray) -> np.ndarray:
        return x.sum(axis=-1, keepdims=True)
"""
REQUEST = {"inputs": [{"name": "x", "shape": [1, 4], "datatype": "FP32", "data": [1, 2, 3, 4]}]}
MARKER = b"10.0"
READY_TIMEOUT_S = 120.0


def _repository(root: Path) -> Path:
    folder = root / "models" / "sum"
    folder.mkdir(parents=True)
    (folder / "model.py").write_text(SUM_MODEL)
    (folder / "model-settings.json").write_text('{"name": "sum", "implementation": "model.Sum"}')
    return root / "models"


def _free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _wait_ready(port: int) -> None:
    deadline = time.monotonic() + READY_TIMEOUT_S
    while time.monotonic() < deadline:
        try:
            response = httpx.post(
                f"http://127.0.0.1:{port}/v2/models/sum/infer", json=REQUEST, timeout=5
            )
            if response.status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.25)
    raise SystemExit(f"nothing answered on port {port} within {READY_TIMEOUT_S:.0f} s")


def _load(port: int, work: Path, args: argparse.Namespace) -> LoadResult:
    body = work / "body.json"
    body.write_text(json.dumps(REQUEST))
    target = LoadTarget(
        host="127.0.0.1",
        port=port,
        path="/v2/models/sum/infer",
        body_file=body,
        marker=MARKER,
        concurrency=args.concurrency,
        duration_s=2,
        timeout_s=10.0,
    )
    use_wrk = shutil.which("wrk") is not None
    run_load(target, work, cpu=None, use_wrk=use_wrk)  # warm-up
    return run_load(replace(target, duration_s=args.duration), work, cpu=None, use_wrk=use_wrk)


def _inferkit_start(repository: Path, work: Path, args: argparse.Namespace) -> LoadResult:
    port = _free_port()
    command = [
        sys.executable,
        "-m",
        "inferkit",
        "start",
        str(repository),
        f"--http-port={port}",
        f"--grpc-port={_free_port()}",
        f"--metrics-port={_free_port()}",
    ]
    server = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        _wait_ready(port)
        return _load(port, work, args)
    finally:
        server.terminate()
        server.wait(timeout=60)


def _ray_serve(repository: Path, work: Path, args: argparse.Namespace) -> LoadResult:
    import ray
    from ray import serve

    from inferkit.integrations.ray_serve import app_builder

    temp_dir = tempfile.mkdtemp(prefix="ray-", dir="/tmp")
    ray.init(
        address="local",
        num_cpus=2,
        include_dashboard=False,
        _temp_dir=temp_dir,
        log_to_driver=False,
    )
    try:
        port = _free_port()
        serve.start(http_options={"host": "127.0.0.1", "port": port})
        serve.run(app_builder({"repository": str(repository)}), name="inferkit", route_prefix="/")
        _wait_ready(port)
        return _load(port, work, args)
    finally:
        serve.shutdown()
        ray.shutdown()
        shutil.rmtree(temp_dir, ignore_errors=True)


def main() -> None:
    """Run both servers under the same load and print the comparison."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=int, default=10, help="seconds of load per server")
    parser.add_argument("--concurrency", type=int, default=8, help="connections")
    args = parser.parse_args()
    # Both serve with inferkit's defaults but no access log line per request.
    os.environ["INFERKIT_ACCESS_LOG"] = "false"
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        repository = _repository(work)
        rows = {
            "inferkit start": _inferkit_start(repository, work, args),
            "Ray Serve (1 replica)": _ray_serve(repository, work, args),
        }
    loader = "wrk" if shutil.which("wrk") else "benchlib pyload"
    cpus = os.cpu_count()
    print(f"\n{args.concurrency} connections, {args.duration} s each, {loader}, {cpus} CPUs")
    print("| server | req/s | p50 ms | p99 ms | errors |")
    print("| --- | ---: | ---: | ---: | ---: |")
    for name, result in rows.items():
        print(
            f"| {name} | {result.rps:,.0f} | {result.p50_us / 1000:.2f} |"
            f" {result.p99_us / 1000:.2f} | {result.errors} |"
        )


if __name__ == "__main__":
    main()

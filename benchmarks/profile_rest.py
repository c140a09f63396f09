"""CPU per REST request, in process: inferkit's ASGI app against the bare apps of the benchmark.

Drives each app's ASGI callable directly (no sockets, no HTTP parser), so the figure is what
the app itself costs per request, steady under load from other processes because it is CPU
time (``time.process_time``), not wall time. Not run by the tests.

    python benchmarks/profile_rest.py            # table: µs of CPU per request, per app
    python benchmarks/profile_rest.py --profile  # cProfile of the instrumented inferkit app
    python benchmarks/profile_rest.py --profile --sort cumulative
    python benchmarks/profile_rest.py --body large --requests 20   # the 1M-float JSON body

Apps: ``fixed`` (reads the body, fixed reply: the Starlette ceiling), ``minimal`` (msgspec
decode, numpy sum, msgspec encode on Starlette), ``inferkit`` (the REST app alone) and
``inferkit+metrics`` (as ``inferkit start`` serves it, with the REST request metrics).
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import json
import pstats
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parent
sys.path[:0] = [str(ROOT), str(ROOT.parent / "tests")]

from benchlib.bare import fixed_app, minimal_v2_app  # noqa: E402
from toymodels import sum_model  # noqa: E402

from inferkit import Server  # noqa: E402
from inferkit.transports.metrics import create_metrics_app, instrument_rest_app  # noqa: E402
from inferkit.transports.rest import create_rest_app  # noqa: E402

App = Callable[[dict[str, Any], Any, Any], Awaitable[None]]


def body(kind: str) -> bytes:
    """The V2 JSON body of a ``sum`` request: [1, 16] FP32 (small) or [1, 1000000] (large)."""
    n = 16 if kind == "small" else 1_000_000
    data = np.random.default_rng(0).random(n, dtype=np.float32).tolist()
    tensor = {"name": "x", "shape": [1, n], "datatype": "FP32", "data": data}
    return json.dumps({"inputs": [tensor]}).encode()


def scope(payload: bytes) -> dict[str, Any]:
    """An HTTP scope as hypercorn builds it for ``POST /v2/models/sum/infer``."""
    headers = [
        (b"host", b"127.0.0.1:8080"),
        (b"content-type", b"application/json"),
        (b"content-length", str(len(payload)).encode()),
    ]
    return {
        "type": "http",
        "asgi": {"version": "3.0", "spec_version": "2.3"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": "/v2/models/sum/infer",
        "raw_path": b"/v2/models/sum/infer",
        "query_string": b"",
        "root_path": "",
        "headers": headers,
        "client": ("127.0.0.1", 40000),
        "server": ("127.0.0.1", 8080),
    }


async def drive(app: App, payload: bytes, requests: int) -> float:
    """CPU µs per request over ``requests`` calls (after a warm-up), checking the status."""
    statuses: list[int] = []

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": payload, "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        if message["type"] == "http.response.start":
            statuses.append(message["status"])

    base = scope(payload)
    for _ in range(min(requests, 200)):
        await app(dict(base), receive, send)
    started = time.process_time()
    for _ in range(requests):
        await app(dict(base), receive, send)
    elapsed = time.process_time() - started
    if set(statuses) != {200}:
        raise SystemExit(f"unexpected statuses {sorted(set(statuses))}")
    return elapsed / requests * 1e6


async def apps() -> dict[str, App]:
    """Every app measured, the inferkit ones with a started server."""
    plain = Server([sum_model()])
    await plain.start()
    # As ``inferkit start`` serves it: request metrics around the app, and the metrics app's
    # listener counting every inference.
    served = Server([sum_model()])
    await served.start()
    create_metrics_app(served)
    return {
        "fixed": fixed_app({"sum": b'{"model_name":"sum","outputs":[]}'}),
        "minimal": minimal_v2_app(),
        "inferkit": create_rest_app(plain),
        "inferkit+metrics": instrument_rest_app(create_rest_app(served), served),
    }


async def table(payload: bytes, requests: int, rounds: int = 3) -> None:
    # Interleaved rounds, best of each: other processes only ever add time.
    measured: dict[str, float] = {}
    for _ in range(rounds):
        for name, app in (await apps()).items():
            us = await drive(app, payload, requests)
            measured[name] = min(us, measured.get(name, us))
    for name, us in measured.items():
        print(f"{name:18} {us:9.1f} µs/request  {measured['fixed'] / us:5.2f}x fixed")


async def profile(payload: bytes, requests: int, sort: str) -> None:
    app = (await apps())["inferkit+metrics"]
    profiler = cProfile.Profile()
    profiler.enable()
    await drive(app, payload, requests)
    profiler.disable()
    pstats.Stats(profiler).sort_stats(sort).print_stats(30)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--body", choices=["small", "large"], default="small")
    parser.add_argument("--requests", type=int, default=5000)
    parser.add_argument("--profile", action="store_true")
    parser.add_argument("--sort", default="tottime", help="pstats order: tottime, cumulative...")
    args = parser.parse_args()
    payload = body(args.body)
    if args.profile:
        asyncio.run(profile(payload, args.requests, args.sort))
    else:
        asyncio.run(table(payload, args.requests))


if __name__ == "__main__":
    main()

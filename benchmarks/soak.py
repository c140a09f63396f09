"""Soak and fault runs of the real ``inferkit start``: ``nox -s soak`` (not part of CI's run).

Each scenario starts its own server on free loopback ports, drives it with real clients (httpx
for REST, tritonclient's asyncio client for gRPC) in closed loops, does one unkind thing to it,
and reports what the clients saw, second by second:

- ``soak``: saturation for ``--minutes`` (10 by default) on REST + gRPC at once; errors and the
  resident memory of the server and its workers, sampled every few seconds. The growth is read
  from the end of the warm-up (a tenth of the run, at least 30 s) to the end.
- ``kill9``: kill -9 of one of a model's two worker processes under load.
- ``sigstop``: SIGSTOP of one worker under load for ``STOP_S`` seconds, then SIGCONT; the server
  has ``inference_timeout`` set, which is what bounds the calls that the frozen worker holds.
- ``reload``: the model reloaded through the repository API five times under load.
- ``sigterm``: SIGTERM to the server while REST and gRPC calls of a 1 s model are in flight.

Every loop is bounded in time and count. ``--update-docs`` rewrites the figures section of
docs/reliability.md; ``--quick`` shortens every phase (a smoke run, not figures to publish).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import numpy as np
import tritonclient.grpc.aio as grpcclient
from benchlib import procstats
from benchlib.servers import Ports, RunningServer, ServerSpec, start_server, stop_server

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs" / "reliability.md"
BEGIN, END = "<!-- soak:begin -->", "<!-- soak:end -->"
STOP_S = 5.0
INFERENCE_TIMEOUT_S = 2.0

MODELS = '''
import asyncio

import numpy as np

from inferkit import InferenceResponse, Model, ResponseOutput


class Total(Model):
    """Sums its input: the server's own cost dominates."""

    async def predict(self, payload):
        data = np.asarray(payload.inputs[0].data, dtype=np.float32)
        return InferenceResponse(
            model_name=self.name,
            outputs=[ResponseOutput(name="total", shape=[1], datatype="FP32",
                                    data=[float(data.sum())])],
        )


class Spin(Model):
    """About a millisecond of pure-Python work, in worker processes."""

    async def predict(self, payload):
        total = sum(i * i for i in range(20_000))
        return InferenceResponse(
            model_name=self.name,
            outputs=[ResponseOutput(name="total", shape=[1], datatype="INT64", data=[total])],
        )


class Slow(Model):
    """Answers after a second: calls in flight when the server is told to stop."""

    async def predict(self, payload):
        await asyncio.sleep(1.0)
        return InferenceResponse(
            model_name=self.name,
            outputs=[ResponseOutput(name="done", shape=[1], datatype="INT64", data=[1])],
        )
'''

MODEL_SETTINGS = {
    "total": {"implementation": "models.Total"},
    "spin": {"implementation": "models.Spin", "parallel_workers": 2},
    "slow": {"implementation": "models.Slow"},
}
BODY = {"inputs": [{"name": "x", "shape": [1, 16], "datatype": "FP32", "data": [0.5] * 16}]}


@dataclass
class Timeline:
    """Outcomes per second since the start of a phase, and the errors by kind."""

    start: float = field(default_factory=time.monotonic)
    ok: Counter[int] = field(default_factory=Counter)
    failed: Counter[int] = field(default_factory=Counter)
    kinds: Counter[str] = field(default_factory=Counter)

    def record(self, error: str | None) -> None:
        second = int(time.monotonic() - self.start)
        if error is None:
            self.ok[second] += 1
        else:
            self.failed[second] += 1
            self.kinds[error] += 1

    @property
    def total_ok(self) -> int:
        return sum(self.ok.values())

    @property
    def total_failed(self) -> int:
        return sum(self.failed.values())


def write_repository(folder: Path, settings: dict[str, object]) -> None:
    (folder / "models.py").write_text(MODELS)
    (folder / "settings.json").write_text(json.dumps(settings))
    for name, model in MODEL_SETTINGS.items():
        (folder / name).mkdir()
        (folder / name / "model-settings.json").write_text(json.dumps({"name": name, **model}))


@dataclass
class Served:
    """A running ``inferkit start`` (benchlib's server harness) and its ports."""

    running: RunningServer

    @property
    def process(self) -> subprocess.Popen[bytes]:
        return self.running.process

    @property
    def http(self) -> int:
        return self.running.spec.ports.http

    @property
    def grpc(self) -> int:
        return self.running.spec.ports.grpc

    def tree(self) -> list[int]:
        return self.running.pids()

    def workers(self) -> list[int]:
        """The model worker processes (not multiprocessing's resource tracker)."""
        found = []
        for pid in self.tree()[1:]:
            try:
                command = Path(f"/proc/{pid}/cmdline").read_bytes()
            except OSError:
                continue  # gone while we looked
            if b"spawn_main" in command:
                found.append(pid)
        return found


def start(folder: Path, settings: dict[str, object]) -> Served:
    """Serve a repository written in ``folder``; ready when every model is READY."""
    write_repository(folder, settings)
    ports = Ports.free()
    spec = ServerSpec(
        name="inferkit",
        label="inferkit start",
        role="subject",
        command=[
            sys.executable,
            "-m",
            "inferkit",
            "start",
            str(folder),
            "--host",
            "127.0.0.1",
            "--http-port",
            str(ports.http),
            "--grpc-port",
            str(ports.grpc),
            "--metrics-port",
            str(ports.metrics),
        ],
        ports=ports,
        models=list(MODEL_SETTINGS),
        readiness="index",
        # The models' module lies at the repository's root, not in a model's folder.
        env={"PYTHONPATH": str(folder)},
    )
    return Served(start_server(spec, folder / "server.log", cpu=None, timeout_s=120))


def stop(served: Served) -> int | None:
    """SIGTERM (SIGKILL after 30 s) and the workers left behind killed; the exit code."""
    stop_server(served.running, grace_s=30)
    return served.process.returncode


Call = Callable[[], Awaitable[str | None]]


def rest_call(client: httpx.AsyncClient, port: int, model: str) -> Call:
    url = f"http://127.0.0.1:{port}/v2/models/{model}/infer"

    async def call() -> str | None:
        try:
            response = await client.post(url, json=BODY)
        except httpx.HTTPError as exc:
            return f"rest {type(exc).__name__}"
        return None if response.status_code == 200 else f"rest {response.status_code}"

    return call


def grpc_call(client: grpcclient.InferenceServerClient, model: str) -> Call:
    tensor = grpcclient.InferInput("x", [1, 16], "FP32")
    tensor.set_data_from_numpy(np.full((1, 16), 0.5, dtype=np.float32))

    async def call() -> str | None:
        try:
            await client.infer(model, [tensor], client_timeout=30)
        except Exception as exc:  # the client's errors, whatever their class, are what we count
            status = getattr(exc, "status", lambda: None)()
            return f"grpc {status or type(exc).__name__}"
        return None

    return call


async def closed_loops(calls: list[Call], timeline: Timeline, until: float) -> None:
    async def loop(call: Call) -> None:
        while time.monotonic() < until:
            timeline.record(await call())

    await asyncio.wait_for(
        asyncio.gather(*(loop(call) for call in calls)), until - time.monotonic() + 60
    )


async def under_load(
    served: Served, model: str, seconds: float, fault: Callable[[Timeline], Awaitable[None]]
) -> Timeline:
    """REST (8 loops) and gRPC (4 loops) on ``model`` for ``seconds``, ``fault`` run beside."""
    timeline = Timeline()
    limits = httpx.Limits(max_connections=16)
    async with httpx.AsyncClient(limits=limits, timeout=30) as rest:
        grpc = grpcclient.InferenceServerClient(f"127.0.0.1:{served.grpc}")
        try:
            calls = [rest_call(rest, served.http, model) for _ in range(8)]
            calls += [grpc_call(grpc, model) for _ in range(4)]
            until = time.monotonic() + seconds
            await asyncio.gather(closed_loops(calls, timeline, until), fault(timeline))
        finally:
            await grpc.close()
    return timeline


async def no_fault(timeline: Timeline) -> None:
    return None


def describe(timeline: Timeline) -> dict[str, object]:
    return {
        "ok": timeline.total_ok,
        "failed": timeline.total_failed,
        "errors": dict(timeline.kinds),
        "failed_seconds": sorted(timeline.failed),
    }


# -- scenarios ---------------------------------------------------------------------------


async def soak(folder: Path, minutes: float) -> dict[str, object]:
    served = start(folder, {})
    seconds = minutes * 60
    warmup = max(30.0, seconds / 10)
    samples: list[tuple[float, int]] = []

    async def sample(timeline: Timeline) -> None:
        end = timeline.start + seconds
        while time.monotonic() < end:
            samples.append((time.monotonic() - timeline.start, procstats.rss(served.tree())))
            await asyncio.sleep(min(5.0, max(0.0, end - time.monotonic())))
        samples.append((time.monotonic() - timeline.start, procstats.rss(served.tree())))

    try:
        timeline = await under_load(served, "total", seconds, sample)
    finally:
        code = stop(served)
    after_warmup = [rss for at, rss in samples if at >= warmup]
    base, last = after_warmup[0], after_warmup[-1]
    return {
        **describe(timeline),
        "seconds": seconds,
        "rate": timeline.total_ok / seconds,
        "rss_start_mib": samples[0][1] / 2**20,
        "rss_after_warmup_mib": base / 2**20,
        "rss_end_mib": last / 2**20,
        "rss_peak_mib": max(rss for _, rss in samples) / 2**20,
        "rss_growth_pct": 100 * (last - base) / base,
        "exit_code": code,
    }


async def kill9(folder: Path, seconds: float) -> dict[str, object]:
    served = start(folder, {})
    facts: dict[str, object] = {}

    async def fault(timeline: Timeline) -> None:
        await asyncio.sleep(seconds / 3)
        victim = served.workers()[0]
        facts["killed_at_s"] = round(time.monotonic() - timeline.start, 1)
        os.kill(victim, signal.SIGKILL)
        began = time.monotonic()
        while time.monotonic() - began < 60:
            workers = served.workers()
            if len(workers) >= 2 and victim not in workers:
                facts["replaced_after_s"] = round(time.monotonic() - began, 2)
                break
            await asyncio.sleep(0.05)

    try:
        timeline = await under_load(served, "spin", seconds, fault)
    finally:
        facts["exit_code"] = stop(served)
    return {**describe(timeline), **facts}


async def sigstop(folder: Path, seconds: float) -> dict[str, object]:
    served = start(folder, {"inference_timeout": INFERENCE_TIMEOUT_S})
    facts: dict[str, object] = {"stopped_for_s": STOP_S}

    async def fault(timeline: Timeline) -> None:
        await asyncio.sleep(seconds / 3)
        victim = served.workers()[0]
        facts["stopped_at_s"] = round(time.monotonic() - timeline.start, 1)
        os.kill(victim, signal.SIGSTOP)
        try:
            await asyncio.sleep(STOP_S)
        finally:
            os.kill(victim, signal.SIGCONT)
        facts["workers_after"] = len(served.workers())

    try:
        timeline = await under_load(served, "spin", seconds, fault)
    finally:
        facts["exit_code"] = stop(served)
    return {**describe(timeline), **facts}


async def reload(folder: Path, seconds: float) -> dict[str, object]:
    served = start(folder, {})
    answers: list[int] = []

    async def fault(timeline: Timeline) -> None:
        async with httpx.AsyncClient(timeout=60) as client:
            for _ in range(5):
                await asyncio.sleep(seconds / 7)
                url = f"http://127.0.0.1:{served.http}/v2/repository/models/spin/load"
                answers.append((await client.post(url)).status_code)

    try:
        timeline = await under_load(served, "spin", seconds, fault)
    finally:
        code = stop(served)
    return {**describe(timeline), "reloads": answers, "exit_code": code}


async def sigterm(folder: Path) -> dict[str, object]:
    served = start(folder, {})
    timeline = Timeline()
    async with httpx.AsyncClient(timeout=30) as rest:
        grpc = grpcclient.InferenceServerClient(f"127.0.0.1:{served.grpc}")
        try:
            # Connections opened and clients warmed first, so that every call below is in
            # flight (inside the model) when the signal comes, not still connecting.
            warm = [rest_call(rest, served.http, "total") for _ in range(8)]
            warm += [grpc_call(grpc, "total") for _ in range(8)]
            await asyncio.gather(*(call() for call in warm))
            calls = [rest_call(rest, served.http, "slow") for _ in range(8)]
            calls += [grpc_call(grpc, "slow") for _ in range(8)]

            async def one(call: Call) -> None:
                timeline.record(await call())

            flight = [asyncio.ensure_future(one(call)) for call in calls]
            await asyncio.sleep(0.5)  # all sent, none answered (the model takes 1 s)
            began = time.monotonic()
            served.process.send_signal(signal.SIGTERM)
            await asyncio.wait_for(asyncio.gather(*flight), 60)
            code = await asyncio.to_thread(served.process.wait, 60)
            exit_s = time.monotonic() - began
        finally:
            await grpc.close()
            stop(served)
    return {**describe(timeline), "in_flight": len(calls), "exit_code": code, "exit_s": exit_s}


# -- report --------------------------------------------------------------------------------


SCENARIOS = ("soak", "kill9", "sigstop", "reload", "sigterm")
HEADER = ("| scenario | answered | failed | what happened |", "|---|--:|--:|---|")


def table_rows(results: dict[str, dict[str, object]]) -> dict[str, str]:
    rows = {}
    notes = {
        "soak": lambda r: (
            f"{r['seconds']:.0f} s at saturation, {r['rate']:.0f} req/s; RSS "
            f"{r['rss_after_warmup_mib']:.1f} -> {r['rss_end_mib']:.1f} MiB after warm-up "
            f"({r['rss_growth_pct']:+.1f}%), peak {r['rss_peak_mib']:.1f} MiB"
        ),
        "kill9": lambda r: (
            f"worker killed at {r.get('killed_at_s')} s, replaced after "
            f"{r.get('replaced_after_s', 'never')} s; errors {r['errors'] or 'none'}"
        ),
        "sigstop": lambda r: (
            f"worker stopped {r['stopped_for_s']:.0f} s (inference_timeout "
            f"{INFERENCE_TIMEOUT_S:.0f} s); errors {r['errors'] or 'none'} in seconds "
            f"{r['failed_seconds'] or '-'}"
        ),
        "reload": lambda r: f"5 reloads answered {r['reloads']}; errors {r['errors'] or 'none'}",
        "sigterm": lambda r: (
            f"{r['in_flight']} calls in flight (8 REST, 8 gRPC); exit code {r['exit_code']} "
            f"after {r['exit_s']:.1f} s; errors {r['errors'] or 'none'}"
        ),
    }
    for name, result in results.items():
        rows[name] = f"| {name} | {result['ok']} | {result['failed']} | {notes[name](result)} |"
    return rows


def update_docs(rows: dict[str, str], command: str) -> None:
    """Replace the rows of the scenarios run, keep the others' (a partial rerun)."""
    doc = DOCS.read_text()
    head, rest = doc.split(BEGIN, 1)
    old, tail = rest.split(END, 1)
    kept = {
        line.split("|")[1].strip(): line
        for line in old.splitlines()
        if line.startswith("| ") and not line.startswith("| scenario")
    }
    merged = {**kept, **rows}
    ordered = [merged[name] for name in SCENARIOS if name in merged]
    text = "\n".join([*HEADER, *ordered, "", f"Reproduce: `{command}`."])
    DOCS.write_text(f"{head}{BEGIN}\n{text}\n{END}{tail}")


async def run(args: argparse.Namespace) -> dict[str, dict[str, object]]:
    seconds = 20.0 if args.quick else 60.0
    minutes = 0.5 if args.quick else args.minutes
    chosen = args.scenarios.split(",")
    scenarios: dict[str, Callable[[Path], Awaitable[dict[str, object]]]] = {
        "soak": lambda folder: soak(folder, minutes),
        "kill9": lambda folder: kill9(folder, seconds),
        "sigstop": lambda folder: sigstop(folder, seconds),
        "reload": lambda folder: reload(folder, seconds),
        "sigterm": sigterm,
    }
    results: dict[str, dict[str, object]] = {}
    for name in chosen:
        with tempfile.TemporaryDirectory(prefix=f"soak-{name}-") as folder:
            print(f"== {name}", flush=True)
            results[name] = await scenarios[name](Path(folder))
            print(json.dumps(results[name]), flush=True)
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--minutes", type=float, default=10.0)
    parser.add_argument("--scenarios", default=",".join(SCENARIOS))
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--update-docs", action="store_true")
    args = parser.parse_args()
    results = asyncio.run(run(args))
    command = "nox -s soak" + ("" if args.minutes == 10 else f" -- --minutes {args.minutes:g}")
    rows = table_rows(results)
    print("\n".join([*HEADER, *rows.values()]))
    if args.update_docs:
        update_docs(rows, command)


if __name__ == "__main__":
    main()

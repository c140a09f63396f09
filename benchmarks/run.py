"""inferkit against MLServer and the bare framework, in one run: ``python benchmarks/run.py``.

Builds the model repositories in a temporary folder, starts every server pinned to CPU 0 on
free loopback ports (inferkit by its own runner and embedded in a Starlette service under
uvicorn; MLServer; bare apps on hypercorn, uvicorn and grpclib), checks one answer from each,
then drives closed-loop load from CPU 1 (REST: wrk; gRPC: h2load; Python fallbacks for both) for
a fixed duration, scenario by scenario, interleaving the servers' runs so that slow drifts of a
noisy machine hit them alike. Writes ``results.md``, ``results.json`` and ``results.png`` into
``benchmarks/results/`` and prints the tables; ``--update-docs`` also rewrites the results
section of ``docs/performance.md``.

The method, and what each figure means, is in ``docs/performance.md``.
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib.util
import json
import os
import shlex
import shutil
import statistics
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from benchlib import docs, lineup, machine, procstats, report
from benchlib.answers import AnswerError
from benchlib.drivers import Driver, drivers
from benchlib.loaders import LoadError, LoadResult
from benchlib.mlserver_env import ensure_mlserver
from benchlib.repositories import SOURCE_MODELS, build_artifacts
from benchlib.results import Results, Run, Startup, median
from benchlib.scenarios import SCENARIOS, TRANSPORT_NAMES, Request, Scenario, build_requests
from benchlib.servers import (
    Floor,
    FloorFigures,
    RunningServer,
    ServerFailed,
    ServerSpec,
    measure_floor,
    start_server,
    stop_server,
)

HERE = Path(__file__).resolve().parent
DOCS_PAGE = HERE.parent / "docs" / "performance.md"
DOCS_CHART = HERE.parent / "docs" / "performance.png"

#: The MLServer configuration ratios are taken against (the issue's baseline).
MLSERVER_BASE = "mlserver-pw0"
#: Runs of each floor (the model libraries alone), interleaved; the table shows the medians.
FLOOR_RUNS = 3
#: inferkit's built-in runtime for each model that needs one.
RUNTIMES = {"digits-svc": "inferkit.runtimes.sklearn", "digits-xgb": "inferkit.runtimes.xgboost"}
#: The adaptive batching models (a 5 ms busy model, batching on and off): the servers that load
#: models serve them; the bare apps do not (a fixed reply says nothing about batching).
BATCH_MODELS = ("batch-on", "batch-off")


def _arguments(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--duration", type=int, default=10, help="seconds per run (default 10)")
    parser.add_argument("--runs", type=int, default=3, help="runs per cell; median (default 3)")
    parser.add_argument("--warmup", type=int, default=2, help="unrecorded seconds first (2)")
    parser.add_argument(
        "--quick", action="store_true", help="smoke run: 2 s, 1 run, 1 s warm-up (noisy)"
    )
    servers = ",".join(lineup.SERVER_KEYS)
    parser.add_argument("--servers", help=f"comma-separated keys or prefixes of {servers}")
    parser.add_argument("--scenarios", help="comma-separated scenario keys or prefixes (rest-sum)")
    parser.add_argument(
        "--python-loader", action="store_true", help="Python loaders even with wrk / h2load"
    )
    parser.add_argument("--no-mlserver", action="store_true", help="leave MLServer out")
    parser.add_argument(
        "--no-mlserver-install", action="store_true", help="use the MLServer venv only if it exists"
    )
    parser.add_argument("--mlserver-venv", type=Path, default=HERE / ".venv-mlserver")
    parser.add_argument("--mlserver-python", help="interpreter for the MLServer venv (3.9-3.12)")
    parser.add_argument("--ready-timeout", type=float, default=120.0, help="seconds (120)")
    parser.add_argument("--results", type=Path, default=HERE / "results", help="output folder")
    parser.add_argument("--update-docs", action="store_true", help="rewrite docs/performance.md")
    parser.add_argument("--keep-temp", action="store_true", help="keep the repositories folder")
    parser.add_argument(
        "--baseline",
        metavar="REV",
        help="also run inferkit as of git revision REV (same interpreter), interleaved with "
        "the working tree's: a before/after pair in one run",
    )
    args = parser.parse_args(argv)
    if args.quick:
        args.duration, args.runs, args.warmup = 2, 1, 1
    return args


def _selected(wanted: str | None, keys: Sequence[str]) -> list[str]:
    if not wanted:
        return list(keys)
    chosen: list[str] = []
    for item in filter(None, (part.strip() for part in wanted.split(","))):
        # An exact key picks that one; anything else is a prefix ("mlserver" picks both).
        chosen += [item] if item in keys else [key for key in keys if key.startswith(item)]
    return [key for key in keys if key in chosen]


def _command() -> str:
    script = os.path.relpath(Path(sys.argv[0]).resolve(), Path.cwd())
    return shlex.join(["python", script, *sys.argv[1:]])


def _marker_key(running: RunningServer, scenario: Scenario) -> tuple[str, str, str]:
    # One answer check per server, transport and payload: scenarios differing only in
    # concurrency share it.
    return running.spec.name, scenario.transport, scenario.payload


class Bench:
    """One harness run: its settings, temporary folder, servers and results."""

    def __init__(self, args: argparse.Namespace, work: Path) -> None:
        self.args = args
        self.work = work
        self.logs = args.results / "logs"
        settings = {"duration_s": args.duration, "runs": args.runs, "warmup_s": args.warmup}
        self.results = Results(_command(), machine.describe(), {**settings, "quick": args.quick})
        self.server_cpu: int | None = None
        self.load_cpu: int | None = None
        if (os.cpu_count() or 1) >= 2 and hasattr(os, "sched_setaffinity"):
            self.server_cpu, self.load_cpu = 0, 1
            self.results.settings["pinning"] = "server on CPU 0, load generator on CPU 1"
        else:
            self.results.note("Fewer than 2 CPUs: server and load generator share the CPU.")
        self.requests: dict[str, Request] = {}
        self.scenarios: list[Scenario] = []
        self.drivers: dict[str, Driver] = {}
        self.specs: list[ServerSpec] = []
        #: The model libraries alone, measured before the servers (start-up figures only).
        self.floors: list[Floor] = []
        self.running: dict[str, RunningServer] = {}
        #: (server, transport, payload key) -> the answer's marker, once the answer was checked.
        self.markers: dict[tuple[str, str, str], bytes] = {}
        #: The same keys, for payloads a server is known not to support and refused when tried.
        self.refused: set[tuple[str, str, str]] = set()

    # Preparation ----------------------------------------------------------------------------

    def prepare(self) -> None:
        """Models, requests, drivers, scenarios and the servers' specs."""
        self.logs.mkdir(parents=True, exist_ok=True)
        built = build_artifacts(
            sys.executable, self.work / "artifacts", self.logs / "artifacts.log"
        )
        models = ["sum", *self._digits_models(built), *BATCH_MODELS]
        requests = build_requests(built).items()
        self.requests = {key: r for key, r in requests if r.payload.model in models}
        self.drivers, missing = drivers(self.work, self.args.python_loader, machine.wrk_version())
        self.results.settings["loader"] = {t: d.loader for t, d in self.drivers.items()}
        self._pick_scenarios(missing)
        wanted = _selected(self.args.servers, lineup.SERVER_KEYS)
        uvicorn_missing = lineup.uvicorn_missing()
        if uvicorn_missing is not None and set(wanted) & set(lineup.UVICORN_SERVERS):
            self.results.note(uvicorn_missing)
            for key, role in lineup.UVICORN_SERVERS.items():
                if key in wanted:
                    self.results.startups[key] = Startup(key, key, role, skipped="not installed")
            wanted = [key for key in wanted if key not in lineup.UVICORN_SERVERS]
        version = self.results.machine["packages"]["inferkit"]
        if {"inferkit", "inferkit-uvicorn"} & set(wanted):
            self._add_floor(lineup.floor_spec(sys.executable, self.work / "artifacts", models))
        if "inferkit" in wanted:
            self.specs.append(lineup.inferkit_spec(self.work, models, version))
            if self.args.baseline:
                self.specs.append(self._baseline_spec(self.args.baseline, models))
        if "inferkit-uvicorn" in wanted:
            self.specs.append(lineup.embedded_spec(self.work, models, version))
        self.specs += self._mlserver_specs(models, [k for k in wanted if k.startswith("mlserver")])
        bare = {k: r for k, r in self.requests.items() if r.payload.model not in BATCH_MODELS}
        if "starlette-bare" in wanted:
            self.specs.append(lineup.bare_spec(self.work, bare))
        if "starlette-v2" in wanted:
            self.specs.append(lineup.minimal_v2_spec())
        if "uvicorn-bare" in wanted:
            self.specs.append(lineup.bare_spec(self.work, bare, server="uvicorn"))
        if "uvicorn-v2" in wanted:
            self.specs.append(lineup.minimal_v2_spec(server="uvicorn"))
        if "grpclib-bare" in wanted and "grpc" in self.drivers:
            self.specs.append(lineup.bare_grpc_spec(self.work, bare))

    def _baseline_spec(self, revision: str, models: list[str]) -> ServerSpec:
        """inferkit as of ``revision``: its package, from ``git archive``, imported ahead of
        the working tree's by the same interpreter (``PYTHONSAFEPATH`` keeps ``-m`` from
        putting the working directory first)."""
        source = self.work / "baseline-src"
        source.mkdir()
        command = ["git", "archive", revision, "inferkit"]
        archive = subprocess.run(command, cwd=HERE.parent, capture_output=True, check=True)
        subprocess.run(["tar", "-x", "-C", str(source)], input=archive.stdout, check=True)
        work = self.work / "baseline"
        work.mkdir()
        (work / "artifacts").symlink_to(self.work / "artifacts")
        spec = lineup.inferkit_spec(work, models, "")
        env = {"PYTHONSAFEPATH": "1", "PYTHONPATH": str(source)}
        label = f"inferkit at {revision}, access log off"
        self.results.note(f"inferkit-baseline: the same interpreter, inferkit as of {revision}")
        return dataclasses.replace(spec, name="inferkit-baseline", label=label, env=env)

    def _add_floor(self, floor: Floor) -> None:
        """Measure ``floor`` at start-up, unless there is no artefact to load."""
        if any(model not in SOURCE_MODELS for model in floor.models):
            self.floors.append(floor)
            return
        why = "no artefact was built"
        self.results.startups[floor.name] = Startup(floor.name, floor.label, "floor", skipped=why)
        self.results.note(f"{floor.name} skipped: {why} (no over-floor figures against it)")

    def _digits_models(self, built: dict[str, Any]) -> list[str]:
        models = []
        for model, module in RUNTIMES.items():
            if "error" in built.get(model, {"error": "not built"}):
                self.results.note(f"{model} scenarios skipped: {built[model]['error']}")
            elif importlib.util.find_spec(module) is None:
                self.results.note(
                    f"{model} scenarios skipped: inferkit has no {module} yet"
                    " (the runtimes are being written)"
                )
            else:
                models.append(model)
        return models

    def _pick_scenarios(self, missing: dict[str, str]) -> None:
        keys = _selected(self.args.scenarios, [s.key for s in SCENARIOS])
        for scenario in SCENARIOS:
            if scenario.key not in keys or scenario.payload not in self.requests:
                continue
            if scenario.transport not in self.drivers:
                name = TRANSPORT_NAMES.get(scenario.transport, scenario.transport)
                self.results.note(missing.get(scenario.transport, f"{name}: no driver"))
                continue
            self.scenarios.append(scenario)
            self.results.scenario_labels[scenario.key] = scenario.label()
            if scenario.mlserver_fallback is not None:
                self.results.mlserver_fallback[scenario.key] = scenario.mlserver_fallback

    def _mlserver_specs(self, models: list[str], keys: list[str]) -> list[ServerSpec]:
        if not keys:
            return []
        if self.args.no_mlserver:
            self.results.note("MLServer left out (--no-mlserver).")
            return []
        install = not self.args.no_mlserver_install
        log = self.logs / "mlserver-install.log"
        env = ensure_mlserver(self.args.mlserver_venv, install, self.args.mlserver_python, log)
        if isinstance(env, str):
            self.results.note(env)
            for key in keys:
                self.results.startups[key] = Startup(key, key, "baseline", skipped="not installed")
            return []
        self.results.machine["mlserver"] = env.version
        out, log = self.work / "artifacts-mlserver", self.logs / "artifacts-mlserver.log"
        built = build_artifacts(str(env.python), out, log)
        expected = {m: tuple(built[m]["predict"]) for m in models if "predict" in built.get(m, {})}
        missing = [m for m in models if m not in SOURCE_MODELS and m not in expected]
        if missing:
            self.results.note(f"MLServer's venv could not build {', '.join(missing)} (see {log})")
        served = [m for m in models if m not in missing]
        self._add_floor(lineup.floor_spec(str(env.python), out, served, env.version))
        return [lineup.mlserver_spec(self.work, env, key, served, expected) for key in keys]

    # Servers ------------------------------------------------------------------------------

    def start_all(self) -> None:
        """Measure the floors, then start each server alone (the others idle), take its idle
        RSS, check its answers."""
        self._measure_floors()
        for spec in self.specs:
            startup = Startup(spec.name, spec.label, spec.role, floor=spec.floor)
            self.results.startups[spec.name] = startup
            log = self.logs / f"{spec.name}.log"
            try:
                running = start_server(spec, log, self.server_cpu, self.args.ready_timeout)
            except ServerFailed as exc:
                startup.skipped = "did not start"
                self.results.note(f"{spec.name} did not start (log: {log}): {exc}")
                continue
            self.running[spec.name] = running
            startup.ready_s = running.ready_s
            startup.models = list(running.ready_models)
            startup.failed = dict(running.failed)
            for model, reason in running.failed.items():
                self.results.note(f"{spec.name}: model {model} FAILED to load: {reason}")
            # Idle: every model loaded, no request served yet.
            startup.idle_rss = procstats.rss(running.pids())
            self._verify_all(running)

    def _measure_floors(self) -> None:
        """Each floor FLOOR_RUNS times, interleaved; the medians (one sample is noisy)."""
        samples: dict[str, list[FloorFigures]] = {floor.name: [] for floor in self.floors}
        for _ in range(FLOOR_RUNS):
            for floor in self.floors:
                startup = self.results.startups.setdefault(
                    floor.name, Startup(floor.name, floor.label, "floor")
                )
                if startup.skipped is not None:
                    continue
                log = self.logs / f"{floor.name}.log"
                try:
                    figures = measure_floor(floor, log, self.server_cpu, self.args.ready_timeout)
                except (ServerFailed, OSError) as exc:
                    startup.skipped = "failed"
                    self.results.note(f"{floor.name} failed (log: {log}): {exc}")
                    continue
                samples[floor.name].append(figures)
                startup.models = figures.models
                startup.ready_s = median([f.ready_s for f in samples[floor.name]])
                startup.idle_rss = int(statistics.median([f.rss for f in samples[floor.name]]))
        if self.floors:
            self.results.settings["floor_runs"] = FLOOR_RUNS

    def _verify_all(self, running: RunningServer) -> None:
        for scenario in self.scenarios:
            key = _marker_key(running, scenario)
            if key in self.markers or key in self.refused or not self._serves(running, scenario):
                continue
            try:
                self.markers[key] = self._verify(running, scenario)
            except (AnswerError, OSError) as exc:
                name, payload = running.spec.name, scenario.payload
                reason = running.spec.unsupported.get(payload)
                if reason is None:
                    self.results.note(f"{name} answered {payload} wrongly: {exc}")
                else:
                    # Known not to support it, and it did not: its rows say "not supported".
                    self.refused.add(key)
                    self.results.note(f"{name} does not support {payload} ({reason}); tried: {exc}")

    def _verify(self, running: RunningServer, scenario: Scenario) -> bytes:
        request = self.requests[scenario.payload]
        expected = running.spec.expected.get(scenario.payload, request.expected)
        return self.drivers[scenario.transport].verify(running, request, expected)

    def _serves(self, running: RunningServer, scenario: Scenario) -> bool:
        model = running.spec.model_for(self.requests[scenario.payload].payload)
        return scenario.transport in running.spec.transports and model in running.ready_models

    def stop_all(self) -> None:
        """Stop every server this run started."""
        for running in self.running.values():
            stop_server(running)

    # Load ---------------------------------------------------------------------------------

    def measure(self) -> None:
        """Each scenario: warm every server up, then run k of every server, for each k.

        The order of the servers turns by one each round: a server's place in the round was
        seen to matter (the same inferkit code measured 2-3% apart in the first and second
        places), so over as many runs as servers, each takes every place once.
        """
        for scenario in self.scenarios:
            servers = self._servers_for(scenario)
            for running in servers:
                self._warm_up(running, scenario)
            for k in range(self.args.runs):
                turn = k % len(servers) if servers else 0
                for running in servers[turn:] + servers[:turn]:
                    if self.results.cell(scenario.key, running.spec.name).skipped is None:
                        self._timed_run(running, scenario)
            for running in servers:
                self._recheck(running, scenario)
            print(f"done: {scenario.label()}", file=sys.stderr, flush=True)

    def _servers_for(self, scenario: Scenario) -> list[RunningServer]:
        servers = []
        for name, running in self.running.items():
            if not self._serves(running, scenario):
                continue
            cell = self.results.cell(scenario.key, name)
            key = _marker_key(running, scenario)
            if key in self.markers:
                servers.append(running)
            elif key in self.refused:
                cell.skipped = "not supported"
            else:
                cell.skipped = "wrong answer (see notes)"
        return servers

    def _warm_up(self, running: RunningServer, scenario: Scenario) -> None:
        if self.args.warmup <= 0:
            return
        try:
            self._load(running, scenario, self.args.warmup)
        except LoadError as exc:
            self.results.cell(scenario.key, running.spec.name).skipped = "load failed (see notes)"
            self.results.note(f"{running.spec.name} / {scenario.key} warm-up: {exc}")

    def _load(self, running: RunningServer, scenario: Scenario, seconds: int) -> LoadResult:
        marker = self.markers[_marker_key(running, scenario)]
        request = self.requests[scenario.payload]
        driver = self.drivers[scenario.transport]
        return driver.load(running, request, scenario, marker, seconds, self.load_cpu)

    def _timed_run(self, running: RunningServer, scenario: Scenario) -> None:
        cell = self.results.cell(scenario.key, running.spec.name)
        pids = running.pids()
        if not procstats.reset_peaks(pids):
            self.results.note("Peak RSS could not be reset: it is the peak since start.")
        cpu_before = procstats.cpu_seconds(pids)
        try:
            load = self._load(running, scenario, self.args.duration)
        except LoadError as exc:
            cell.skipped = "load failed (see notes)"
            self.results.note(f"{running.spec.name} / {scenario.key}: {exc}")
            return
        pids = running.pids()
        cpu = procstats.cpu_seconds(pids) - cpu_before
        cell.runs.append(Run(load, cpu, procstats.peak_rss(pids)))
        if running.process.poll() is not None:
            cell.skipped = "server died"
            self.results.note(f"{running.spec.name} exited during {scenario.key}")

    def _recheck(self, running: RunningServer, scenario: Scenario) -> None:
        """After the load, the server must still give the same answer."""
        if running.process.poll() is not None:
            return
        try:
            marker, reason = self._verify(running, scenario), "the answer changed"
        except (AnswerError, OSError) as exc:
            marker, reason = b"", str(exc)
        if marker != self.markers[_marker_key(running, scenario)]:
            self.results.note(f"{running.spec.name} / {scenario.key} after the load: {reason}")


def write_outputs(bench: Bench) -> None:
    """results.md, results.json, results.png; print the tables; maybe update the docs."""
    results, out = bench.results, bench.args.results
    mlserver = next((k for k in (MLSERVER_BASE, "mlserver") if k in bench.running), None)
    if mlserver not in (None, MLSERVER_BASE):
        results.note("Ratios are against MLServer's defaults (parallel_workers 0 did not run).")
    ceilings = [k for k in lineup.CEILINGS if k in bench.running]
    tables = report.markdown(results, mlserver, ceilings, lineup.OWN_CEILINGS)
    header = report.header(results)
    (out / "results.md").write_text(f"# Benchmark results\n\n{header}\n\n{tables}")
    (out / "results.json").write_text(json.dumps(results.to_json(), indent=2, default=str))
    chart: Path | None = out / "results.png"
    title = "inferkit / MLServer / bare frameworks, one run"
    if results.settings["quick"]:
        title += " - SMOKE RUN (--quick): noisy, not a measurement"
    try:
        report.write_chart(results, out / "results.png", mlserver, title)
    except ImportError:
        chart = None
        print("matplotlib is not installed: no chart", file=sys.stderr)
    print(f"\n{header}\n\n{tables}")
    written = [out / "results.md", out / "results.json", *([chart] if chart else [])]
    print("written: " + ", ".join(map(str, written)))
    if bench.args.update_docs:
        picture = ""
        if chart is not None:
            shutil.copyfile(chart, DOCS_CHART)
            picture = f"\n\n![requests/s, start-up time and idle RSS]({DOCS_CHART.name})"
        section = f"{header}\n\n{tables.rstrip()}{picture}"
        DOCS_PAGE.write_text(docs.replace_section(DOCS_PAGE.read_text(), section))
        print(f"updated: {DOCS_PAGE}")


def main(argv: Sequence[str] | None = None) -> int:
    """Run the whole benchmark; 0 when something was measured (skips are notes), else 1."""
    args = _arguments(argv)
    args.results.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="inferkit-bench-"))
    bench = Bench(args, work)
    try:
        bench.prepare()
        if bench.load_cpu is not None:
            os.sched_setaffinity(0, {bench.load_cpu})  # keep the harness off the server's CPU
        bench.start_all()
        bench.measure()
    finally:
        bench.stop_all()
        if not args.keep_temp:
            shutil.rmtree(work, ignore_errors=True)
    write_outputs(bench)
    return 0 if any(cell.runs for cell in bench.results.cells.values()) else 1


if __name__ == "__main__":
    sys.exit(main())

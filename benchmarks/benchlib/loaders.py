"""Closed-loop REST load: ``wrk`` with a generated Lua script, or the asyncio fallback.

Both print one ``BENCH_RESULT {json}`` line, parsed into a :class:`LoadResult`. Under load,
every response is checked (2xx and the answer's marker bytes present, see ``answers``); anything
else is counted in ``bad``. The load generator runs pinned to its own CPU.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

__all__ = [
    "LoadError",
    "LoadResult",
    "LoadTarget",
    "lua_string",
    "parse_result",
    "pinned",
    "run_load",
    "run_loader",
    "wrk_script",
]

_HERE = Path(__file__).parent


class LoadError(Exception):
    """The load generator failed or printed no result."""


@dataclass(frozen=True)
class LoadTarget:
    """Where and what to send: a POST of ``body_file`` to ``http://host:port/path``."""

    host: str
    port: int
    path: str
    body_file: Path
    marker: bytes
    concurrency: int
    duration_s: int
    timeout_s: float
    #: Request headers besides Host and Content-Length (the binary extension needs its own).
    headers: Mapping[str, str] = field(default_factory=lambda: {"Content-Type": "application/json"})


@dataclass(frozen=True)
class LoadResult:
    """What one load run observed."""

    requests: int
    duration_s: float
    #: Non-2xx responses and 2xx responses without the expected answer.
    bad: int
    socket_errors: int
    timeouts: int
    p50_us: float
    p99_us: float

    @property
    def errors(self) -> int:
        """Every request that did not get the right answer in time."""
        return self.bad + self.socket_errors + self.timeouts

    @property
    def rps(self) -> float:
        """Completed requests per second (wrong answers included; they are in ``errors``)."""
        return self.requests / self.duration_s if self.duration_s > 0 else 0.0


def pinned(command: list[str], cpu: int | None) -> list[str]:
    """``command`` run on CPU ``cpu`` only (``taskset``, or a tiny Python exec wrapper)."""
    if cpu is None:
        return command
    if shutil.which("taskset"):
        return ["taskset", "-c", str(cpu), *command]
    wrapper = "import os, sys; os.sched_setaffinity(0, {%d}); os.execvp(sys.argv[1], sys.argv[1:])"
    return [sys.executable, "-c", wrapper % cpu, *command]


def lua_string(data: bytes) -> str:
    """A Lua string literal for any bytes (every byte as a 3-digit decimal escape)."""
    return '"' + "".join(f"\\{byte:03d}" for byte in data) + '"'


def wrk_script(body_file: Path, marker: bytes, headers: Mapping[str, str] | None = None) -> str:
    """The wrk Lua script: POST the body, check each answer, print ``BENCH_RESULT``.

    ``headers`` default to a JSON ``Content-Type``; wrk adds Host and Content-Length.
    """
    if headers is None:
        headers = {"Content-Type": "application/json"}
    lines = "".join(
        f"wrk.headers[{lua_string(name.encode())}] = {lua_string(value.encode())}\n"
        for name, value in headers.items()
    )
    return f"""\
wrk.method = "POST"
{lines}local file = assert(io.open({lua_string(str(body_file).encode())}, "rb"))
wrk.body = file:read("*a")
file:close()
local marker = {lua_string(marker)}
local threads = {{}}

function setup(thread)
  table.insert(threads, thread)
end

function init(args)
  bad = 0
end

function response(status, headers, body)
  if status < 200 or status > 299 or not string.find(body, marker, 1, true) then
    bad = bad + 1
  end
end

function done(summary, latency, requests)
  local total_bad = 0
  for _, thread in ipairs(threads) do
    total_bad = total_bad + thread:get("bad")
  end
  local e = summary.errors
  io.write(string.format(
    'BENCH_RESULT {{"requests": %d, "duration_s": %.6f, "bad": %d, "socket_errors": %d, '
      .. '"timeouts": %d, "p50_us": %.1f, "p99_us": %.1f}}\\n',
    summary.requests, summary.duration / 1e6, total_bad, e.connect + e.read + e.write,
    e.timeout, latency:percentile(50), latency:percentile(99)))
end
"""


def parse_result(output: str) -> LoadResult:
    """The :class:`LoadResult` in a loader's output (its ``BENCH_RESULT`` line)."""
    for line in output.splitlines():
        if line.startswith("BENCH_RESULT "):
            fields = json.loads(line.removeprefix("BENCH_RESULT "))
            return LoadResult(
                requests=int(fields["requests"]),
                duration_s=float(fields["duration_s"]),
                bad=int(fields["bad"]),
                socket_errors=int(fields["socket_errors"]),
                timeouts=int(fields["timeouts"]),
                p50_us=float(fields["p50_us"]),
                p99_us=float(fields["p99_us"]),
            )
    raise LoadError(f"no BENCH_RESULT line in the load generator's output: {output[-500:]!r}")


def run_load(target: LoadTarget, work_dir: Path, cpu: int | None, use_wrk: bool) -> LoadResult:
    """Drive ``target`` for its duration with wrk (or the fallback) pinned to ``cpu``."""
    if use_wrk:
        script = work_dir / "load.lua"
        script.write_text(wrk_script(target.body_file, target.marker, target.headers))
        command = [
            "wrk",
            "-t1",
            f"-c{target.concurrency}",
            f"-d{target.duration_s}s",
            f"--timeout={max(1, round(target.timeout_s))}s",
            "-s",
            str(script),
            f"http://{target.host}:{target.port}{target.path}",
        ]
    else:
        marker_file = work_dir / "marker.bin"
        marker_file.write_bytes(target.marker)
        command = [
            sys.executable,
            str(_HERE / "pyload.py"),
            f"--host={target.host}",
            f"--port={target.port}",
            f"--path={target.path}",
            f"--body-file={target.body_file}",
            f"--marker-file={marker_file}",
            f"--concurrency={target.concurrency}",
            f"--duration={target.duration_s}",
            f"--timeout={target.timeout_s}",
            *(f"--header={name}: {value}" for name, value in target.headers.items()),
        ]
    return parse_result(run_loader(command, cpu, target.duration_s + target.timeout_s))


def run_loader(command: list[str], cpu: int | None, runs_for_s: float) -> str:
    """Run a load generator pinned to ``cpu`` and return what it printed; LoadError if it
    fails or is still running 30 s after the ``runs_for_s`` it should stop by itself in."""
    # A Python loader is named by its script, not by the interpreter.
    name = Path(command[1] if command[0] == sys.executable else command[0]).name
    try:
        done = subprocess.run(
            pinned(command, cpu),
            capture_output=True,
            text=True,
            timeout=runs_for_s + 30,
            check=False,
        )
    except subprocess.TimeoutExpired as exc:
        raise LoadError(f"{name} did not finish in time") from exc
    if done.returncode != 0:
        raise LoadError(f"{name} exited {done.returncode}: {done.stderr[-500:]}")
    return done.stdout

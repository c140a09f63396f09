"""Closed-loop gRPC load: ``h2load`` posting a prepared gRPC body, or the grpcio fallback.

**h2load** (Debian's nghttp2-client) opens ``concurrency`` HTTP/2 connections with one stream
each, posts the framed ``ModelInferRequest`` with ``content-type: application/grpc`` and
``te: trailers`` for the duration, and writes one line per request to a log file, from which
the exact p50 and p99 are taken. It cannot read gRPC trailers, and a gRPC error is a 200 with
``grpc-status`` in the trailers and *no body*: so besides its non-2xx, failed and timed-out
requests, a response shortfall is counted. Every correct answer is ``answer_size`` body bytes
(the size of the answer checked before the load); received body bytes short of
``completed x answer_size`` are whole answers missing, counted in ``bad``. That is a lower
bound: it cannot see a wrong answer of the right size, or errors offset by larger answers.

**The fallback** (``pygrpcload.py``, grpcio's asyncio client) checks every answer: status OK
and the answer's marker bytes present. It is slower than h2load; results say which was used.

Both give a :class:`~benchlib.loaders.LoadResult`.
"""

from __future__ import annotations

import re
import subprocess
import sys
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from .loaders import LoadError, LoadResult, parse_result, run_loader

__all__ = [
    "GrpcTarget",
    "h2load_command",
    "h2load_version",
    "parse_h2load",
    "percentile",
    "run_grpc_load",
]

_HERE = Path(__file__).parent

_REQUESTS = re.compile(
    r"requests: (?P<total>\d+) total, (?P<started>\d+) started, (?P<done>\d+) done, "
    r"(?P<succeeded>\d+) succeeded, (?P<failed>\d+) failed, (?P<errored>\d+) errored, "
    r"(?P<timeout>\d+) timeout"
)
_FINISHED = re.compile(r"finished in (?P<value>[\d.]+)(?P<unit>s|ms|us)\b")
_DATA = re.compile(r"\((?P<bytes>\d+)\) data")
_UNITS = {"s": 1.0, "ms": 1e-3, "us": 1e-6}


@dataclass(frozen=True)
class GrpcTarget:
    """Where and what to send: ``body_file`` (a framed ModelInferRequest) to one RPC."""

    host: str
    port: int
    path: str
    body_file: Path
    #: The bytes of the right answer's values (checked in every response by the fallback).
    marker: bytes
    #: Body bytes of one right answer: the 5-byte prefix + the ModelInferResponse.
    answer_size: int
    concurrency: int
    duration_s: int
    timeout_s: float


def h2load_version() -> str | None:
    """``h2load 1.52.0`` (from ``h2load --version``), or None when h2load is not installed."""
    try:
        done = subprocess.run(["h2load", "--version"], capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return None
    words = done.stdout.split()
    return f"h2load {words[-1].rsplit('/', 1)[-1]}" if done.returncode == 0 and words else None


def h2load_command(target: GrpcTarget, log_file: Path) -> list[str]:
    """h2load: ``concurrency`` connections of one stream each, for the duration, one thread."""
    return [
        "h2load",
        "--threads=1",
        f"--clients={target.concurrency}",
        "--max-concurrent-streams=1",
        f"--duration={target.duration_s}",
        # A connection with no answer for this long is dropped: its requests count as timeouts.
        f"--connection-inactivity-timeout={max(1, round(target.timeout_s))}",
        f"--data={target.body_file}",
        "--header=content-type: application/grpc",
        "--header=te: trailers",
        f"--log-file={log_file}",
        f"http://{target.host}:{target.port}{target.path}",
    ]


def percentile(sorted_values: Sequence[float], fraction: float) -> float:
    """The nearest-rank percentile of ascending ``sorted_values`` (0 when empty)."""
    if not sorted_values:
        return 0.0
    index = min(len(sorted_values) - 1, max(0, round(fraction * len(sorted_values)) - 1))
    return float(sorted_values[index])


def _latencies_us(log_lines: Iterable[str]) -> list[float]:
    # Columns: start (µs since the epoch), HTTP status (-1: failed stream), µs to the end.
    latencies = []
    for line in log_lines:
        fields = line.split("\t")
        if len(fields) >= 3 and fields[1].strip() != "-1":
            latencies.append(float(fields[2]))
    return sorted(latencies)


def parse_h2load(output: str, log_lines: Iterable[str], answer_size: int) -> LoadResult:
    """The :class:`LoadResult` of one h2load run: its summary and its per-request log."""
    requests, finished, data = (pattern.search(output) for pattern in (_REQUESTS, _FINISHED, _DATA))
    if requests is None or finished is None or data is None:
        raise LoadError(f"h2load printed no summary: {output[-500:]!r}")
    succeeded, failed, errored, timeouts = (
        int(requests[key]) for key in ("succeeded", "failed", "errored", "timeout")
    )
    # h2load: `succeeded` are 2xx answers; `failed` counts the other answers and the broken or
    # abandoned streams (`errored`, of which the timed-out are a part).
    non_2xx = failed - errored
    answered = succeeded + non_2xx
    shortfall = answered * answer_size - int(data["bytes"])
    missing = min(answered, max(0, shortfall) // answer_size) if answer_size > 0 else 0
    latencies = _latencies_us(log_lines)
    return LoadResult(
        requests=answered,
        duration_s=float(finished["value"]) * _UNITS[finished["unit"]],
        # Two lower bounds of the same count (a non-2xx answer has no gRPC body either).
        bad=max(non_2xx, missing),
        socket_errors=errored - timeouts,
        timeouts=timeouts,
        p50_us=percentile(latencies, 0.50),
        p99_us=percentile(latencies, 0.99),
    )


def run_grpc_load(
    target: GrpcTarget, work_dir: Path, cpu: int | None, use_h2load: bool
) -> LoadResult:
    """Drive ``target`` for its duration with h2load (or the fallback) pinned to ``cpu``."""
    if use_h2load:
        log_file = work_dir / "h2load-requests.tsv"
        log_file.unlink(missing_ok=True)  # h2load appends to it
        output = run_loader(
            h2load_command(target, log_file), cpu, target.duration_s + target.timeout_s
        )
        with log_file.open() as lines:
            return parse_h2load(output, lines, target.answer_size)
    marker_file = work_dir / "grpc-marker.bin"
    marker_file.write_bytes(target.marker)
    command = [
        sys.executable,
        str(_HERE / "pygrpcload.py"),
        f"--target={target.host}:{target.port}",
        f"--path={target.path}",
        f"--body-file={target.body_file}",
        f"--marker-file={marker_file}",
        f"--concurrency={target.concurrency}",
        f"--duration={target.duration_s}",
        f"--timeout={target.timeout_s}",
    ]
    return parse_result(run_loader(command, cpu, target.duration_s + target.timeout_s))

"""A closed-loop HTTP/1.1 load generator in plain asyncio: the fallback when ``wrk`` is absent.

Run as a script (pinned to the load CPU by the harness); prints one ``BENCH_RESULT {json}`` line
in the same shape as the wrk script's. ``concurrency`` keep-alive connections each send the same
POST, wait for the whole answer, check it (2xx and the marker bytes present) and send again,
until ``duration`` has passed; requests still in flight ``timeout`` seconds after that are
cancelled and counted as timeouts. The number of requests is bounded by ``--max-requests``.

It is slower than wrk (a few thousand requests/s on one core), so results obtained with it say so.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field

__all__ = ["Tally", "closed_loop", "main", "post_request", "read_response", "summary"]


@dataclass
class Tally:
    """What the connections observed, shared by all of them (one event loop, no locks)."""

    latencies_ns: list[int] = field(default_factory=list)
    bad: int = 0
    socket_errors: int = 0
    timeouts: int = 0
    started: int = 0


async def read_response(reader: asyncio.StreamReader) -> tuple[int, bytes, bool]:
    """Read one HTTP/1.1 response: ``(status, body, keep_alive)``.

    Handles ``Content-Length`` and ``Transfer-Encoding: chunked`` bodies.
    """
    head = await reader.readuntil(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split(" ", 2)[1])
    headers = {}
    for line in lines[1:]:
        if line:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip().lower()
    keep_alive = headers.get("connection") != "close"
    if headers.get("transfer-encoding") == "chunked":
        chunks: list[bytes] = []
        while True:
            size = int((await reader.readline()).split(b";")[0], 16)
            if size == 0:
                while (await reader.readline()) not in (b"\r\n", b""):
                    pass  # trailers
                return status, b"".join(chunks), keep_alive
            chunks.append((await reader.readexactly(size + 2))[:-2])
    length = int(headers.get("content-length", "0"))
    return status, await reader.readexactly(length), keep_alive


def post_request(
    host: str, port: int, path: str, headers: Sequence[str] | None, body: bytes
) -> bytes:
    """The whole HTTP/1.1 POST: ``headers`` as ``Name: value`` lines (default: JSON's
    ``Content-Type``), then Content-Length and the body."""
    lines = [f"POST {path} HTTP/1.1", f"Host: {host}:{port}"]
    lines += headers or ["Content-Type: application/json"]
    lines.append(f"Content-Length: {len(body)}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body


async def _connection(
    args: argparse.Namespace, request: bytes, marker: bytes, tally: Tally, deadline: float
) -> None:
    reader: asyncio.StreamReader | None = None
    writer: asyncio.StreamWriter | None = None
    while time.monotonic() < deadline and tally.started < args.max_requests:
        try:
            if writer is None:
                reader, writer = await asyncio.open_connection(args.host, args.port)
            assert reader is not None
            tally.started += 1
            begin = time.perf_counter_ns()
            writer.write(request)
            status, body, keep_alive = await read_response(reader)
            tally.latencies_ns.append(time.perf_counter_ns() - begin)
            if not (200 <= status < 300 and marker in body):
                tally.bad += 1
            if not keep_alive:
                writer.close()
                writer = None
        except (OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, ValueError):
            tally.socket_errors += 1
            if writer is not None:
                writer.close()
                writer = None
            await asyncio.sleep(0.01)  # do not spin on a dead server
    if writer is not None:
        writer.close()


def _percentile(sorted_values: Sequence[int], fraction: float) -> int:
    if not sorted_values:
        return 0
    index = min(len(sorted_values) - 1, max(0, round(fraction * len(sorted_values)) - 1))
    return sorted_values[index]


#: One client of the closed loop: sends, checks and records into the tally until the deadline.
Client = Callable[[Tally, float], Awaitable[None]]


async def closed_loop(
    client: Client, concurrency: int, duration: float, timeout: float
) -> tuple[Tally, float]:
    """Run ``concurrency`` clients until ``duration`` has passed; those still out ``timeout``
    seconds later are cancelled and counted as timeouts. Returns the tally and the wall time."""
    tally = Tally()
    start = time.monotonic()
    deadline = start + duration
    tasks = [asyncio.ensure_future(client(tally, deadline)) for _ in range(concurrency)]
    _, pending = await asyncio.wait(tasks, timeout=duration + timeout)
    for task in pending:
        task.cancel()
    tally.timeouts += len(pending)
    await asyncio.gather(*pending, return_exceptions=True)
    return tally, time.monotonic() - start


def summary(tally: Tally, elapsed: float, slow_s: float | None = None) -> dict[str, float]:
    """The ``BENCH_RESULT`` figures; answers slower than ``slow_s`` also count as timeouts."""
    latencies = sorted(tally.latencies_ns)
    slow = 0 if slow_s is None else sum(1 for value in latencies if value > slow_s * 1e9)
    return {
        "requests": len(latencies),
        "duration_s": elapsed,
        "bad": tally.bad,
        "socket_errors": tally.socket_errors,
        "timeouts": tally.timeouts + slow,
        "p50_us": _percentile(latencies, 0.50) / 1000,
        "p99_us": _percentile(latencies, 0.99) / 1000,
    }


async def _run(args: argparse.Namespace) -> dict[str, float]:
    with open(args.body_file, "rb") as file:
        body = file.read()
    with open(args.marker_file, "rb") as file:
        marker = file.read()
    request = post_request(args.host, args.port, args.path, args.header, body)

    async def client(tally: Tally, deadline: float) -> None:
        await _connection(args, request, marker, tally, deadline)

    tally, elapsed = await closed_loop(client, args.concurrency, args.duration, args.timeout)
    # wrk counts answers slower than its timeout as timeouts; so does this loader.
    return summary(tally, elapsed, slow_s=args.timeout)


def main(argv: Sequence[str] | None = None) -> None:
    """Parse the arguments, run the load, print the ``BENCH_RESULT`` line."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--path", required=True)
    parser.add_argument("--body-file", required=True)
    parser.add_argument("--marker-file", required=True)
    parser.add_argument("--concurrency", type=int, default=1)
    parser.add_argument("--duration", type=float, default=10.0)
    parser.add_argument("--timeout", type=float, default=10.0)
    parser.add_argument("--max-requests", type=int, default=2_000_000)
    parser.add_argument(
        "--header",
        action="append",
        help="'Name: value', repeatable (default: Content-Type: application/json)",
    )
    args = parser.parse_args(argv)
    try:
        import uvloop

        result = uvloop.run(_run(args))
    except ImportError:
        result = asyncio.run(_run(args))
    print("BENCH_RESULT " + json.dumps(result), flush=True)


if __name__ == "__main__":
    main()

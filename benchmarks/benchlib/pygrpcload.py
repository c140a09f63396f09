"""A closed-loop gRPC load generator on grpcio's asyncio client: the fallback without h2load.

Run as a script (pinned to the load CPU by the harness); prints one ``BENCH_RESULT {json}`` line
in the same shape as the REST loaders'. ``concurrency`` channels, each on its own connection,
send the same unary request (the framed body file, unframed: grpcio frames it) one after the
other until ``duration`` has passed. Every answer is checked: status OK and the marker bytes
present, else it counts in ``bad``; a call slower than ``timeout`` counts as a timeout. The run
is bounded in time (calls still out ``timeout`` seconds after the end are cancelled) and in
count (``--max-requests``).

grpcio is much slower than h2load as a load generator, so results obtained with it say so.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
from collections.abc import Sequence

import grpc  # type: ignore[import-untyped]

if __package__:
    from .pyload import Tally, closed_loop, summary
else:  # run as a script, beside pyload.py
    from pyload import Tally, closed_loop, summary

__all__ = ["main"]


async def _channel(
    args: argparse.Namespace, message: bytes, marker: bytes, tally: Tally, deadline: float
) -> None:
    # A local subchannel pool: each channel gets its own connection, as each h2load client does.
    options = [("grpc.use_local_subchannel_pool", 1)]
    async with grpc.aio.insecure_channel(args.target, options=options) as channel:
        call = channel.unary_unary(args.path)  # no serializers: bytes in, bytes out
        while time.monotonic() < deadline and tally.started < args.max_requests:
            tally.started += 1
            begin = time.perf_counter_ns()
            try:
                answer = await call(message, timeout=args.timeout)
            except grpc.aio.AioRpcError as exc:
                if exc.code() == grpc.StatusCode.DEADLINE_EXCEEDED:
                    tally.timeouts += 1
                elif exc.code() == grpc.StatusCode.UNAVAILABLE:
                    tally.socket_errors += 1
                    await asyncio.sleep(0.01)  # do not spin on a dead server
                else:
                    tally.latencies_ns.append(time.perf_counter_ns() - begin)
                    tally.bad += 1
                continue
            tally.latencies_ns.append(time.perf_counter_ns() - begin)
            if marker not in answer:
                tally.bad += 1


async def _run(args: argparse.Namespace) -> dict[str, float]:
    with open(args.body_file, "rb") as file:
        framed = file.read()
    with open(args.marker_file, "rb") as file:
        marker = file.read()
    message = framed[5:]  # the 5-byte gRPC prefix is for h2load; grpcio adds its own

    async def client(tally: Tally, deadline: float) -> None:
        await _channel(args, message, marker, tally, deadline)

    # A call slower than the timeout already ended as DEADLINE_EXCEEDED, counted in the tally.
    tally, elapsed = await closed_loop(client, args.concurrency, args.duration, args.timeout)
    return summary(tally, elapsed)


def main(argv: Sequence[str] | None = None) -> None:
    """Parse the arguments, run the load, print the ``BENCH_RESULT`` line."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--target", required=True, help="host:port")
    parser.add_argument("--path", required=True, help="/package.Service/Method")
    parser.add_argument("--body-file", required=True, help="one framed gRPC message")
    parser.add_argument("--marker-file", required=True)
    parser.add_argument("--concurrency", type=int, default=1)
    parser.add_argument("--duration", type=float, default=10.0)
    parser.add_argument("--timeout", type=float, default=10.0)
    parser.add_argument("--max-requests", type=int, default=2_000_000)
    args = parser.parse_args(argv)
    result = asyncio.run(_run(args))
    print("BENCH_RESULT " + json.dumps(result), flush=True)


if __name__ == "__main__":
    main()

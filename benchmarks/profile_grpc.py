"""What one gRPC ``ModelInfer`` costs the server: inferkit beside minimal grpclib handlers.

Wall-clock load tests are noise on a shared 2-CPU machine; the CPU time a server process spends
per request (or, under valgrind, the instructions it executes per request) is not. This script
starts each server in its own process on a free loopback port, checks one answer, warms it up,
then sends ``--requests`` calls from ``--concurrency`` grpclib clients (one connection each, one
call at a time) and reports the server's own figure per request:

- ``--mode cpu`` (default): ``time.process_time()`` of the server, read by the server itself
  around the measured calls; the median of ``--repeat`` rounds;
- ``--mode callgrind``: instructions executed by the server (``valgrind --tool=callgrind``,
  counters zeroed after the warm-up and dumped after the calls); repeatable under load, about
  50x slower, so use fewer requests;
- ``--mode cprofile`` / ``--mode pyinstrument``: the same run under a profiler, printing where
  the server's time goes (top functions; ``--profile-dir`` keeps the ``.prof`` / ``.html``).

Servers (each serves ``sum``: the FP32 input summed along its last axis):

- ``inferkit``: ``create_grpc_service(Server([SumModel]))`` on grpclib, the sum model of the
  benchmark (``NumpyCodec.decode_input`` / ``encode_output``), default settings, access log off,
  and, as ``inferkit start`` has by default, the metrics app's listener on the server's events
  (``--no-metrics`` leaves it out);
- ``minimal``: a hand-written betterproto2 ``ModelInfer`` on the same generated service base:
  parse -> numpy sum -> ``ModelInferResponse`` (raw answer for a raw request), nothing else. What
  any service on grpclib + betterproto2 pays; the issue's 1.22x MLServer came from one like it;
- ``bare``: returns a reply built once at start-up (the benchmark's ``grpclib-bare``):
  grpclib + h2 + betterproto2 parsing the request and serializing the reply;
- ``floor``: grpclib + h2 alone: the request stays bytes and the reply is bytes serialized at
  start-up. No service on grpclib can cost less.

Cases: ``sum16`` ([1,16] FP32 in typed ``fp32_contents``, as the benchmark's gRPC rows),
``sum16raw`` (the same in ``raw_input_contents``), ``sum1m`` ([1,1000000] FP32 raw: a 4 MB
message, as ``grpc-sum1m-c4``).

Examples (from the repository root, in an environment with ``inferkit[all]``)::

    python benchmarks/profile_grpc.py
    python benchmarks/profile_grpc.py --mode callgrind --requests 400 --cases sum16,sum16raw
    python benchmarks/profile_grpc.py --mode cprofile --servers inferkit --cases sum16

Not run by the test suite.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import io
import json
import os
import pstats
import re
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

MODEL_INFER = "/inference.GRPCInferenceService/ModelInfer"
SERVERS = ("inferkit", "minimal", "bare", "floor")
MODES = ("cpu", "callgrind", "cprofile", "pyinstrument")


@dataclass(frozen=True)
class Case:
    key: str
    title: str
    shape: tuple[int, ...]
    raw: bool
    requests: int  # default number of measured calls (cpu mode; a tenth under callgrind)


CASES = {
    c.key: c
    for c in (
        Case("sum16", "sum [1,16] FP32 typed", (1, 16), False, 4000),
        Case("sum16raw", "sum [1,16] FP32 raw", (1, 16), True, 4000),
        Case("sum1m", "sum [1,1000000] FP32 raw", (1, 1_000_000), True, 150),
    )
}


def case_input(case: Case) -> np.ndarray[Any, Any]:
    n = int(np.prod(case.shape))
    array: np.ndarray[Any, Any] = np.arange(1, n + 1, dtype=np.float32) / np.float32(8)
    return array.reshape(case.shape)


def expected_sum(case: Case) -> float:
    return float(case_input(case).astype(np.float64).sum())


def request_bytes(case: Case) -> bytes:
    from inferkit.transports.grpc._generated import inference as pb

    array = case_input(case)
    tensor = pb.ModelInferRequestInferInputTensor(
        name="input-0", datatype="FP32", shape=list(case.shape)
    )
    message = pb.ModelInferRequest(model_name="sum", inputs=[tensor])
    if case.raw:
        message.raw_input_contents = [array.astype("<f4").tobytes()]
    else:
        tensor.contents = pb.InferTensorContents(fp32_contents=array.ravel().tolist())
    return bytes(message)


# -- the servers ----------------------------------------------------------------------------


def _sum_model() -> Any:
    from inferkit import InferenceRequest, InferenceResponse, Model, ModelSettings
    from inferkit.codecs import NumpyCodec

    class SumModel(Model):
        async def predict(self, payload: InferenceRequest) -> InferenceResponse:
            total = NumpyCodec.decode_input(payload.inputs[0]).sum(axis=-1)
            return InferenceResponse(
                model_name=self.name, outputs=[NumpyCodec.encode_output("total", total)]
            )

    return SumModel(ModelSettings(name="sum"))


def _minimal_service() -> Any:
    from inferkit.transports.grpc._generated import inference as pb

    class MinimalInference(pb.GrpcInferenceServiceBase):
        async def model_infer(self, message: pb.ModelInferRequest) -> pb.ModelInferResponse:
            tensor = message.inputs[0]
            if message.raw_input_contents:
                array = np.frombuffer(message.raw_input_contents[0], "<f4")
            else:
                assert tensor.contents is not None
                array = np.array(tensor.contents.fp32_contents, np.float32)
            total = array.reshape(tensor.shape).sum(axis=-1)
            output = pb.ModelInferResponseInferOutputTensor(
                name="total", datatype="FP32", shape=list(total.shape)
            )
            reply = pb.ModelInferResponse(model_name=message.model_name, id=message.id)
            if message.raw_input_contents:
                reply.raw_output_contents = [total.astype("<f4").tobytes()]
            else:
                output.contents = pb.InferTensorContents(fp32_contents=total.tolist())
            reply.outputs = [output]
            return reply

    return MinimalInference()


def _bare_service(case: Case) -> Any:
    from inferkit.transports.grpc._generated import inference as pb

    total = case_input(case).sum(axis=-1)
    output = pb.ModelInferResponseInferOutputTensor(
        name="total", datatype="FP32", shape=list(total.shape)
    )
    reply = pb.ModelInferResponse(model_name="sum", outputs=[output])
    if case.raw:
        reply.raw_output_contents = [total.astype("<f4").tobytes()]
    else:
        output.contents = pb.InferTensorContents(fp32_contents=total.tolist())

    class BareInference(pb.GrpcInferenceServiceBase):
        reply: pb.ModelInferResponse

        async def model_infer(self, message: pb.ModelInferRequest) -> pb.ModelInferResponse:
            return reply

    service = BareInference()
    service.reply = reply
    return service


def _floor_service(case: Case) -> Any:
    from grpclib.const import Cardinality, Handler

    reply = _Raw(bytes(_bare_service(case).reply))

    async def model_infer(stream: Any) -> None:
        await stream.recv_message()
        await stream.send_message(reply)

    class FloorInference:
        def __mapping__(self) -> dict[str, Handler]:
            return {MODEL_INFER: Handler(model_infer, Cardinality.UNARY_UNARY, _Raw, _Raw)}

    return FloorInference()


async def _serve(name: str, case: Case, port: int, mode: str, out: Path, metrics: bool) -> None:
    import logging

    from grpclib.server import Server as GrpcServer

    logging.getLogger("inferkit.access").setLevel(logging.WARNING)  # as the runner's default
    if name == "inferkit":
        from inferkit import Server
        from inferkit.transports.grpc import create_grpc_service

        core = Server([_sum_model()])
        if metrics:
            from inferkit.transports.metrics import create_metrics_app

            create_metrics_app(core)  # its listener counts every inference, served or not
        await core.start()
        services = create_grpc_service(core)
    elif name == "minimal":
        services = [_minimal_service()]
    elif name == "bare":
        services = [_bare_service(case)]
    else:
        services = [_floor_service(case)]
    grpc = GrpcServer(services)
    await grpc.start("127.0.0.1", port)

    measure = _Measure(mode, out)
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGUSR1, measure.start)
    loop.add_signal_handler(signal.SIGUSR2, measure.stop)
    stop = asyncio.Event()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    print("ready", flush=True)
    await stop.wait()
    grpc.close()
    await grpc.wait_closed()


class _Measure:
    """Started by SIGUSR1 after the warm-up, stopped by SIGUSR2: writes ``out`` (JSON)."""

    def __init__(self, mode: str, out: Path) -> None:
        self.mode, self.out = mode, out
        self.profiler: Any = None
        self.cpu = 0.0

    def start(self) -> None:
        if self.mode == "cprofile":
            import cProfile

            self.profiler = cProfile.Profile(time.process_time)
            self.profiler.enable()
        elif self.mode == "pyinstrument":
            from pyinstrument import Profiler

            self.profiler = Profiler(interval=0.0002, async_mode="disabled")
            self.profiler.start()
        self.cpu = time.process_time()

    def stop(self) -> None:
        cpu = time.process_time() - self.cpu
        if self.mode == "cprofile":
            self.profiler.disable()
            self.profiler.dump_stats(str(self.out.with_suffix(".prof")))
        elif self.mode == "pyinstrument":
            self.profiler.stop()
            self.out.with_suffix(".html").write_text(self.profiler.output_html())
            self.out.with_suffix(".txt").write_text(
                self.profiler.output_text(unicode=False, color=False, show_all=False)
            )
        self.out.write_text(json.dumps({"cpu_s": cpu}))


# -- the client -----------------------------------------------------------------------------


class _Raw:
    """Already serialized message bytes, for grpclib's codec (no parsing in the client)."""

    __slots__ = ("data",)

    def __init__(self, data: bytes) -> None:
        self.data = data

    def SerializeToString(self) -> bytes:
        return self.data

    @classmethod
    def FromString(cls, data: bytes) -> _Raw:
        return cls(data)


async def _calls(port: int, body: bytes, count: int, concurrency: int) -> list[bytes]:
    """``count`` ModelInfer calls from ``concurrency`` connections; returns one answer."""
    from grpclib.client import Channel, UnaryUnaryMethod

    channels = [Channel("127.0.0.1", port) for _ in range(concurrency)]
    left = count
    answers: list[bytes] = []

    async def worker(channel: Channel) -> None:
        nonlocal left
        method = UnaryUnaryMethod(channel, MODEL_INFER, _Raw, _Raw)
        message = _Raw(body)
        while left > 0:
            left -= 1
            reply = await method(message)
            if not answers:
                answers.append(reply.data)

    try:
        await asyncio.gather(*(worker(c) for c in channels))
    finally:
        for channel in channels:
            channel.close()
    return answers


def check_answer(case: Case, answer: bytes) -> None:
    from inferkit.transports.grpc._generated import inference as pb

    reply = pb.ModelInferResponse.parse(answer)
    if case.raw:
        (got,) = np.frombuffer(reply.raw_output_contents[0], "<f4").tolist()
    else:
        contents = reply.outputs[0].contents
        assert contents is not None
        (got,) = contents.fp32_contents
    want = expected_sum(case)
    if abs(got - want) > 1e-4 * abs(want):
        raise SystemExit(f"wrong answer for {case.key}: {got} != {want}")


# -- the driver -----------------------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@contextlib.contextmanager
def _server(
    name: str, case: Case, mode: str, out: Path, cpu: str | None, metrics: bool
) -> Iterator[subprocess.Popen[str]]:
    port = _free_port()
    command = [sys.executable, __file__, "_serve", name, case.key, str(port), mode, str(out)]
    command.append("metrics" if metrics else "no-metrics")
    if mode == "callgrind":
        command = [
            "valgrind",
            "--quiet",
            "--tool=callgrind",
            "--instr-atstart=no",
            f"--callgrind-out-file={out.with_suffix('.callgrind')}",
            *command,
        ]
    if cpu is not None:
        command = ["taskset", "-c", cpu, *command]
    proc = subprocess.Popen(command, stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        if line.strip() != "ready":
            raise SystemExit(f"server {name} failed to start")
        proc.port = port  # type: ignore[attr-defined]
        yield proc
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(60)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def _callgrind_control(proc: subprocess.Popen[str], *args: str) -> None:
    # The pid valgrind runs python as (taskset execs, so it is the same process).
    subprocess.run(["callgrind_control", *args, str(proc.pid)], check=True, capture_output=True)


def _instructions(dump: Path) -> int:
    total = 0
    for path in dump.parent.glob(dump.name + "*"):
        text = path.read_text(errors="replace")
        found = re.search(r"^(?:summary|totals):\s+(\d+)", text, re.M)
        if found and path.name != dump.name:  # the dumps made by --dump, not the exit one
            total += int(found.group(1))
    return total


def measure(
    name: str,
    case: Case,
    mode: str,
    requests: int,
    concurrency: int,
    cpu: str | None,
    tmp: Path,
    metrics: bool = True,
) -> float:
    """The server's CPU seconds (or instructions) per request, for one round."""
    out = tmp / f"{name}-{case.key}-{os.getpid()}-{time.monotonic_ns()}.json"
    body = request_bytes(case)
    with _server(name, case, mode, out, cpu, metrics) as proc:
        port: int = proc.port  # type: ignore[attr-defined]
        if mode == "callgrind":
            _callgrind_control(proc, "--instr=on")
        (answer,) = asyncio.run(_calls(port, body, 1, 1))
        check_answer(case, answer)
        asyncio.run(_calls(port, body, max(requests // 5, 20), concurrency))  # warm-up
        if mode == "callgrind":
            _callgrind_control(proc, "--zero")
        else:
            proc.send_signal(signal.SIGUSR1)
        asyncio.run(_calls(port, body, requests, concurrency))
        if mode == "callgrind":
            _callgrind_control(proc, "--dump=measured")
            return _instructions(out.with_suffix(".callgrind")) / requests
        proc.send_signal(signal.SIGUSR2)
        for _ in range(600):
            if out.exists() and out.stat().st_size:
                break
            time.sleep(0.05)
        result = json.loads(out.read_text())
    if mode in ("cprofile", "pyinstrument"):
        _show_profile(out, mode, requests)
    return float(result["cpu_s"]) / requests


def _show_profile(out: Path, mode: str, requests: int) -> None:
    if mode == "cprofile":
        text = io.StringIO()
        stats = pstats.Stats(str(out.with_suffix(".prof")), stream=text)
        stats.sort_stats("tottime").print_stats(30)
        stats.sort_stats("cumulative").print_stats(40)
        print(text.getvalue())
        print(f"(per request: divide by {requests})")
    else:
        print(out.with_suffix(".txt").read_text())


def _table(rows: list[tuple[str, str, float]], unit: str, cases: Sequence[Case]) -> str:
    by = {(server, case): value for server, case, value in rows}
    lines = [
        f"| case | server | {unit} per request | vs minimal |",
        "|---|---|--:|--:|",
    ]
    for case in cases:
        for server in SERVERS:
            value = by.get((server, case.key))
            if value is None:
                continue
            base = by.get(("minimal", case.key))
            ratio = f"{value / base:.2f}x" if base else "-"
            shown = f"{value:,.0f}" if unit == "instructions" else f"{value * 1e3:.3f} ms"
            lines.append(f"| {case.title} | {server} | {shown} | {ratio} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--mode", choices=MODES, default="cpu")
    parser.add_argument("--servers", default=",".join(SERVERS), help="comma-separated")
    parser.add_argument("--cases", default=",".join(CASES), help="comma-separated")
    parser.add_argument("--requests", type=int, help="measured calls per round (per case)")
    parser.add_argument("--concurrency", type=int, default=8, help="client connections")
    parser.add_argument("--repeat", type=int, default=3, help="rounds; the median is shown")
    parser.add_argument("--cpu", help="pin the server to these CPUs (taskset -c)")
    parser.add_argument("--profile-dir", help="keep the profiles / callgrind dumps here")
    parser.add_argument("--json", action="store_true", help="print the figures as JSON too")
    parser.add_argument(
        "--no-metrics", action="store_true", help="inferkit without the metrics app's listener"
    )
    args = parser.parse_args(argv)
    servers = [s for s in args.servers.split(",") if s]
    cases = [CASES[c] for c in args.cases.split(",") if c]
    unit = "instructions" if args.mode == "callgrind" else "CPU"
    repeat = 1 if args.mode in ("cprofile", "pyinstrument", "callgrind") else args.repeat
    rows: list[tuple[str, str, float]] = []
    with tempfile.TemporaryDirectory() as scratch:
        tmp = Path(args.profile_dir or scratch)
        tmp.mkdir(parents=True, exist_ok=True)
        for case in cases:
            requests = args.requests or (
                case.requests // 10 if args.mode == "callgrind" else case.requests
            )
            for server in servers:
                values = [
                    measure(
                        server,
                        case,
                        args.mode,
                        requests,
                        args.concurrency,
                        args.cpu,
                        tmp,
                        not args.no_metrics,
                    )
                    for _ in range(repeat)
                ]
                value = statistics.median(values)
                rows.append((server, case.key, value))
                shown = ", ".join(
                    f"{v:,.0f}" if unit == "instructions" else f"{v * 1e3:.3f}" for v in values
                )
                print(f"{case.key:9} {server:9} {shown}", file=sys.stderr, flush=True)
    print(_table(rows, unit, cases))
    if args.json:
        print(json.dumps([{"server": s, "case": c, "per_request": v} for s, c, v in rows]))


def _serve_main(argv: list[str]) -> None:
    name, case_key, port, mode, out, metrics = argv
    run: Callable[[], Any] = lambda: _serve(  # noqa: E731
        name, CASES[case_key], int(port), mode, Path(out), metrics == "metrics"
    )
    try:
        import uvloop
    except ImportError:
        asyncio.run(run())
        return
    if sys.version_info >= (3, 11):
        with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
            runner.run(run())
    else:
        uvloop.install()
        asyncio.run(run())


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "_serve":
        _serve_main(sys.argv[2:])
    else:
        main()

"""The gRPC pieces: the prepared body, the answer check, h2load's figures, the loaders, a run.

Live tests run the bare grpclib server on a free loopback port. They assert counts (answers,
errors caught), never timings.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from benchlib.answers import AnswerError
from benchlib.drivers import drivers
from benchlib.grpcdriver import GrpcDriver, call
from benchlib.grpcloaders import GrpcTarget, parse_h2load, run_grpc_load
from benchlib.grpcwire import (
    MODEL_INFER,
    answer_marker,
    check_grpc_answer,
    frame,
    infer_request,
    output_values,
    unframe,
)
from benchlib.lineup import bare_grpc_spec
from benchlib.loaders import LoadError, LoadResult
from benchlib.scenarios import SCENARIOS, Payload, Request
from benchlib.servers import RunningServer, start_server, stop_server
from tritonclient.grpc import service_pb2

from inferkit.transports.grpc._generated import inference as pb

BENCHMARKS = Path(__file__).resolve().parent.parent
SMALL = np.arange(1, 17, dtype=np.float32).reshape(1, 16) / np.float32(8)
TYPED = Request(Payload("sum-16", "sum", "sum [1,16] FP32"), b"{}", (17.0,), tensor=SMALL)
RAW = Request(Payload("sum-raw", "sum", "raw", grpc_raw=True), b"{}", (17.0,), tensor=SMALL)
UNKNOWN = Request(Payload("unknown", "sum", "unknown"), b"{}", (17.0,), tensor=SMALL)
LOADERS = [
    pytest.param(False, id="pygrpcload"),
    pytest.param(
        True,
        id="h2load",
        marks=pytest.mark.skipif(shutil.which("h2load") is None, reason="no h2load"),
    ),
]


# The prepared request ----------------------------------------------------------------------


@pytest.mark.parametrize("raw", [False, True], ids=["typed", "raw"])
def test_the_framed_body_round_trips_through_both_generated_parsers(raw: bool) -> None:
    framed = frame(infer_request("sum-16", TYPED, raw))
    assert framed[0] == 0  # not compressed
    assert int.from_bytes(framed[1:5], "big") == len(framed) - 5
    message = unframe(framed)
    triton = service_pb2.ModelInferRequest.FromString(message)  # protoc, upb
    ours = pb.ModelInferRequest.FromString(message)  # betterproto2: what inferkit parses with
    for parsed in (triton, ours):
        assert parsed.model_name == "sum-16"
        (tensor,) = parsed.inputs
        assert (tensor.name, tensor.datatype, list(tensor.shape)) == ("x", "FP32", [1, 16])
    if raw:
        assert triton.raw_input_contents == [SMALL.tobytes()] == ours.raw_input_contents
        assert not triton.inputs[0].HasField("contents") and ours.inputs[0].contents is None
    else:
        assert not triton.raw_input_contents and not ours.raw_input_contents
        contents = ours.inputs[0].contents
        assert contents is not None
        typed = (triton.inputs[0].contents.fp32_contents, contents.fp32_contents)
        assert [list(values) for values in typed] == [SMALL.ravel().tolist()] * 2


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"\x00\x00\x00", "not an uncompressed gRPC message"),
        (b"\x01\x00\x00\x00\x01a", "not an uncompressed gRPC message"),
        (b"\x00\x00\x00\x00\x03ab", "the prefix says 3 bytes, 2 follow"),
    ],
)
def test_unframe_refuses_what_frame_cannot_have_made(data: bytes, message: str) -> None:
    with pytest.raises(ValueError, match=f"^{message}$"):
        unframe(data)


def test_a_request_without_a_tensor_cannot_be_prepared() -> None:
    with pytest.raises(ValueError, match=r"^payload sum-16 has no tensor$"):
        infer_request("sum", Request(TYPED.payload, b"{}", (17.0,)), raw=False)


# The answer check --------------------------------------------------------------------------


def _response(values: list[float], datatype: str = "FP32", raw: bool = False) -> bytes:
    response = service_pb2.ModelInferResponse(model_name="sum", id="1b4e28ba")
    output = response.outputs.add(name="total", datatype=datatype, shape=[1, len(values)])
    field = {"FP32": "fp32_contents", "INT64": "int64_contents"}[datatype]
    if raw:
        dtype = {"FP32": "<f4", "INT64": "<i8"}[datatype]
        response.raw_output_contents.append(np.asarray(values, dtype=dtype).tobytes())
    else:
        getattr(output.contents, field).extend(values)
    data: bytes = response.SerializeToString()
    return data


@pytest.mark.parametrize(
    ("answer", "expected", "rtol", "marker"),
    [
        (_response([17.0]), (17.0,), 0.0, b"\x32\x04\x00\x00\x88\x41"),
        (_response([17.0], raw=True), (17.0,), 0.0, b"\x00\x00\x88\x41"),
        (_response([7], "INT64"), (7,), 0.0, b"\x1a\x01\x07"),
        (_response([7], "INT64", raw=True), (7,), 0.0, (7).to_bytes(8, "little")),
        (_response([500377.28]), (500377.2696,), 1e-4, None),
    ],
    ids=["fp32", "fp32-raw", "int64", "int64-raw", "within-rtol"],
)
def test_check_grpc_answer_accepts_typed_and_raw_answers(
    answer: bytes, expected: tuple[float, ...], rtol: float, marker: bytes | None
) -> None:
    found = check_grpc_answer(answer, expected, rtol)
    assert found in answer
    if marker is not None:
        assert found == marker


@pytest.mark.parametrize(
    ("answer", "expected", "message"),
    [
        (_response([16.0]), (17.0,), "value 0 is 16.0, expected 17.0"),
        (_response([16.0], raw=True), (17.0,), "value 0 is 16.0, expected 17.0"),
        (_response([17.0, 1.0]), (17.0,), "expected 1 values, got 2: a 46-byte response"),
        (_response([8], "INT64"), (7,), "value 0 is 8, expected 7"),
        (
            service_pb2.ModelInferResponse(model_name="sum").SerializeToString(),
            (17.0,),
            "a ModelInferResponse without outputs: 'model_name: \"sum\"\\n'",
        ),
        (b"\xff\xff\xff", (17.0,), "not a ModelInferResponse (3 bytes)"),
    ],
    ids=["value", "raw-value", "count", "int64", "no-outputs", "garbage"],
)
def test_check_grpc_answer_rejects_a_wrong_answer(
    answer: bytes, expected: tuple[float, ...], message: str
) -> None:
    with pytest.raises(AnswerError) as caught:
        check_grpc_answer(answer, expected, 0.0)
    assert str(caught.value) == message


def test_a_raw_output_of_the_wrong_size_is_refused() -> None:
    response = service_pb2.ModelInferResponse(raw_output_contents=[b"\x00\x00\x88"])
    response.outputs.add(name="total", datatype="FP32", shape=[1])
    with pytest.raises(AnswerError, match=r"^raw output of 3 bytes is not FP32$"):
        output_values(response.SerializeToString())


def test_the_marker_is_the_values_bytes_of_the_first_output() -> None:
    answer = _response([17.0])
    assert answer_marker(answer) == answer[answer.index(b"\x32\x04") :][:6]


# h2load's figures --------------------------------------------------------------------------

H2LOAD = """\
finished in 2.00s, 779.50 req/s, 96.90KB/s
requests: {total} total, {total} started, {done} done, {ok} succeeded, {failed} failed, \
{errored} errored, {timeout} timeout
status codes: {ok} 2xx, 0 3xx, 0 4xx, 0 5xx
traffic: 193.81KB (198457) total, 3.11KB (3186) headers (space savings 95.36%), \
147.68KB ({data}) data
"""


def _h2load(**counts: int) -> str:
    return H2LOAD.format(**counts)


@pytest.mark.parametrize(
    ("counts", "expected"),
    [
        # 1000 right answers of 97 bytes.
        (
            {"total": 1000, "done": 1000, "ok": 1000, "failed": 0, "errored": 0, "timeout": 0},
            {"data": 97_000, "requests": 1000, "bad": 0, "socket_errors": 0, "timeouts": 0},
        ),
        # gRPC errors: HTTP 200 with no body. 3 answers of 97 bytes are missing.
        (
            {"total": 1000, "done": 1000, "ok": 1000, "failed": 0, "errored": 0, "timeout": 0},
            {"data": 96_709, "requests": 1000, "bad": 3, "socket_errors": 0, "timeouts": 0},
        ),
        # Every answer an error: nothing received.
        (
            {"total": 500, "done": 500, "ok": 500, "failed": 0, "errored": 0, "timeout": 0},
            {"data": 0, "requests": 500, "bad": 500, "socket_errors": 0, "timeouts": 0},
        ),
        # 5 non-2xx (no body), 2 broken streams of which 1 timed out.
        (
            {"total": 1000, "done": 999, "ok": 992, "failed": 7, "errored": 2, "timeout": 1},
            {"data": 96_224, "requests": 997, "bad": 5, "socket_errors": 1, "timeouts": 1},
        ),
        # A few bytes short (answers of varying size) is not a missing answer.
        (
            {"total": 10, "done": 10, "ok": 10, "failed": 0, "errored": 0, "timeout": 0},
            {"data": 960, "requests": 10, "bad": 0, "socket_errors": 0, "timeouts": 0},
        ),
    ],
    ids=["all-right", "grpc-errors", "all-errors", "non-2xx-and-broken", "bytes-short"],
)
def test_parse_h2load_counts_requests_and_missing_answers(
    counts: dict[str, int], expected: dict[str, int]
) -> None:
    result = parse_h2load(_h2load(**counts, data=expected["data"]), [], answer_size=97)
    got = {key: getattr(result, key) for key in expected if key != "data"}
    assert got == {key: value for key, value in expected.items() if key != "data"}
    assert result.duration_s == 2.0


def test_parse_h2load_takes_exact_percentiles_of_completed_requests_from_its_log() -> None:
    counts = {"total": 100, "done": 100, "ok": 100, "failed": 0, "errored": 0, "timeout": 0}
    # 100 answers taking 1..100 ms, in a shuffled order, and one failed stream (-1).
    order = np.random.default_rng(0).permutation(100) + 1
    log = [f"1795303251682086\t200\t{ms * 1000}\n" for ms in order]
    log.append("1795303251682090\t-1\t999999999\n")
    result = parse_h2load(_h2load(**counts, data=9700), log, answer_size=97)
    assert (result.p50_us, result.p99_us) == (50_000.0, 99_000.0)


def test_parse_h2load_without_a_summary_says_so() -> None:
    with pytest.raises(LoadError, match=r"^h2load printed no summary: "):
        parse_h2load("connect to 127.0.0.1 port 1 failed\n", [], 97)


# Against the bare grpclib server -----------------------------------------------------------


@pytest.fixture(scope="module")
def bare(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    work = tmp_path_factory.mktemp("bare-grpc")
    spec = bare_grpc_spec(work, {"sum-16": TYPED, "sum-raw": RAW})
    running = start_server(spec, work / "log", None, 60)
    yield running
    stop_server(running)


def _driver(tmp_path: Path, use_h2load: bool = False) -> GrpcDriver:
    return GrpcDriver(tmp_path, use_h2load, "test")


@pytest.mark.parametrize(
    ("request_", "marker"),
    [(TYPED, b"\x32\x04\x00\x00\x88\x41"), (RAW, b"\x00\x00\x88\x41")],
    ids=["typed", "raw"],
)
def test_verify_returns_the_marker_of_a_right_answer(
    bare: RunningServer, tmp_path: Path, request_: Request, marker: bytes
) -> None:
    assert _driver(tmp_path).verify(bare, request_, (17.0,)) == marker


@pytest.mark.parametrize(
    ("request_", "expected", "message"),
    [
        (TYPED, (16.0,), "value 0 is 17.0, expected 16.0"),
        (RAW, (17.0, 17.0), "expected 2 values, got 1: a 31-byte response"),
        (UNKNOWN, (17.0,), "gRPC NOT_FOUND: Model 'unknown' not found"),
    ],
    ids=["value", "count", "grpc-status"],
)
def test_verify_rejects_a_wrong_answer_and_a_grpc_error(
    bare: RunningServer,
    tmp_path: Path,
    request_: Request,
    expected: tuple[float, ...],
    message: str,
) -> None:
    with pytest.raises(AnswerError) as caught:
        _driver(tmp_path).verify(bare, request_, expected)
    assert str(caught.value) == message


def _target(server: RunningServer, tmp_path: Path, request: Request, marker: bytes) -> GrpcTarget:
    body = tmp_path / "body.grpc"
    body.write_bytes(frame(infer_request(request.payload.key, request, request.payload.grpc_raw)))
    answer = call(server.spec.ports.grpc, infer_request("sum-16", TYPED, False), 10.0)
    return GrpcTarget(
        "127.0.0.1", server.spec.ports.grpc, MODEL_INFER, body, marker, 5 + len(answer), 2, 1, 10.0
    )


@pytest.mark.parametrize("use_h2load", LOADERS)
def test_right_answers_count_no_errors(
    bare: RunningServer, tmp_path: Path, use_h2load: bool
) -> None:
    target = _target(bare, tmp_path, TYPED, b"\x32\x04\x00\x00\x88\x41")
    result = run_grpc_load(target, tmp_path, None, use_h2load)
    assert result.requests > 0
    assert result.errors == 0


@pytest.mark.parametrize("use_h2load", LOADERS)
def test_grpc_errors_under_load_count_though_http_says_200(
    bare: RunningServer, tmp_path: Path, use_h2load: bool
) -> None:
    # NOT_FOUND comes as HTTP 200 with grpc-status in the trailers and no body.
    target = _target(bare, tmp_path, UNKNOWN, b"\x32\x04\x00\x00\x88\x41")
    result = run_grpc_load(target, tmp_path, None, use_h2load)
    assert result.requests > 0
    assert result.bad == result.requests


def test_the_fallback_counts_answers_without_the_marker(
    bare: RunningServer, tmp_path: Path
) -> None:
    target = _target(bare, tmp_path, TYPED, b"\x32\x04\x00\x00\x80\x41")  # 16.0
    result = run_grpc_load(target, tmp_path, None, use_h2load=False)
    assert result.requests > 0
    assert result.bad == result.requests


@pytest.mark.parametrize("use_h2load", LOADERS)
def test_the_driver_checks_then_loads(
    bare: RunningServer, tmp_path: Path, use_h2load: bool
) -> None:
    driver = _driver(tmp_path, use_h2load)
    scenario = next(s for s in SCENARIOS if s.key == "grpc-sum16-c1")
    marker = driver.verify(bare, RAW, (17.0,))
    result = driver.load(bare, RAW, scenario, marker, 1, None)
    assert isinstance(result, LoadResult)
    assert result.requests > 0
    assert result.errors == 0


# Without the client packages, and a whole run ----------------------------------------------


def test_without_tritonclient_the_grpc_rows_are_skipped_with_the_reason(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in ("benchlib.grpcdriver", "benchlib.grpcwire"):
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, "tritonclient.grpc", None)
    found, missing = drivers(tmp_path, True, None)
    assert sorted(found) == ["rest"]
    assert missing == {
        "grpc": "gRPC scenarios skipped: tritonclient.grpc is not installed"
        " (the gRPC driver needs `pip install 'tritonclient[grpc]'`)"
    }


def test_scenario_labels_say_when_the_tensor_is_raw() -> None:
    labels = {s.key: s.label() for s in SCENARIOS}
    assert labels["grpc-sum1m-c4"] == "gRPC sum [1,1000000] FP32 raw, c=4"
    assert labels["grpc-sum16-c32"] == "gRPC sum [1,16] FP32, c=32"
    assert labels["rest-sum1m-c4"] == "REST sum [1,1000000] FP32, c=4"


def test_a_smoke_run_over_both_transports(tmp_path: Path) -> None:
    # inferkit answers the same payload on REST and on gRPC: each is checked on its own.
    command = [sys.executable, str(BENCHMARKS / "run.py"), "--quick", "--warmup=0", "--duration=1"]
    command += ["--servers=inferkit,grpclib", "--no-mlserver", f"--results={tmp_path}"]
    command += ["--scenarios=rest-sum16-c1,grpc-sum16-c1,grpc-sum1m"]
    done = subprocess.run(command, capture_output=True, text=True, timeout=600, check=False)
    assert done.returncode == 0, done.stderr[-2000:]
    results = json.loads((tmp_path / "results.json").read_text())
    cells = {(cell["scenario"], cell["server"]): cell for cell in results["cells"]}
    assert sorted(cells) == [
        ("grpc-sum16-c1", "grpclib-bare"),
        ("grpc-sum16-c1", "inferkit"),
        ("grpc-sum1m-c4", "grpclib-bare"),
        ("grpc-sum1m-c4", "inferkit"),
        ("rest-sum16-c1", "inferkit"),
    ]
    assert all(cell["errors"] == 0 and cell["runs"][0]["requests"] > 0 for cell in cells.values())
    assert "| gRPC sum [1,16] FP32, c=1 | inferkit |" in done.stdout
    assert not [note for note in results["notes"] if "wrongly" in note or "after the load" in note]

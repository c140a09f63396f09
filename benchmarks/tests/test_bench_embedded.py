"""inferkit embedded in a Starlette service under uvicorn, the uvicorn ceilings, the binary row.

Each server starts on a free loopback port and answers one request of each kind (no load); the
last test is a one-second smoke run of the binary row, for the "not supported" cell.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from benchlib.answers import AnswerError
from benchlib.drivers import RestDriver
from benchlib.lineup import bare_spec, embedded_spec, minimal_v2_spec, uvicorn_missing
from benchlib.probe import exchange
from benchlib.scenarios import Request, build_requests
from benchlib.servers import RunningServer, ServerSpec, start_server, stop_server

pytestmark = pytest.mark.skipif(uvicorn_missing() is not None, reason=str(uvicorn_missing()))

BENCHMARKS = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def requests() -> dict[str, Request]:
    return build_requests({})


def _serve(work: Path, spec: ServerSpec) -> Iterator[RunningServer]:
    running = start_server(spec, work / f"{spec.name}.log", None, 60)
    yield running
    stop_server(running)
    # SIGTERM ends it within the grace period (uvicorn re-raises the signal once it has shut
    # down, the lifespan's `server.stop()` included); -9 would mean it had to be killed.
    code = running.process.returncode
    assert code in (0, -signal.SIGTERM), (work / f"{spec.name}.log").read_text()[-2000:]


@pytest.fixture(scope="module")
def embedded(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    work = tmp_path_factory.mktemp("embedded")
    yield from _serve(work, embedded_spec(work, ["sum"], "test"))


@pytest.mark.parametrize("payload", ["sum-16", "sum-1m", "sum-1m-binary"])
def test_the_embedded_app_answers_json_and_the_binary_extension(
    embedded: RunningServer, requests: dict[str, Request], tmp_path: Path, payload: str
) -> None:
    request = requests[payload]
    marker = RestDriver(tmp_path, False, "test").verify(embedded, request, request.expected)
    assert marker.startswith(b'"data"')


def test_a_triton_client_gets_a_binary_answer_from_the_embedded_app(
    embedded: RunningServer, requests: dict[str, Request]
) -> None:
    import tritonclient.http as triton_http

    tensor = requests["sum-1m-binary"].tensor
    assert tensor is not None
    tensor_input = triton_http.InferInput("x", list(tensor.shape), "FP32")
    tensor_input.set_data_from_numpy(tensor, binary_data=True)
    client = triton_http.InferenceServerClient(f"127.0.0.1:{embedded.spec.ports.http}")
    try:
        answer = client.infer("sum", [tensor_input])  # binary input and binary output
    finally:
        client.close()
    total = answer.as_numpy("total")
    assert total is not None and total.shape == (1, 1)
    np.testing.assert_allclose(total.ravel(), requests["sum-1m-binary"].expected, rtol=1e-4)


def test_the_host_services_own_route_answers_beside_inferkit(embedded: RunningServer) -> None:
    assert exchange(embedded.spec.ports.http, "GET", "/service/health") == (200, b"ok")
    assert exchange(embedded.spec.ports.http, "GET", "/v2/health/ready")[0] == 200


@pytest.fixture(scope="module")
def uvicorn_bare(
    tmp_path_factory: pytest.TempPathFactory, requests: dict[str, Request]
) -> Iterator[RunningServer]:
    work = tmp_path_factory.mktemp("uvicorn-bare")
    yield from _serve(work, bare_spec(work, requests, server="uvicorn"))


@pytest.fixture(scope="module")
def uvicorn_v2(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    work = tmp_path_factory.mktemp("uvicorn-v2")
    yield from _serve(work, minimal_v2_spec(server="uvicorn"))


@pytest.mark.parametrize("payload", ["sum-16", "sum-1m-binary"])
def test_the_uvicorn_ceiling_reads_any_body_and_answers_right(
    uvicorn_bare: RunningServer, requests: dict[str, Request], tmp_path: Path, payload: str
) -> None:
    assert uvicorn_bare.spec.name == "uvicorn-bare"
    request = requests[payload]
    RestDriver(tmp_path, False, "test").verify(uvicorn_bare, request, request.expected)


def test_the_minimal_v2_app_under_uvicorn_answers_json_and_refuses_binary(
    uvicorn_v2: RunningServer, requests: dict[str, Request], tmp_path: Path
) -> None:
    assert uvicorn_v2.spec.name == "uvicorn-v2"
    assert "sum-1m-binary" in uvicorn_v2.spec.unsupported
    driver = RestDriver(tmp_path, False, "test")
    driver.verify(uvicorn_v2, requests["sum-16"], requests["sum-16"].expected)
    with pytest.raises(AnswerError, match=r"^HTTP 500"):
        binary = requests["sum-1m-binary"]
        driver.verify(uvicorn_v2, binary, binary.expected)


def test_a_smoke_run_of_the_binary_row_marks_the_json_only_server_not_supported(
    tmp_path: Path,
) -> None:
    command = [sys.executable, str(BENCHMARKS / "run.py"), "--quick", "--warmup=0", "--duration=1"]
    command += ["--servers=uvicorn", "--scenarios=rest-sum1m-bin", "--no-mlserver"]
    command += [f"--results={tmp_path}", "--python-loader"]
    done = subprocess.run(command, capture_output=True, text=True, timeout=600, check=False)
    assert done.returncode == 0, done.stderr[-2000:]
    results = json.loads((tmp_path / "results.json").read_text())
    cells = {cell["server"]: cell for cell in results["cells"]}
    assert sorted(cells) == ["uvicorn-bare", "uvicorn-v2"]
    assert cells["uvicorn-v2"]["skipped"] == "not supported"
    bare = cells["uvicorn-bare"]
    assert bare["errors"] == 0 and bare["runs"][0]["requests"] > 0
    assert "|  | uvicorn-v2 | not supported |" in done.stdout
    assert any(
        note.startswith("uvicorn-v2 does not support sum-1m-binary") for note in results["notes"]
    )
    assert results["mlserver_fallback"] == {"rest-sum1m-bin-c4": "rest-sum1m-c4"}

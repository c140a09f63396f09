"""The load generators against a real bare app on a free loopback port, and a tiny whole run.

These assert counts (requests answered, wrong answers caught), never timings.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from benchlib.lineup import bare_spec
from benchlib.loaders import LoadTarget, run_load
from benchlib.scenarios import PAYLOADS, Request
from benchlib.servers import RunningServer, start_server, stop_server

BENCHMARKS = Path(__file__).resolve().parent.parent
REQUEST = Request(PAYLOADS["sum-16"], b'{"inputs": []}', (17.0,))
LOADERS = [
    pytest.param(False, id="pyload"),
    pytest.param(
        True,
        id="wrk",
        marks=pytest.mark.skipif(shutil.which("wrk") is None, reason="wrk is not installed"),
    ),
]


@pytest.fixture(scope="module")
def bare(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    work = tmp_path_factory.mktemp("bare")
    running = start_server(bare_spec(work, {"sum-16": REQUEST}), work / "log", None, 60)
    yield running
    stop_server(running)


def _target(server: RunningServer, body: Path, marker: bytes, model: str) -> LoadTarget:
    path = f"/v2/models/{model}/infer"
    return LoadTarget("127.0.0.1", server.spec.ports.http, path, body, marker, 2, 1, 10.0)


@pytest.mark.parametrize("use_wrk", LOADERS)
def test_right_answers_count_no_errors(bare: RunningServer, tmp_path: Path, use_wrk: bool) -> None:
    body = tmp_path / "body.json"
    body.write_bytes(REQUEST.body)
    result = run_load(_target(bare, body, b'"data": [17.0]', "sum-16"), tmp_path, None, use_wrk)
    assert result.requests > 0
    assert result.errors == 0


@pytest.mark.parametrize("use_wrk", LOADERS)
@pytest.mark.parametrize(
    ("marker", "model"), [(b'"data": [16.0]', "sum-16"), (b'"data": [17.0]', "unknown")]
)
def test_wrong_answers_and_non_2xx_all_count_as_errors(
    bare: RunningServer, tmp_path: Path, use_wrk: bool, marker: bytes, model: str
) -> None:
    body = tmp_path / "body.json"
    body.write_bytes(REQUEST.body)
    result = run_load(_target(bare, body, marker, model), tmp_path, None, use_wrk)
    assert result.requests > 0
    assert result.bad == result.requests


def test_a_smoke_run_of_the_bare_apps_writes_tables_and_json(tmp_path: Path) -> None:
    command = [sys.executable, str(BENCHMARKS / "run.py"), "--quick", "--warmup=0", "--duration=1"]
    command += ["--servers=starlette", "--scenarios=rest-sum16-c1", "--no-mlserver"]
    command += [f"--results={tmp_path}", "--python-loader"]
    done = subprocess.run(command, capture_output=True, text=True, timeout=600, check=False)
    assert done.returncode == 0, done.stderr[-2000:]
    results = json.loads((tmp_path / "results.json").read_text())
    cells = {cell["server"]: cell for cell in results["cells"]}
    assert sorted(cells) == ["starlette-bare", "starlette-v2"]
    assert all(cell["errors"] == 0 and cell["runs"][0]["requests"] > 0 for cell in cells.values())
    assert "| REST sum [1,16] FP32, c=1 | starlette-bare |" in done.stdout
    assert (tmp_path / "results.md").read_text().startswith("# Benchmark results")

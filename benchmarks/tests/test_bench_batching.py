"""The adaptive batching benchmark: its model, repositories, scenarios, table, and inferkit
serving it (answers only; no timings but the model's own minimum cost)."""

from __future__ import annotations

import asyncio
import importlib
import json
import sys
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from benchlib.drivers import RestDriver
from benchlib.lineup import floor_spec, inferkit_spec
from benchlib.loaders import LoadResult
from benchlib.probe import exchange
from benchlib.report import BATCH_P99_BOUND_MS, batching_table, markdown
from benchlib.repositories import (
    BATCH_MODEL_SOURCE,
    FIXED_COST_S,
    MODEL_SETTINGS,
    PER_ROW_COST_S,
    SOURCE_MODELS,
    write_repository,
)
from benchlib.results import Results, Run, Startup
from benchlib.scenarios import BATCH_PAIRS, PAYLOADS, SCENARIOS, build_requests
from benchlib.servers import RunningServer, measure_floor, start_server, stop_server

from inferkit.compat import MLSERVER_MODULES
from inferkit.settings import ModelSettings
from inferkit.types import InferenceRequest, RequestInput

BATCH_MODELS = ["batch-on", "batch-off"]


# The model ----------------------------------------------------------------------------------


@pytest.fixture
def model_class(monkeypatch: pytest.MonkeyPatch) -> Any:
    """``FixedCostModel`` from the model file, its ``mlserver`` imports served by inferkit's
    compatibility modules (as ``inferkit start`` does when MLServer is not installed)."""
    for alias, target in MLSERVER_MODULES.items():
        monkeypatch.setitem(sys.modules, alias, importlib.import_module(target))
    namespace: dict[str, Any] = {"__name__": "bench_batch_model"}
    exec(compile(BATCH_MODEL_SOURCE, "model.py", "exec"), namespace)
    return namespace["FixedCostModel"]


@pytest.mark.parametrize("rows", [1, 3, 32])
def test_the_model_answers_one_doubled_row_per_row_after_its_busy_time(
    model_class: Any, rows: int
) -> None:
    model = model_class(ModelSettings(name="batch-on"))
    x = np.arange(rows * 4, dtype=np.float32).reshape(rows, 4)
    request = InferenceRequest(
        inputs=[RequestInput(name="x", shape=[rows, 4], datatype="FP32", data=x.ravel().tolist())]
    )
    began = time.perf_counter()
    answer = asyncio.run(model.predict(request))
    elapsed = time.perf_counter() - began
    (output,) = answer.outputs
    assert (answer.model_name, output.name, output.datatype) == ("batch-on", "y", "FP32")
    assert output.shape == [rows, 4]
    np.testing.assert_array_equal(np.asarray(output.data, dtype=np.float32).ravel(), 2 * x.ravel())
    assert elapsed >= FIXED_COST_S + PER_ROW_COST_S * rows


def test_the_model_holds_the_cpu_and_the_event_loop_as_compute_does(model_class: Any) -> None:
    model = model_class(ModelSettings(name="batch-off"))
    request = InferenceRequest(
        inputs=[RequestInput(name="x", shape=[1, 4], datatype="FP32", data=[1.0] * 4)]
    )
    ticks = 0

    async def ticker() -> None:
        nonlocal ticks
        while True:
            await asyncio.sleep(0)
            ticks += 1

    async def main() -> None:
        task = asyncio.create_task(ticker())
        await asyncio.sleep(0)
        before = ticks
        await model.predict(request)  # busy-waits: nothing else runs on the loop meanwhile
        assert ticks == before
        task.cancel()

    cpu = time.process_time()
    asyncio.run(main())
    # CPU time, not wall time: a sleep would not count (a little slack for the clock's grain).
    assert time.process_time() - cpu >= 0.8 * FIXED_COST_S
    assert "sleep(" not in BATCH_MODEL_SOURCE


# Repositories, payloads, scenarios ----------------------------------------------------------


def test_both_servers_get_the_same_model_file_and_only_batch_on_batches(tmp_path: Path) -> None:
    for flavour in ("inferkit", "mlserver"):
        root = write_repository(tmp_path / flavour, flavour, BATCH_MODELS, tmp_path, {})
        for model in BATCH_MODELS:
            assert (root / model / "model.py").read_text() == BATCH_MODEL_SOURCE
            saved = json.loads((root / model / "model-settings.json").read_text())
            assert saved == MODEL_SETTINGS[model]
            assert saved["implementation"] == "model.FixedCostModel"
        on = json.loads((root / "batch-on" / "model-settings.json").read_text())
        off = json.loads((root / "batch-off" / "model-settings.json").read_text())
        assert (on["max_batch_size"], on["max_batch_time"]) == (32, 0.01)
        assert "max_batch_size" not in off and "max_batch_time" not in off
    assert set(BATCH_MODELS) <= set(SOURCE_MODELS)


def test_the_batch_requests_send_one_row_and_expect_it_doubled() -> None:
    requests = build_requests({})
    for key in BATCH_MODELS:
        request = requests[key]
        assert PAYLOADS[key].model == key
        body = json.loads(request.body)["inputs"][0]
        assert (body["shape"], body["datatype"]) == ([1, 4], "FP32")
        assert request.tensor is not None and request.tensor.shape == (1, 4)
        assert request.expected == tuple(2 * value for value in body["data"])
        assert request.expected == (1.0, 2.0, 3.0, 4.0)


def test_the_batching_scenarios_pair_on_and_off_at_the_same_load() -> None:
    by_key = {s.key: s for s in SCENARIOS}
    wanted = {
        "rest-batch-on-c32": ("rest", "batch-on", 32),
        "rest-batch-off-c32": ("rest", "batch-off", 32),
        "rest-batch-on-c1": ("rest", "batch-on", 1),
        "rest-batch-off-c1": ("rest", "batch-off", 1),
        "grpc-batch-on-c32": ("grpc", "batch-on", 32),
        "grpc-batch-off-c32": ("grpc", "batch-off", 32),
    }
    for key, (transport, payload, concurrency) in wanted.items():
        scenario = by_key[key]
        assert (scenario.transport, scenario.payload, scenario.concurrency) == (
            transport,
            payload,
            concurrency,
        )
    assert by_key["rest-batch-on-c32"].label() == "REST 5 ms model [1,4] FP32, batching on, c=32"
    for pair in BATCH_PAIRS:
        keys = [pair.on, pair.off, pair.on_c1, pair.off_c1]
        for key in filter(None, keys):
            assert by_key[key].transport == pair.transport
        assert [by_key[k].payload if k else None for k in keys][:2] == BATCH_MODELS
    assert {p.transport for p in BATCH_PAIRS} == {"rest", "grpc"}


def test_the_floor_loads_the_batch_models_with_numpy_alone(tmp_path: Path) -> None:
    models = ["sum", *BATCH_MODELS]
    floor = floor_spec(sys.executable, tmp_path, models)
    figures = measure_floor(floor, tmp_path / "floor.log", None, 60)
    assert figures.models == models


# The table ----------------------------------------------------------------------------------

MB = 1024 * 1024


def _run(rps: float, p50_ms: float = 1.0, p99_ms: float = 2.0) -> Run:
    return Run(LoadResult(int(rps), 1.0, 0, 0, 0, p50_ms * 1000, p99_ms * 1000), 0.5, MB)


def _results(inferkit_on: float, inferkit_p99: float) -> Results:
    results = Results("python benchmarks/run.py", {}, {"quick": False})
    results.scenario_labels["rest-sum16-c32"] = "REST sum [1,16] FP32, c=32"
    for name, role in [("inferkit", "subject"), ("mlserver-pw0", "baseline")]:
        results.startups[name] = Startup(name, name, role, 1.0, MB, ["batch-on"])
    figures = {
        "inferkit": {
            "rest-batch-on-c32": _run(inferkit_on),
            "rest-batch-off-c32": _run(185),
            "rest-batch-on-c1": _run(150, 5.5, inferkit_p99),
            "rest-batch-off-c1": _run(180, 5.3, 5.8),
            "grpc-batch-on-c32": _run(1000),
            "grpc-batch-off-c32": _run(190),
        },
        "mlserver-pw0": {
            "rest-batch-on-c32": _run(1500),
            "rest-batch-off-c32": _run(180),
            "rest-batch-on-c1": _run(60, 15.6, 16.2),
            "rest-batch-off-c1": _run(170, 5.6, 6.1),
            "grpc-batch-on-c32": _run(1250),
        },
    }
    for server, cells in figures.items():
        for scenario, run in cells.items():
            results.scenario_labels[scenario] = scenario
            results.cell(scenario, server).runs.append(run)
    results.cell("grpc-batch-off-c32", "mlserver-pw0").skipped = "load failed (see notes)"
    return results


def test_the_batching_table_shows_on_off_and_mlserver_ratios_and_c1_latency() -> None:
    lines = batching_table(_results(2400, 14.0), "mlserver-pw0")
    rows = [line for line in lines if line.startswith("| ")]
    assert rows[0].startswith("| Transport | Server | on req/s | off req/s | on / off |")
    assert rows[1] == (
        "| REST | inferkit | 2,400 | 185 | 12.97x | 1.60x | 1.03x | 5.50 | 14.00 | 5.30 | 5.80 |"
    )
    assert rows[2] == (
        "|  | mlserver-pw0 | 1,500 | 180 | 8.33x | 1.00x | 1.00x | 15.60 | 16.20 | 5.60 | 6.10 |"
    )
    # gRPC has no c=1 pair; a skipped cell has no figures.
    assert rows[3] == "| gRPC | inferkit | 1,000 | 190 | 5.26x | 0.80x | - | - | - | - | - |"
    assert rows[4] == "|  | mlserver-pw0 | 1,250 | - | - | 1.00x | - | - | - | - | - |"
    assert "`max_batch_size` 32, `max_batch_time` 10 ms" in lines[1]
    assert "busy-waits 5 ms plus 20 us per row per call" in lines[1]
    assert f"<= {BATCH_P99_BOUND_MS:.2f} ms" in "\n".join(lines)
    assert BATCH_P99_BOUND_MS == pytest.approx(15.02)
    assert lines[-1] == (
        "- inferkit: on / off 12.97x (met), on vs MLServer 1.60x (met), c=1 p99 14.00 ms (met)"
    )


def test_the_batching_targets_say_which_are_not_met() -> None:
    # As before the batcher: about the same with batching on and off, far below MLServer.
    lines = batching_table(_results(185, 16.0), "mlserver-pw0")
    assert lines[-1] == (
        "- inferkit: on / off 1.00x (NOT met), on vs MLServer 0.12x (NOT met),"
        " c=1 p99 16.00 ms (NOT met)"
    )
    without = batching_table(_results(185, 5.0), None)
    assert without[-1] == (
        "- inferkit: on / off 1.00x (NOT met), on vs MLServer - (not measured),"
        " c=1 p99 5.00 ms (met)"
    )
    # Only the subjects' targets are checked (MLServer is the baseline, not under test).
    assert not any(line.startswith("- mlserver") for line in without)


def test_the_batching_table_is_in_the_markdown_only_when_its_scenarios_ran() -> None:
    text = markdown(_results(2400, 14.0), "mlserver-pw0", [])
    assert text.index("| REST | inferkit | 2,400 |") < text.index("| Server | what it is |")
    results = _results(2400, 14.0)
    results.cells = {k: c for k, c in results.cells.items() if "batch" not in k[0]}
    assert batching_table(results, "mlserver-pw0") == []
    assert "Adaptive batching" not in markdown(results, "mlserver-pw0", [])


# inferkit serving the models ----------------------------------------------------------------


@pytest.fixture(scope="module")
def inferkit(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    work = tmp_path_factory.mktemp("inferkit-batch")
    spec = inferkit_spec(work, BATCH_MODELS, "test")
    running = start_server(spec, work / "inferkit.log", None, 60)
    yield running
    stop_server(running)


@pytest.mark.parametrize("model", BATCH_MODELS)
def test_inferkit_serves_the_mlserver_model_file_and_answers_right(
    inferkit: RunningServer, tmp_path: Path, model: str
) -> None:
    assert inferkit.ready_models == BATCH_MODELS and not inferkit.failed
    request = build_requests({})[model]
    marker = RestDriver(tmp_path, False, "test").verify(inferkit, request, request.expected)
    assert marker.startswith(b'"data"')


@pytest.mark.parametrize("model", BATCH_MODELS)
def test_concurrent_requests_each_get_their_own_row_back(
    inferkit: RunningServer, model: str
) -> None:
    # What a batcher must keep right when it merges requests and splits the answer.
    def one(index: int) -> list[float]:
        row = [float(index), index + 0.5, -float(index), 0.25]
        body = {"inputs": [{"name": "x", "shape": [1, 4], "datatype": "FP32", "data": row}]}
        path = f"/v2/models/{model}/infer"
        status, answer = exchange(inferkit.spec.ports.http, "POST", path, json.dumps(body).encode())
        assert status == 200, answer
        (output,) = json.loads(answer)["outputs"]
        assert output["shape"] == [1, 4]
        return [float(value) for value in np.ravel(output["data"])]

    with ThreadPoolExecutor(16) as pool:
        answers = list(pool.map(one, range(16)))
    for index, answer in enumerate(answers):
        assert answer == [2.0 * index, 2 * index + 1.0, -2.0 * index, 0.5]

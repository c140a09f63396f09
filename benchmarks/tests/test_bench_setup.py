"""Payloads, model repositories and /proc figures."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import msgspec
import numpy as np
import pytest
import tritonclient.http as triton_http
from benchlib import procstats
from benchlib.repositories import MODEL_SETTINGS, SUM_MODEL_SOURCE, write_repository
from benchlib.scenarios import (
    LARGE_ELEMENTS,
    PAYLOADS,
    SCENARIOS,
    binary_body,
    build_requests,
)

from inferkit import codecs
from inferkit.transports.binary import decode_binary_request
from inferkit.types import InferenceRequest

DIGITS = {"digits-svc": {"input": [0.0] * 63 + [16.0], "predict": [7]}}


def test_requests_carry_their_expected_answer() -> None:
    requests = build_requests({**DIGITS, "digits-xgb": {"error": "no xgboost"}})
    assert sorted(requests) == [
        "batch-off",
        "batch-on",
        "digits-svc",
        "sum-16",
        "sum-1m",
        "sum-1m-binary",
    ]
    small = json.loads(requests["sum-16"].body)["inputs"][0]
    assert (small["shape"], small["datatype"], requests["sum-16"].expected) == (
        [1, 16],
        "FP32",
        (17.0,),
    )
    large = json.loads(requests["sum-1m"].body)["inputs"][0]
    assert large["shape"] == [1, LARGE_ELEMENTS] and len(large["data"]) == LARGE_ELEMENTS
    total = np.asarray(large["data"], dtype=np.float32).sum()
    assert abs(total - requests["sum-1m"].expected[0]) <= 1e-4 * total
    digits = json.loads(requests["digits-svc"].body)["inputs"][0]
    assert (digits["shape"], requests["digits-svc"].expected) == ([1, 64], (7,))


def test_every_scenario_names_a_known_payload_and_a_unique_key() -> None:
    assert {s.payload for s in SCENARIOS} <= set(PAYLOADS)
    assert len({s.key for s in SCENARIOS}) == len(SCENARIOS)
    keys = {s.key for s in SCENARIOS}
    assert {s.mlserver_fallback for s in SCENARIOS} - {None} <= keys


def test_the_binary_request_is_the_same_tensor_with_the_extensions_headers() -> None:
    requests = build_requests({})
    json_request, binary = requests["sum-1m"], requests["sum-1m-binary"]
    assert (binary.expected, binary.rtol) == (json_request.expected, json_request.rtol)
    assert binary.tensor is json_request.tensor
    length = int(binary.headers["Inference-Header-Content-Length"])
    assert binary.headers["Content-Type"] == "application/octet-stream"
    assert len(binary.body) == length + 4 * LARGE_ELEMENTS
    assert json_request.headers == {"Content-Type": "application/json"}
    scenario = next(s for s in SCENARIOS if s.payload == "sum-1m-binary")
    assert scenario.label() == "REST sum [1,1000000] FP32 binary, c=4"
    assert scenario.mlserver_fallback == "rest-sum1m-c4"


@pytest.mark.parametrize("shape", [(1, 16), (1, LARGE_ELEMENTS), (2, 3)])
def test_the_binary_body_round_trips_through_inferkits_decoder(shape: tuple[int, int]) -> None:
    tensor = np.random.default_rng(1).random(shape, dtype=np.float32)
    body, length = binary_body(tensor)
    decode = msgspec.json.Decoder(InferenceRequest).decode
    request = decode_binary_request(body, length, decode)
    (tensor_input,) = request.inputs
    assert (tensor_input.name, tensor_input.datatype) == ("x", "FP32")
    assert tensor_input.shape == list(shape) and tensor_input.parameters is None
    np.testing.assert_array_equal(codecs.decode_tensor(tensor_input, "$"), tensor)
    assert request.outputs is not None and request.outputs[0].name == "total"
    assert request.outputs[0].parameters == {"binary_data": False}


def test_the_binary_body_is_what_tritonclient_sends() -> None:
    tensor = np.arange(6, dtype=np.float32).reshape(2, 3)
    tensor_input = triton_http.InferInput("x", [2, 3], "FP32")
    tensor_input.set_data_from_numpy(tensor, binary_data=True)
    output = triton_http.InferRequestedOutput("total", binary_data=False)
    body, length = triton_http.InferenceServerClient.generate_request_body(
        [tensor_input], outputs=[output]
    )
    assert binary_body(tensor) == (body, length)


def test_repositories_differ_only_in_the_sum_model_imports(tmp_path: Path) -> None:
    artifacts = tmp_path / "artifacts"
    (artifacts / "digits-svc").mkdir(parents=True)
    (artifacts / "digits-svc" / "model.joblib").write_bytes(b"weights")
    for flavour in ("inferkit", "mlserver"):
        root = write_repository(
            tmp_path / flavour, flavour, ["sum", "digits-svc"], artifacts, {"http_port": 1}
        )
        assert json.loads((root / "settings.json").read_text()) == {"http_port": 1}
        assert (root / "sum" / "model.py").read_text() == SUM_MODEL_SOURCE[flavour]
        for model in ("sum", "digits-svc"):
            saved = json.loads((root / model / "model-settings.json").read_text())
            assert saved == MODEL_SETTINGS[model]
        assert (root / "digits-svc" / "model.joblib").read_bytes() == b"weights"
    inferkit, mlserver = SUM_MODEL_SOURCE["inferkit"], SUM_MODEL_SOURCE["mlserver"]
    body = inferkit.split('    """Sums')[1]
    assert body == mlserver.split('    """Sums')[1]


def test_process_tree_cpu_and_memory_of_a_child() -> None:
    child = subprocess.Popen(
        [sys.executable, "-c", "import sys; print('up', flush=True); sys.stdin.read()"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
    )
    try:
        # Wait until the child has started: while it starts, its RSS grows between two reads.
        assert child.stdout is not None and child.stdout.readline() == b"up\n"
        tree = procstats.process_tree(os.getpid())
        assert tree[0] == os.getpid() and child.pid in tree
        assert procstats.cpu_seconds([os.getpid()]) > 0
        assert procstats.rss([child.pid]) > 1024 * 1024
        assert procstats.start_time(child.pid) is not None
        if procstats.reset_peaks([child.pid]):
            assert procstats.peak_rss([child.pid]) >= procstats.rss([child.pid]) > 0
    finally:
        child.communicate(b"")
    assert procstats.start_time(child.pid) is None
    assert procstats.cpu_seconds([child.pid]) == 0 and procstats.rss([child.pid]) == 0


def test_without_uvicorns_extras_the_uvicorn_servers_are_left_out_with_the_reason(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from benchlib import lineup

    real = lineup.importlib.util.find_spec
    monkeypatch.setattr(
        lineup.importlib.util,
        "find_spec",
        lambda name, *args: None if name == "httptools" else real(name, *args),
    )
    assert lineup.uvicorn_missing() == (
        "httptools not installed: the uvicorn servers are left out"
        " (pip install 'uvicorn[standard]')"
    )
    assert set(lineup.OWN_CEILINGS) == set(lineup.UVICORN_SERVERS) <= set(lineup.SERVER_KEYS)


def _tiny_artefacts(root: Path) -> None:
    """Small models of the digits models' kinds, saved as the harness saves them."""
    joblib = pytest.importorskip("joblib")
    svm = pytest.importorskip("sklearn.svm")
    xgboost = pytest.importorskip("xgboost")
    x = np.arange(40, dtype=np.float32).reshape(10, 4)
    y = np.arange(10) % 2
    (root / "digits-svc").mkdir(parents=True)
    joblib.dump(svm.SVC().fit(x, y), root / "digits-svc" / "model.joblib")
    (root / "digits-xgb").mkdir()
    model = xgboost.XGBClassifier(n_estimators=2, max_depth=2).fit(x, y)
    model.save_model(root / "digits-xgb" / "model.json")


def test_the_floor_loads_the_artefacts_says_ready_and_is_measured_then_killed(
    tmp_path: Path,
) -> None:
    from benchlib.lineup import FLOOR, floor_spec
    from benchlib.servers import measure_floor

    _tiny_artefacts(tmp_path / "artifacts")
    models = ["sum", "digits-svc", "digits-xgb"]
    floor = floor_spec(sys.executable, tmp_path / "artifacts", models)
    assert floor.name == FLOOR and "no server" in floor.label
    figures = measure_floor(floor, tmp_path / "floor.log", None, 60)
    assert figures.models == models
    assert 0 < figures.ready_s < 60
    # numpy, scikit-learn, SciPy, pandas and xgboost are resident: far more than a bare Python.
    assert figures.rss > 50 * 1024 * 1024
    mlserver = floor_spec("python", tmp_path, ["sum"], "1.7.1")
    assert mlserver.name == "floor-mlserver" and "MLServer 1.7.1's venv" in mlserver.label


def test_a_floor_that_cannot_load_an_artefact_fails_with_its_log(tmp_path: Path) -> None:
    from benchlib.lineup import floor_spec
    from benchlib.servers import ServerFailed, measure_floor

    floor = floor_spec(sys.executable, tmp_path, ["digits-svc"])
    with pytest.raises(ServerFailed, match=r"(?s)floor said b''.*model\.joblib"):
        measure_floor(floor, tmp_path / "floor.log", None, 60)

"""The seed "Multi-Model Serving" walkthrough, step by step, on ``examples/multi-model``.

The example folder is copied as it is committed, its trainers build the two artefacts in the
copy, and the real ``inferkit start`` serves it (on free ports instead of 9080-9082).
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from harness import Running, inferkit_start

pytestmark = pytest.mark.e2e

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "multi-model"

#: name -> (version, features per row, the seed's output: name, datatype, shape, parameters).
SEED = {
    "mnist_sklearn": ("v1.0.0", 64, ("predict", "INT64", [1, 1], {"content_type": "np"})),
    "mushroom_xgboost": ("v2.0.0", 126, ("predict", "FP32", [1, 1], {"content_type": "np"})),
}


@pytest.fixture(scope="module")
def example(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A copy of the example with freshly trained artefacts, as ``python trainer/*.py`` does."""
    copy = tmp_path_factory.mktemp("walkthrough") / "multi-model"
    shutil.copytree(EXAMPLE, copy, ignore=shutil.ignore_patterns("model.*", "__pycache__"))
    for script in sorted((copy / "trainer").glob("*.py")):
        subprocess.run(
            [sys.executable, str(script)], cwd=copy, check=True, capture_output=True, timeout=300
        )
    return copy


@pytest.fixture(scope="module")
def running(example: Path) -> Iterator[Running]:
    with inferkit_start(example) as server:
        yield server


@pytest.fixture
def http(running: Running) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=running.url, timeout=30) as client:
        yield client


def index(http: httpx.Client) -> dict[str, dict[str, Any]]:
    response = http.post("/v2/repository/index", json={})
    assert response.status_code == 200
    return {item["name"]: item for item in response.json()}


def infer(http: httpx.Client, name: str) -> httpx.Response:
    version, features, _ = SEED[name]
    row = [0.0] * features
    body = {
        "inputs": [{"name": "predict", "shape": [1, features], "datatype": "FP32", "data": [row]}]
    }
    return http.post(f"/v2/models/{name}/versions/{version}/infer", json=body)


def test_both_models_are_ready_with_their_versions(http: httpx.Client) -> None:
    assert index(http) == {
        "mnist_sklearn": {
            "name": "mnist_sklearn",
            "version": "v1.0.0",
            "state": "READY",
            "reason": "",
        },
        "mushroom_xgboost": {
            "name": "mushroom_xgboost",
            "version": "v2.0.0",
            "state": "READY",
            "reason": "",
        },
    }


@pytest.mark.parametrize("name", sorted(SEED))
def test_versioned_infer_answers_with_the_seed_outputs(http: httpx.Client, name: str) -> None:
    response = infer(http, name)
    assert response.status_code == 200, response.text
    body = response.json()
    assert (body["model_name"], body["model_version"]) == (name, SEED[name][0])
    [output] = body["outputs"]
    assert (output["name"], output["datatype"], output["shape"], output["parameters"]) == (
        SEED[name][2]
    )
    assert len(output["data"]) == 1


@pytest.mark.parametrize("name", sorted(SEED))
def test_the_example_test_script_prints_the_response(
    example: Path, running: Running, name: str
) -> None:
    version = SEED[name][0]
    where = ["--host", "127.0.0.1", "--port", str(running.http_port)]
    result = subprocess.run(
        [sys.executable, "test.py", "--model", name, "--version", version, *where],
        cwd=example,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    body = json.loads(result.stdout)
    assert (body["model_name"], body["model_version"]) == (name, version)
    [output] = body["outputs"]
    assert (output["name"], output["datatype"], output["shape"], output["parameters"]) == (
        SEED[name][2]
    )


def test_unload_then_load_mushroom_xgboost(http: httpx.Client) -> None:
    unloaded = http.post("/v2/repository/models/mushroom_xgboost/unload")
    assert unloaded.status_code == 200
    states = {name: item["state"] for name, item in index(http).items()}
    assert states == {"mnist_sklearn": "READY", "mushroom_xgboost": "UNAVAILABLE"}
    assert index(http)["mushroom_xgboost"]["reason"] == ""

    refused = infer(http, "mushroom_xgboost")
    assert refused.status_code == 400
    assert refused.json()["code"] == "MODEL_NOT_READY"
    assert infer(http, "mnist_sklearn").status_code == 200

    loaded = http.post("/v2/repository/models/mushroom_xgboost/load")
    assert loaded.status_code == 200
    assert {name: item["state"] for name, item in index(http).items()} == {
        "mnist_sklearn": "READY",
        "mushroom_xgboost": "READY",
    }
    assert infer(http, "mushroom_xgboost").status_code == 200

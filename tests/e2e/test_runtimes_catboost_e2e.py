"""The CatBoost runtime behind the real ``inferkit start``, under MLServer's implementation name:
a classifier and a regressor trained in the test, served over REST (httpx) and gRPC
(tritonclient)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from harness import Running, inferkit_start

catboost = pytest.importorskip("catboost")
triton = pytest.importorskip("tritonclient.grpc")

pytestmark = pytest.mark.e2e

RNG = np.random.default_rng(3)
X = RNG.random((30, 4)).astype(np.float32)
OPTIONS: dict[str, Any] = {
    "iterations": 5,
    "depth": 2,
    "verbose": False,
    "allow_writing_files": False,
    "thread_count": 1,
}


@pytest.fixture(scope="module")
def trained() -> dict[str, Any]:
    return {
        "classifier": catboost.CatBoostClassifier(**OPTIONS).fit(X, (X[:, 0] > 0.5).astype(int)),
        "regressor": catboost.CatBoostRegressor(**OPTIONS).fit(X, X[:, 1] * 3.0),
    }


@pytest.fixture(scope="module")
def running(tmp_path_factory: pytest.TempPathFactory, trained: dict[str, Any]) -> Iterator[Running]:
    root = tmp_path_factory.mktemp("catboost-repo")
    (root / "settings.json").write_text("{}")
    for name, model in trained.items():
        folder = root / name
        folder.mkdir()
        model.save_model(str(folder / "model.cbm"))
        settings = {"name": name, "implementation": "mlserver_catboost.CatboostModel"}
        (folder / "model-settings.json").write_text(json.dumps(settings))
    with inferkit_start(Path(root)) as server:
        yield server


def test_rest_classifier_labels_and_probabilities(
    running: Running, trained: dict[str, Any]
) -> None:
    body = {
        "inputs": [{"name": "x", "shape": [5, 4], "datatype": "FP32", "data": X[:5].tolist()}],
        "outputs": [{"name": "predict"}, {"name": "predict_proba"}],
    }
    with httpx.Client(base_url=running.url, timeout=30) as http:
        response = http.post("/v2/models/classifier/infer", json=body)
    assert response.status_code == 200, response.text
    labels, probabilities = response.json()["outputs"]
    assert (labels["datatype"], labels["shape"]) == ("INT64", [5, 1])
    assert labels["data"] == trained["classifier"].predict(X[:5]).tolist()
    assert (probabilities["datatype"], probabilities["shape"]) == ("FP64", [5, 2])
    np.testing.assert_allclose(
        np.asarray(probabilities["data"]).reshape(5, 2), trained["classifier"].predict_proba(X[:5])
    )


def test_rest_predict_proba_on_the_regressor_is_a_400(running: Running) -> None:
    body = {
        "inputs": [{"name": "x", "shape": [1, 4], "datatype": "FP32", "data": X[:1].tolist()}],
        "outputs": [{"name": "predict_proba"}],
    }
    with httpx.Client(base_url=running.url, timeout=30) as http:
        response = http.post("/v2/models/regressor/infer", json=body)
    assert (response.status_code, response.json()["code"]) == (400, "OUTPUT_NOT_FOUND")


def test_grpc_regressor_prediction(running: Running, trained: dict[str, Any]) -> None:
    tensor = triton.InferInput("x", [30, 4], "FP32")
    tensor.set_data_from_numpy(X)
    client = triton.InferenceServerClient(running.grpc)
    try:
        result = client.infer("regressor", [tensor])
    finally:
        client.close()
    predicted = result.as_numpy("predict")
    assert predicted.dtype == np.float64 and predicted.shape == (30, 1)
    np.testing.assert_allclose(predicted.reshape(-1), trained["regressor"].predict(X))

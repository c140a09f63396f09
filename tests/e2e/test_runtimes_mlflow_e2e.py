"""The MLflow runtime behind the real ``inferkit start``, under MLServer's implementation name:
an MLflow scikit-learn model (column signature) and a pyfunc model from code (named tensors),
saved in the test and served over REST (httpx) and gRPC (tritonclient)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from harness import Running, inferkit_start

mlflow = pytest.importorskip("mlflow")
pytest.importorskip("sklearn")
triton = pytest.importorskip("tritonclient.grpc")

pytestmark = [
    pytest.mark.e2e,
    # MLflow's advice at save time (add type hints, an input example): not about inferkit.
    pytest.mark.filterwarnings("ignore::UserWarning:mlflow.*"),
]

RNG = np.random.default_rng(4)
A = RNG.random(20)
B = RNG.random(20)

TENSOR_MODEL = """
import mlflow
from mlflow.pyfunc import PythonModel


class Arithmetic(PythonModel):
    def predict(self, context, model_input, params=None):
        return {"sum": model_input["x"] + model_input["y"]}


mlflow.models.set_model(Arithmetic())
"""


@pytest.fixture(scope="module")
def trained() -> Any:
    import pandas as pd
    from sklearn.linear_model import LogisticRegression

    return LogisticRegression().fit(pd.DataFrame({"a": A, "b": B}), (A > B).astype(np.int64))


def save_models(root: Path, trained: Any) -> None:
    import mlflow.pyfunc
    import mlflow.sklearn
    import pandas as pd
    from mlflow.models import infer_signature
    from mlflow.models.signature import ModelSignature
    from mlflow.types.schema import Schema, TensorSpec

    frame = pd.DataFrame({"a": A, "b": B})
    spec = TensorSpec(np.dtype(np.float64), (-1, 3), "x")
    mlflow.sklearn.save_model(
        trained,
        str(root / "classifier" / "model"),
        signature=infer_signature(frame, trained.predict(frame)),
        pip_requirements=[],
        serialization_format="cloudpickle",
    )
    (root / "code.py").write_text(TENSOR_MODEL)
    mlflow.pyfunc.save_model(
        str(root / "arithmetic" / "model"),
        python_model=str(root / "code.py"),
        signature=ModelSignature(
            inputs=Schema([spec, TensorSpec(np.dtype(np.float64), (-1, 3), "y")]),
            outputs=Schema([TensorSpec(np.dtype(np.float64), (-1, 3), "sum")]),
        ),
        pip_requirements=[],
    )
    for name in ("classifier", "arithmetic"):
        settings = {
            "name": name,
            "implementation": "mlserver_mlflow.MLflowRuntime",
            "parameters": {"uri": "./model"},
        }
        (root / name / "model-settings.json").write_text(json.dumps(settings))


@pytest.fixture(scope="module")
def running(tmp_path_factory: pytest.TempPathFactory, trained: Any) -> Iterator[Running]:
    root = tmp_path_factory.mktemp("mlflow-repo")
    (root / "settings.json").write_text("{}")
    save_models(root, trained)
    with inferkit_start(root) as server:
        yield server


@pytest.fixture
def http(running: Running) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=running.url, timeout=30) as client:
        yield client


def test_rest_metadata_is_the_signature(http: httpx.Client) -> None:
    metadata = http.get("/v2/models/classifier").json()
    assert [(t["name"], t["datatype"], t["shape"]) for t in metadata["inputs"]] == [
        ("a", "FP64", [-1, 1]),
        ("b", "FP64", [-1, 1]),
    ]
    assert metadata["parameters"] == {"content_type": "pd"}


def test_rest_columns_become_a_dataframe(http: httpx.Client, trained: Any) -> None:
    body = {
        "inputs": [
            {"name": "a", "shape": [20, 1], "datatype": "FP64", "data": A.tolist()},
            {"name": "b", "shape": [20, 1], "datatype": "FP64", "data": B.tolist()},
        ]
    }
    response = http.post("/v2/models/classifier/infer", json=body)
    assert response.status_code == 200, response.text
    [output] = response.json()["outputs"]
    assert (output["name"], output["datatype"], output["shape"]) == ("output-1", "INT64", [20, 1])
    import pandas as pd

    assert output["data"] == trained.predict(pd.DataFrame({"a": A, "b": B})).tolist()


def test_rest_input_the_signature_refuses_is_a_400(http: httpx.Client) -> None:
    body = {"inputs": [{"name": "x", "shape": [1, 3], "datatype": "FP64", "data": [1, 2, 3]}]}
    response = http.post("/v2/models/arithmetic/infer", json=body)
    assert (response.status_code, response.json()["code"]) == (400, "INVALID_REQUEST")
    assert response.json()["error"].startswith("The model refused the input: ")


def test_grpc_named_tensors(running: Running) -> None:
    x = np.arange(6, dtype=np.float64).reshape(2, 3)
    y = np.ones((2, 3), dtype=np.float64)
    tensors = []
    for name, array in (("x", x), ("y", y)):
        tensor = triton.InferInput(name, [2, 3], "FP64")
        tensor.set_data_from_numpy(array)
        tensors.append(tensor)
    client = triton.InferenceServerClient(running.grpc)
    try:
        result = client.infer("arithmetic", tensors)
        metadata = client.get_model_metadata("arithmetic")
    finally:
        client.close()
    assert result.as_numpy("sum").tolist() == (x + y).tolist()
    assert [(t.name, t.datatype, list(t.shape)) for t in metadata.outputs] == [
        ("sum", "FP64", [-1, 3])
    ]

"""The ONNX runtime behind the real ``inferkit start``: graphs built in the test, served over
REST (httpx) and gRPC (tritonclient), with the metadata read from the graph."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from harness import Running, inferkit_start

onnx = pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")
triton = pytest.importorskip("tritonclient.grpc")

pytestmark = pytest.mark.e2e

W = np.array([[1.0, -1.0], [2.0, 0.5], [-3.0, 1.0]], dtype=np.float32)
X = np.array([[0.1, 0.2, 0.3], [1.0, 0.0, -1.0], [0.0, 0.0, 1.0]], dtype=np.float32)


def graph_model(graph: Any) -> Any:
    model = onnx.helper.make_model(graph, opset_imports=[onnx.helper.make_opsetid("", 13)])
    model.ir_version = 8
    return model


def linear() -> Any:
    """y = x @ W (FP32 [N, 2]) and label = argmax(y) (INT64 [N])."""
    h, tp = onnx.helper, onnx.TensorProto
    return graph_model(
        h.make_graph(
            [
                h.make_node("MatMul", ["x", "w"], ["y"]),
                h.make_node("ArgMax", ["y"], ["label"], axis=1, keepdims=0),
            ],
            "linear",
            [h.make_tensor_value_info("x", tp.FLOAT, ["N", 3])],
            [
                h.make_tensor_value_info("y", tp.FLOAT, ["N", 2]),
                h.make_tensor_value_info("label", tp.INT64, ["N"]),
            ],
            initializer=[onnx.numpy_helper.from_array(W, "w")],
        )
    )


def words() -> Any:
    """out = text, a string tensor."""
    h, tp = onnx.helper, onnx.TensorProto
    return graph_model(
        h.make_graph(
            [h.make_node("Identity", ["text"], ["out"])],
            "words",
            [h.make_tensor_value_info("text", tp.STRING, [None])],
            [h.make_tensor_value_info("out", tp.STRING, [None])],
        )
    )


@pytest.fixture(scope="module")
def running(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Running]:
    root = tmp_path_factory.mktemp("onnx-repo")
    (root / "settings.json").write_text("{}")
    for name, model, extra in [
        ("linear", linear(), {"intra_op_num_threads": 1}),
        ("words", words(), {}),
    ]:
        folder = root / name
        folder.mkdir()
        onnx.save(model, str(folder / "model.onnx"))
        settings = {
            "name": name,
            "implementation": "inferkit.runtimes.onnx.OnnxModel",
            "parameters": {"version": "v1", "extra": extra},
        }
        (folder / "model-settings.json").write_text(json.dumps(settings))
    with inferkit_start(Path(root)) as server:
        yield server


@pytest.fixture
def http(running: Running) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=running.url, timeout=30) as client:
        yield client


@pytest.fixture
def grpc_client(running: Running) -> Iterator[Any]:
    client = triton.InferenceServerClient(running.grpc)
    yield client
    client.close()


def test_rest_metadata_is_the_graphs(http: httpx.Client) -> None:
    metadata = http.get("/v2/models/linear").json()
    assert metadata["inputs"] == [{"name": "x", "datatype": "FP32", "shape": [-1, 3]}]
    assert metadata["outputs"] == [
        {"name": "y", "datatype": "FP32", "shape": [-1, 2]},
        {"name": "label", "datatype": "INT64", "shape": [-1]},
    ]


def test_rest_infer_answers_every_graph_output(http: httpx.Client) -> None:
    body = {"inputs": [{"name": "x", "shape": [3, 3], "datatype": "FP32", "data": X.tolist()}]}
    response = http.post("/v2/models/linear/infer", json=body)
    assert response.status_code == 200, response.text
    y, label = response.json()["outputs"]
    assert (y["name"], y["datatype"], y["shape"]) == ("y", "FP32", [3, 2])
    np.testing.assert_allclose(np.asarray(y["data"]).reshape(3, 2), X @ W, rtol=1e-6)
    assert (label["name"], label["datatype"], label["shape"]) == ("label", "INT64", [3])
    assert label["data"] == (X @ W).argmax(axis=1).tolist()


def test_rest_a_missing_input_is_a_400(http: httpx.Client) -> None:
    body = {"inputs": [{"name": "z", "shape": [1], "datatype": "FP32", "data": [1.0]}]}
    response = http.post("/v2/models/linear/infer", json=body)
    assert (response.status_code, response.json()["code"]) == (400, "INVALID_REQUEST")
    assert response.json()["error"] == (
        "The graph's inputs are 'x' ('z' was sent) - at `$.inputs[0].name`"
    )


def test_grpc_infer_with_fp64_data_and_one_requested_output(grpc_client: Any) -> None:
    tensor = triton.InferInput("x", [3, 3], "FP64")
    tensor.set_data_from_numpy(X.astype(np.float64))
    result = grpc_client.infer(
        "linear", [tensor], model_version="v1", outputs=[triton.InferRequestedOutput("label")]
    )
    assert [output.name for output in result.get_response().outputs] == ["label"]
    label = result.as_numpy("label")
    assert label.dtype == np.int64
    assert label.tolist() == (X @ W).argmax(axis=1).tolist()


def test_grpc_metadata_is_the_graphs(grpc_client: Any) -> None:
    metadata = grpc_client.get_model_metadata("linear")
    assert [(t.name, t.datatype, list(t.shape)) for t in metadata.outputs] == [
        ("y", "FP32", [-1, 2]),
        ("label", "INT64", [-1]),
    ]


def test_string_tensors_over_rest_and_grpc(http: httpx.Client, grpc_client: Any) -> None:
    body = {"inputs": [{"name": "text", "shape": [2], "datatype": "BYTES", "data": ["a", "bé"]}]}
    response = http.post("/v2/models/words/infer", json=body)
    assert response.status_code == 200, response.text
    [out] = response.json()["outputs"]
    assert (out["datatype"], out["shape"], out["data"]) == ("BYTES", [2], ["a", "bé"])

    tensor = triton.InferInput("text", [2], "BYTES")
    tensor.set_data_from_numpy(np.array([b"a", "bé".encode()], dtype=object))
    result = grpc_client.infer("words", [tensor])
    assert result.as_numpy("out").tolist() == [b"a", "bé".encode()]

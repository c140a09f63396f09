"""The ONNX runtime on tiny graphs built in the test with onnx.helper (skipped without them)."""

from __future__ import annotations

import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from inferkit import (
    InferenceRequest,
    MetadataTensor,
    ModelParameters,
    ModelSettings,
    RequestInput,
    RequestOutput,
    Server,
    Settings,
    errors,
)
from inferkit.runtimes.onnx import OnnxModel

W = np.array([[1.0, -1.0], [2.0, 0.5], [-3.0, 1.0]], dtype=np.float32)
X = np.array([[0.1, 0.2, 0.3], [1.0, 0.0, -1.0]], dtype=np.float32)
OFFSET = np.array([0.5], dtype=np.float32)

# The load error's text, which clients get only with expose_load_errors (the default hides it).
EXPOSED = Settings(expose_load_errors=True)


def save(model: Any, folder: Path, filename: str = "model.onnx") -> Path:
    onnx = pytest.importorskip("onnx")
    path = folder / filename
    onnx.save(model, str(path))
    return path


def linear() -> Any:
    """y = x @ W + offset (FP32 [N, 2]) and label = argmax(y) (INT64 [N])."""
    onnx = pytest.importorskip("onnx")
    pytest.importorskip("onnxruntime")
    h, tp = onnx.helper, onnx.TensorProto
    graph = h.make_graph(
        [
            h.make_node("MatMul", ["x", "w"], ["xw"]),
            h.make_node("Add", ["xw", "offset"], ["y"]),
            h.make_node("ArgMax", ["y"], ["label"], axis=1, keepdims=0),
        ],
        "linear",
        [
            h.make_tensor_value_info("x", tp.FLOAT, ["N", 3]),
            h.make_tensor_value_info("offset", tp.FLOAT, [1]),
        ],
        [
            h.make_tensor_value_info("y", tp.FLOAT, ["N", 2]),
            h.make_tensor_value_info("label", tp.INT64, ["N"]),
        ],
        initializer=[onnx.numpy_helper.from_array(W, "w")],
    )
    return _model(graph)


def identity(elem_type: int, name: str = "t") -> Any:
    """out = t, for one element type, shape [N]."""
    onnx = pytest.importorskip("onnx")
    pytest.importorskip("onnxruntime")
    h = onnx.helper
    graph = h.make_graph(
        [h.make_node("Identity", [name], ["out"])],
        "identity",
        [h.make_tensor_value_info(name, elem_type, [None])],
        [h.make_tensor_value_info("out", elem_type, [None])],
    )
    return _model(graph)


def _model(graph: Any) -> Any:
    onnx = pytest.importorskip("onnx")
    model = onnx.helper.make_model(graph, opset_imports=[onnx.helper.make_opsetid("", 13)])
    model.ir_version = 8  # what every onnxruntime >= 1.17 reads
    onnx.checker.check_model(model)
    return model


def tensor(name: str, values: Any, datatype: str) -> RequestInput:
    """A JSON tensor; a flat list is sent as it is (numpy would make 2**64 - 1 a float)."""
    if isinstance(values, list):
        return RequestInput(name=name, shape=[len(values)], datatype=datatype, data=values)
    array = np.asarray(values)
    return RequestInput(name=name, shape=list(array.shape), datatype=datatype, data=array.tolist())


def request(*inputs: RequestInput, outputs: tuple[str, ...] = ()) -> InferenceRequest:
    return InferenceRequest(
        inputs=list(inputs) or [tensor("x", X, "FP32"), tensor("offset", OFFSET, "FP32")],
        outputs=[RequestOutput(name=name) for name in outputs] or None,
    )


def settings(uri: str | Path, **extra: Any) -> ModelSettings:
    return ModelSettings(
        name="graph",
        implementation="inferkit.runtimes.onnx.OnnxModel",
        parameters=ModelParameters(uri=str(uri), extra=extra),
    )


@asynccontextmanager
async def serving(uri: str | Path, **extra: Any) -> AsyncIterator[OnnxModel]:
    model = OnnxModel(settings(uri, **extra))
    await model.load()
    try:
        yield model
    finally:
        await model.unload()


async def test_every_graph_output_with_its_own_datatype_and_shape(tmp_path: Path) -> None:
    save(linear(), tmp_path)
    async with serving(tmp_path) as model:
        response = await model.predict(request())
    y, label = response.outputs
    assert (y.name, y.datatype, y.shape) == ("y", "FP32", [2, 2])
    assert (label.name, label.datatype, label.shape) == ("label", "INT64", [2])
    expected = X @ W + OFFSET
    np.testing.assert_allclose(np.asarray(y.data).reshape(2, 2), expected, rtol=1e-6)
    assert np.asarray(label.data).tolist() == expected.argmax(axis=1).tolist()


async def test_the_request_picks_outputs_and_sends_inputs_in_any_order(tmp_path: Path) -> None:
    async with serving(save(linear(), tmp_path)) as model:
        response = await model.predict(
            request(tensor("offset", OFFSET, "FP32"), tensor("x", X, "FP32"), outputs=("label",))
        )
    assert [output.name for output in response.outputs] == ["label"]


async def test_metadata_is_the_graphs_with_variable_dimensions_as_minus_one(
    tmp_path: Path,
) -> None:
    async with serving(save(linear(), tmp_path)) as model:
        metadata = model.metadata()
    assert metadata.inputs == [
        MetadataTensor(name="x", datatype="FP32", shape=[-1, 3]),
        MetadataTensor(name="offset", datatype="FP32", shape=[1]),
    ]
    assert metadata.outputs == [
        MetadataTensor(name="y", datatype="FP32", shape=[-1, 2]),
        MetadataTensor(name="label", datatype="INT64", shape=[-1]),
    ]


async def test_declared_metadata_wins_over_the_graphs(tmp_path: Path) -> None:
    declared = [MetadataTensor(name="x", datatype="FP32", shape=[1, 3])]
    model = OnnxModel(settings(save(linear(), tmp_path)))
    model.settings.inputs = declared
    await model.load()
    try:
        metadata = model.metadata()
    finally:
        await model.unload()
    assert metadata.inputs == declared
    assert metadata.outputs is not None and len(metadata.outputs) == 2


async def test_data_of_the_same_kind_is_cast_to_the_graphs_type(tmp_path: Path) -> None:
    async with serving(save(linear(), tmp_path)) as model:
        response = await model.predict(
            request(tensor("x", X.astype(np.float64), "FP64"), tensor("offset", [1], "INT32"))
        )
    np.testing.assert_allclose(
        np.asarray(response.outputs[0].data).reshape(2, 2), X @ W + 1, rtol=1e-6
    )


async def test_data_of_another_kind_is_invalid(tmp_path: Path) -> None:
    async with serving(save(identity(2), tmp_path)) as model:  # 2: UINT8
        with pytest.raises(errors.InvalidRequest) as caught:
            await model.predict(request(tensor("t", [1.5], "FP32")))
    assert caught.value.message == (
        "Input 't' is UINT8 in the graph; FP32 does not convert to it - at `$.inputs[0].datatype`"
    )


@pytest.mark.parametrize(
    ("elem_type", "datatype", "values"),
    [
        (9, "BOOL", [True, False]),
        (2, "UINT8", [0, 255]),
        (4, "UINT16", [0, 65535]),
        (12, "UINT32", [0, 2**32 - 1]),
        (13, "UINT64", [0, 2**64 - 1]),
        (3, "INT8", [-128, 127]),
        (5, "INT16", [-1, 2]),
        (6, "INT32", [-(2**31), 7]),
        (7, "INT64", [-(2**63), 2**63 - 1]),
        (10, "FP16", [0.5, -2.0]),
        (1, "FP32", [0.25, -1.5]),
        (11, "FP64", [1e300, -1e-300]),
    ],
)
async def test_every_numeric_datatype_round_trips(
    tmp_path: Path, elem_type: int, datatype: str, values: list[Any]
) -> None:
    async with serving(save(identity(elem_type), tmp_path)) as model:
        assert model.metadata().inputs == [MetadataTensor(name="t", datatype=datatype, shape=[-1])]
        response = await model.predict(request(tensor("t", values, datatype)))
    [output] = response.outputs
    assert (output.datatype, output.shape) == (datatype, [2])
    assert np.asarray(output.data).tolist() == values


async def test_string_tensors_are_bytes(tmp_path: Path) -> None:
    async with serving(save(identity(8), tmp_path)) as model:  # 8: STRING
        assert model.metadata().inputs == [MetadataTensor(name="t", datatype="BYTES", shape=[-1])]
        response = await model.predict(request(tensor("t", ["héllo", "w"], "BYTES")))
    [output] = response.outputs
    assert (output.datatype, output.shape) == ("BYTES", [2])
    assert [str(element) for element in np.asarray(output.data).tolist()] == ["héllo", "w"]


@pytest.mark.parametrize(
    ("inputs", "error", "message"),
    [
        (
            [tensor("z", X, "FP32")],
            errors.InvalidRequest,
            "The graph's inputs are 'x' and 'offset' ('z' was sent) - at `$.inputs[0].name`",
        ),
        (
            [tensor("x", X, "FP32")],
            errors.InvalidRequest,
            "Missing graph input 'offset' - at `$.inputs`",
        ),
        (
            [tensor("x", X[:, :2], "FP32"), tensor("offset", OFFSET, "FP32")],
            errors.InvalidShape,
            "Expected shape [-1, 3] for input 'x', got [2, 2] - at `$.inputs[0].shape`",
        ),
    ],
)
async def test_inputs_that_do_not_fit_the_graph(
    tmp_path: Path, inputs: list[RequestInput], error: type[errors.InferkitError], message: str
) -> None:
    async with serving(save(linear(), tmp_path)) as model:
        with pytest.raises(error) as caught:
            await model.predict(request(*inputs))
    assert caught.value.message == message


async def test_an_output_the_graph_lacks_is_output_not_found(tmp_path: Path) -> None:
    async with serving(save(linear(), tmp_path)) as model:
        with pytest.raises(errors.OutputNotFound) as caught:
            await model.predict(request(outputs=("predict",)))
    assert caught.value.message == (
        "The graph's outputs are 'y' and 'label' ('predict' was requested) - at `$.outputs[0].name`"
    )


async def test_threads_come_from_parameters_extra(tmp_path: Path) -> None:
    path = save(linear(), tmp_path)
    async with serving(path, intra_op_num_threads=1, inter_op_num_threads=2) as model:
        options = model.estimator.get_session_options()
        response = await model.predict(request())
    assert (options.intra_op_num_threads, options.inter_op_num_threads) == (1, 2)
    assert len(response.outputs) == 2


async def test_a_bad_thread_count_fails_the_load(tmp_path: Path) -> None:
    model = OnnxModel(settings(save(linear(), tmp_path), intra_op_num_threads="two"))
    with pytest.raises(errors.ModelLoadError) as caught:
        await model.load()
    assert caught.value.message == (
        "parameters.extra.intra_op_num_threads must be an integer >= 0 (0: ONNX Runtime's"
        " default), got 'two'"
    )


async def test_a_type_v2_cannot_carry_fails_the_load(tmp_path: Path) -> None:
    model = OnnxModel(settings(save(identity(16), tmp_path)))  # 16: BFLOAT16
    with pytest.raises(errors.ModelLoadError) as caught:
        await model.load()
    assert caught.value.message.startswith(
        "The graph's input 't' is a tensor(bfloat16), which the V2 protocol cannot carry"
    )


async def test_a_file_that_is_not_a_graph_fails_the_load(tmp_path: Path) -> None:
    pytest.importorskip("onnxruntime")
    (tmp_path / "model.onnx").write_bytes(b"not a graph")
    with pytest.raises(errors.ModelLoadError) as caught:
        await OnnxModel(settings(tmp_path)).load()
    assert caught.value.message.startswith(
        f"Cannot load ONNX Runtime model from {tmp_path / 'model.onnx'}: "
    )


async def test_missing_onnxruntime_fails_the_model_with_the_extra_to_install(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Runs with or without onnxruntime installed: the library is hidden either way.
    (tmp_path / "model.onnx").write_bytes(b"graph")
    monkeypatch.setitem(sys.modules, "onnxruntime", None)
    server = Server([settings(tmp_path)], settings=EXPOSED)
    async with server:
        [item] = await server.index()
    assert item.state == "FAILED"
    assert item.reason == (
        "ONNX Runtime is not installed (no module named 'onnxruntime'):"
        " pip install 'inferkit[onnx]'"
    )

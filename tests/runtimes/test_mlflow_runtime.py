"""The MLflow runtime on models saved in the test: a scikit-learn model with a column signature
and a pyfunc model (from code) with named tensors (skipped without mlflow)."""

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
    Server,
    Settings,
    errors,
)
from inferkit.runtimes.mlflow import MLflowRuntime

# MLflow's advice at save and load (add type hints, an input example): not about inferkit.
pytestmark = pytest.mark.filterwarnings("ignore::UserWarning:mlflow.*")

RNG = np.random.default_rng(2)
A = RNG.random(30)
B = RNG.random(30)
# The load error's text, which clients get only with expose_load_errors (the default hides it).
EXPOSED = Settings(expose_load_errors=True)

TENSOR_MODEL = """
import mlflow
from mlflow.pyfunc import PythonModel


class Arithmetic(PythonModel):
    def predict(self, context, model_input, params=None):
        x, y = model_input["x"], model_input["y"]
        return {"sum": x + y, "double": x * 2}


mlflow.models.set_model(Arithmetic())
"""

TEXT_MODEL = """
import mlflow
import pandas as pd
from mlflow.pyfunc import PythonModel


class Shout(PythonModel):
    def predict(self, context, model_input, params=None):
        return pd.DataFrame(
            {"loud": model_input["word"].str.upper(), "length": model_input["word"].str.len()}
        )


mlflow.models.set_model(Shout())
"""


def sklearn_model(folder: Path) -> tuple[Path, Any]:
    """A logistic regression on columns a, b, saved with MLflow's sklearn flavour."""
    pytest.importorskip("mlflow")
    pytest.importorskip("sklearn")
    import mlflow.sklearn
    import pandas as pd
    from mlflow.models import infer_signature
    from sklearn.linear_model import LogisticRegression

    frame = pd.DataFrame({"a": A, "b": B})
    trained = LogisticRegression().fit(frame, (A + B > 1).astype(np.int64))
    path = folder / "sk"
    mlflow.sklearn.save_model(
        trained,
        str(path),
        signature=infer_signature(frame, trained.predict(frame)),
        pip_requirements=[],
        serialization_format="cloudpickle",
    )
    return path, trained


def code_model(folder: Path, code: str, signature: Any) -> Path:
    """A pyfunc model from code (MLflow's "models from code": nothing pickled)."""
    pytest.importorskip("mlflow")
    import mlflow.pyfunc

    source = folder / "model_code.py"
    source.write_text(code)
    path = folder / "pyfunc"
    mlflow.pyfunc.save_model(
        str(path), python_model=str(source), signature=signature, pip_requirements=[]
    )
    return path


def tensor_model(folder: Path) -> Path:
    pytest.importorskip("mlflow")
    from mlflow.models.signature import ModelSignature
    from mlflow.types.schema import Schema, TensorSpec

    def spec(name: str) -> Any:
        return TensorSpec(np.dtype(np.float32), (-1, 2), name)

    signature = ModelSignature(
        inputs=Schema([spec("x"), spec("y")]), outputs=Schema([spec("sum"), spec("double")])
    )
    return code_model(folder, TENSOR_MODEL, signature)


def text_model(folder: Path) -> Path:
    pytest.importorskip("mlflow")
    from mlflow.models.signature import ModelSignature
    from mlflow.types.schema import ColSpec, Schema

    signature = ModelSignature(
        inputs=Schema([ColSpec("string", "word")]),
        outputs=Schema([ColSpec("string", "loud"), ColSpec("long", "length")]),
    )
    return code_model(folder, TEXT_MODEL, signature)


def column(name: str, values: Any, datatype: str) -> RequestInput:
    values = list(values)
    return RequestInput(name=name, shape=[len(values), 1], datatype=datatype, data=values)


def settings(uri: str | Path) -> ModelSettings:
    return ModelSettings(
        name="flow",
        implementation="mlserver_mlflow.MLflowRuntime",
        parameters=ModelParameters(uri=str(uri)),
    )


@asynccontextmanager
async def serving(uri: str | Path) -> AsyncIterator[MLflowRuntime]:
    model = MLflowRuntime(settings(uri))
    await model.load()
    try:
        yield model
    finally:
        await model.unload()


async def test_a_column_signature_is_the_metadata_and_decodes_a_dataframe(
    tmp_path: Path,
) -> None:
    path, trained = sklearn_model(tmp_path)
    async with serving(path) as model:
        metadata = model.metadata()
        response = await model.predict(
            InferenceRequest(inputs=[column("a", A, "FP64"), column("b", B, "FP64")])
        )
    assert metadata.inputs == [
        MetadataTensor(name="a", datatype="FP64", shape=[-1, 1], parameters={"content_type": "np"}),
        MetadataTensor(name="b", datatype="FP64", shape=[-1, 1], parameters={"content_type": "np"}),
    ]
    assert metadata.outputs == [
        MetadataTensor(
            name="output-1", datatype="INT64", shape=[-1], parameters={"content_type": "np"}
        )
    ]
    assert metadata.parameters == {"content_type": "pd"}
    [output] = response.outputs
    assert (output.name, output.datatype, output.shape) == ("output-1", "INT64", [30, 1])
    import pandas as pd

    expected = trained.predict(pd.DataFrame({"a": A, "b": B}))
    assert np.asarray(output.data).reshape(-1).tolist() == expected.tolist()


async def test_the_uri_may_name_the_mlmodel_file(tmp_path: Path) -> None:
    path, _ = sklearn_model(tmp_path)
    async with serving(path / "MLmodel") as model:
        response = await model.predict(
            InferenceRequest(inputs=[column("a", A[:2], "FP64"), column("b", B[:2], "FP64")])
        )
    assert response.outputs[0].shape == [2, 1]


async def test_named_tensors_decode_into_a_dict_and_a_dict_answers_per_key(
    tmp_path: Path,
) -> None:
    x = np.array([[1.0, 2.0], [3.0, 4.0]], dtype=np.float32)
    y = np.array([[0.5, 0.5], [1.0, -1.0]], dtype=np.float32)
    async with serving(tensor_model(tmp_path)) as model:
        metadata = model.metadata()
        response = await model.predict(
            InferenceRequest(
                inputs=[
                    RequestInput(name="x", shape=[2, 2], datatype="FP32", data=x.tolist()),
                    RequestInput(name="y", shape=[2, 2], datatype="FP32", data=y.tolist()),
                ]
            )
        )
    assert metadata.parameters == {"content_type": "dict"}
    assert [(t.name, t.datatype, t.shape) for t in metadata.inputs or []] == [
        ("x", "FP32", [-1, 2]),
        ("y", "FP32", [-1, 2]),
    ]
    total, double = response.outputs
    assert (total.name, total.datatype, total.shape) == ("sum", "FP32", [2, 2])
    assert np.asarray(total.data).tolist() == (x + y).tolist()
    assert (double.name, np.asarray(double.data).tolist()) == ("double", (x * 2).tolist())


async def test_string_columns_are_decoded_as_text_and_a_dataframe_answers_per_column(
    tmp_path: Path,
) -> None:
    async with serving(text_model(tmp_path)) as model:
        metadata = model.metadata()
        response = await model.predict(
            InferenceRequest(inputs=[column("word", ["hi", "there"], "BYTES")])
        )
    assert metadata.inputs == [
        MetadataTensor(
            name="word", datatype="BYTES", shape=[-1, 1], parameters={"content_type": "str"}
        )
    ]
    loud, length = response.outputs
    assert (loud.name, loud.datatype) == ("loud", "BYTES")
    assert [
        element.decode() if isinstance(element, bytes) else element
        for element in np.asarray(loud.data).reshape(-1).tolist()
    ] == ["HI", "THERE"]
    assert (length.name, np.asarray(length.data).reshape(-1).tolist()) == ("length", [2, 5])


async def test_input_the_signature_refuses_is_invalid_request(tmp_path: Path) -> None:
    async with serving(tensor_model(tmp_path)) as model:
        with pytest.raises(errors.InvalidRequest) as caught:
            await model.predict(
                InferenceRequest(
                    inputs=[RequestInput(name="x", shape=[1, 2], datatype="FP32", data=[1, 2])]
                )
            )
    assert caught.value.message.startswith("The model refused the input: ")
    assert len(caught.value.message) < 600


async def test_a_folder_without_mlmodel_fails_the_load(tmp_path: Path) -> None:
    pytest.importorskip("mlflow")
    with pytest.raises(errors.ModelLoadError) as caught:
        await MLflowRuntime(settings(tmp_path)).load()
    assert caught.value.message == f"No model artefact in {tmp_path}: expected 'MLmodel'"


async def test_missing_mlflow_fails_the_model_with_the_extra_to_install(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Runs with or without mlflow installed: the library is hidden either way.
    (tmp_path / "MLmodel").write_text("flavors: {}\n")
    monkeypatch.setitem(sys.modules, "mlflow", None)
    server = Server([settings(tmp_path)], settings=EXPOSED)
    async with server:
        [item] = await server.index()
    assert item.state == "FAILED"
    assert item.reason == (
        "MLflow is not installed (no module named 'mlflow'): pip install 'inferkit[mlflow]'"
    )

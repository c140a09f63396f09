"""The CatBoost runtime on tiny classifiers and regressors trained in the test."""

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
    ModelParameters,
    ModelSettings,
    RequestInput,
    RequestOutput,
    Server,
    Settings,
    errors,
)
from inferkit.runtimes.catboost import CatBoostModel

RNG = np.random.default_rng(5)
X = RNG.random((40, 3)).astype(np.float32)
LABELS = (X[:, 0] > 0.5).astype(np.int64)
TARGETS = X @ np.array([1.0, 2.0, -1.0], dtype=np.float32)
#: Small and quiet: no catboost_info folder written into the working directory.
OPTIONS: dict[str, Any] = {
    "iterations": 5,
    "depth": 2,
    "verbose": False,
    "allow_writing_files": False,
    "thread_count": 1,
}

# The load error's text, which clients get only with expose_load_errors (the default hides it).
EXPOSED = Settings(expose_load_errors=True)


def classifier(classes: int = 2) -> Any:
    catboost = pytest.importorskip("catboost")
    labels = LABELS if classes == 2 else np.floor(X[:, 1] * classes).astype(np.int64)
    return catboost.CatBoostClassifier(**OPTIONS).fit(X, labels)


def regressor() -> Any:
    catboost = pytest.importorskip("catboost")
    return catboost.CatBoostRegressor(**OPTIONS).fit(X, TARGETS)


def save(model: Any, folder: Path, filename: str = "model.cbm") -> Path:
    path = folder / filename
    model.save_model(str(path))
    return path


def request(x: Any = X, *outputs: str) -> InferenceRequest:
    x = np.asarray(x)
    return InferenceRequest(
        inputs=[RequestInput(name="x", shape=list(x.shape), datatype="FP32", data=x.tolist())],
        outputs=[RequestOutput(name=name) for name in outputs] or None,
    )


def settings(uri: str | Path, **extra: Any) -> ModelSettings:
    return ModelSettings(
        name="cb",
        implementation="mlserver_catboost.CatboostModel",
        parameters=ModelParameters(uri=str(uri), extra=extra),
    )


@asynccontextmanager
async def serving(uri: str | Path, **extra: Any) -> AsyncIterator[CatBoostModel]:
    model = CatBoostModel(settings(uri, **extra))
    await model.load()
    try:
        yield model
    finally:
        await model.unload()


@pytest.mark.parametrize("filename", ["model.cbm", "model.bin"])
async def test_a_classifier_predicts_labels_as_int64(tmp_path: Path, filename: str) -> None:
    trained = classifier()
    save(trained, tmp_path, filename)
    async with serving(tmp_path) as model:
        response = await model.predict(request())
    [output] = response.outputs
    assert (output.name, output.datatype, output.shape) == ("predict", "INT64", [40, 1])
    assert np.asarray(output.data).reshape(-1).tolist() == trained.predict(X).tolist()


async def test_predict_proba_has_one_fp64_column_per_class(tmp_path: Path) -> None:
    trained = classifier(classes=3)
    async with serving(save(trained, tmp_path)) as model:
        response = await model.predict(request(X[:4], "predict", "predict_proba"))
    labels, probabilities = response.outputs
    assert (labels.name, probabilities.name) == ("predict", "predict_proba")
    assert (probabilities.datatype, probabilities.shape) == ("FP64", [4, 3])
    np.testing.assert_allclose(np.asarray(probabilities.data), trained.predict_proba(X[:4]))


async def test_predict_fn_makes_predict_proba_the_default(tmp_path: Path) -> None:
    async with serving(save(classifier(), tmp_path), predict_fn="predict_proba") as model:
        response = await model.predict(request(X[:2]))
    assert (response.outputs[0].name, response.outputs[0].shape) == ("predict_proba", [2, 2])


async def test_a_regressor_predicts_values_as_fp64(tmp_path: Path) -> None:
    trained = regressor()
    async with serving(save(trained, tmp_path)) as model:
        response = await model.predict(request())
    [output] = response.outputs
    assert (output.datatype, output.shape) == ("FP64", [40, 1])
    np.testing.assert_allclose(np.asarray(output.data).reshape(-1), trained.predict(X))


async def test_predict_proba_on_a_regressor_is_output_not_found(tmp_path: Path) -> None:
    async with serving(save(regressor(), tmp_path)) as model:
        with pytest.raises(errors.OutputNotFound) as caught:
            await model.predict(request(X, "predict_proba"))
    assert caught.value.message == (
        "CatBoostRegressor models do not support 'predict_proba' - at `$.outputs[0].name`"
    )


async def test_rows_of_the_wrong_width_are_invalid_shape(tmp_path: Path) -> None:
    async with serving(save(classifier(), tmp_path)) as model:
        with pytest.raises(errors.InvalidShape) as caught:
            await model.predict(request(np.ones((1, 5))))
    assert caught.value.message == (
        "Expected shape [-1, 3] for input 'x', got [1, 5] - at `$.inputs[0].shape`"
    )


async def test_mlservers_name_serves_through_the_server(tmp_path: Path) -> None:
    trained = classifier()
    server = Server([settings(save(trained, tmp_path))])
    async with server:
        response = await server.infer("cb", request(X[:3]))
    assert (
        np.asarray(response.outputs[0].data).reshape(-1).tolist() == trained.predict(X[:3]).tolist()
    )


async def test_an_unreadable_artefact_fails_the_load(tmp_path: Path) -> None:
    pytest.importorskip("catboost")
    (tmp_path / "model.cbm").write_bytes(b"not a model")
    with pytest.raises(errors.ModelLoadError) as caught:
        await CatBoostModel(settings(tmp_path)).load()
    assert caught.value.message.startswith(
        f"Cannot load CatBoost model from {tmp_path / 'model.cbm'}: "
    )


async def test_missing_catboost_fails_the_model_with_the_extra_to_install(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Runs with or without catboost installed: the library is hidden either way.
    (tmp_path / "model.cbm").write_bytes(b"model")
    monkeypatch.setitem(sys.modules, "catboost", None)
    server = Server([settings(tmp_path)], settings=EXPOSED)
    async with server:
        [item] = await server.index()
    assert item.state == "FAILED"
    assert item.reason == (
        "CatBoost is not installed (no module named 'catboost'): pip install 'inferkit[catboost]'"
    )

"""The LightGBM runtime on a tiny booster trained in the test (skipped without lightgbm)."""

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
    errors,
)
from inferkit.runtimes.lightgbm import LightGBMModel

RNG = np.random.default_rng(11)
X = RNG.random((60, 4))
LABELS = (X[:, 0] + X[:, 1] > 1.0).astype(np.float64)


def booster(objective: str = "binary", num_class: int = 1) -> Any:
    lgb = pytest.importorskip("lightgbm")
    labels = LABELS if num_class == 1 else np.floor(X[:, 0] * num_class)
    params: dict[str, Any] = {"objective": objective, "verbose": -1, "min_data_in_leaf": 5}
    if num_class > 1:
        params["num_class"] = num_class
    return lgb.train(params, lgb.Dataset(X, label=labels), num_boost_round=3)


def save(model: Any, folder: Path, filename: str = "model.txt") -> Path:
    path = folder / filename
    model.save_model(str(path))
    return path


def request(x: Any = X, *outputs: str) -> InferenceRequest:
    x = np.asarray(x)
    return InferenceRequest(
        inputs=[RequestInput(name="x", shape=list(x.shape), datatype="FP64", data=x.tolist())],
        outputs=[RequestOutput(name=name) for name in outputs] or None,
    )


def settings(uri: str | Path, **extra: Any) -> ModelSettings:
    return ModelSettings(
        name="gbm",
        implementation="mlserver_lightgbm.LightGBMModel",
        parameters=ModelParameters(uri=str(uri), extra=extra),
    )


@asynccontextmanager
async def serving(uri: str | Path) -> AsyncIterator[LightGBMModel]:
    model = LightGBMModel(settings(uri))
    await model.load()
    try:
        yield model
    finally:
        await model.unload()


@pytest.mark.parametrize("filename", ["model.bst", "model.txt"])
async def test_predict_is_the_booster_output_as_fp64(tmp_path: Path, filename: str) -> None:
    model_booster = booster()
    save(model_booster, tmp_path, filename)
    async with serving(tmp_path) as model:
        response = await model.predict(request())
    [output] = response.outputs
    assert (output.name, output.datatype, output.shape) == ("predict", "FP64", [60, 1])
    assert output.parameters == {"content_type": "np"}
    np.testing.assert_allclose(output.data.reshape(-1), model_booster.predict(X))


async def test_multiclass_predict_has_one_column_per_class(tmp_path: Path) -> None:
    async with serving(save(booster("multiclass", num_class=3), tmp_path)) as model:
        response = await model.predict(request(X[:2]))
    assert response.outputs[0].shape == [2, 3]


async def test_predict_is_the_only_output(tmp_path: Path) -> None:
    async with serving(save(booster(), tmp_path)) as model:
        with pytest.raises(errors.OutputNotFound) as caught:
            await model.predict(request(X, "predict_proba"))
    assert caught.value.message == (
        "LightGBMModel only supports 'predict' as outputs ('predict_proba' was received)"
        " - at `$.outputs[0].name`"
    )


async def test_a_predict_fn_other_than_predict_fails_the_load(tmp_path: Path) -> None:
    model = LightGBMModel(settings(save(booster(), tmp_path), predict_fn="predict_proba"))
    with pytest.raises(errors.ModelLoadError) as caught:
        await model.load()
    assert caught.value.message == (
        "parameters.extra.predict_fn must be 'predict', got 'predict_proba'"
    )


async def test_rows_of_the_wrong_width_are_invalid_shape(tmp_path: Path) -> None:
    async with serving(save(booster(), tmp_path)) as model:
        with pytest.raises(errors.InvalidShape) as caught:
            await model.predict(request(np.ones((1, 2))))
    assert caught.value.message == (
        "Expected shape [-1, 4] for input 'x', got [1, 2] - at `$.inputs[0].shape`"
    )


async def test_an_empty_folder_fails_the_load_with_the_names_looked_for(tmp_path: Path) -> None:
    pytest.importorskip("lightgbm")
    with pytest.raises(errors.ModelLoadError) as caught:
        await LightGBMModel(settings(tmp_path)).load()
    assert caught.value.message == (
        f"No model artefact in {tmp_path}: expected one of 'model.bst', 'model.txt'"
    )


async def test_missing_lightgbm_fails_the_model_with_the_extra_to_install(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    # Runs with or without lightgbm installed: the library is hidden either way.
    (tmp_path / "model.txt").write_text("tree\n")
    monkeypatch.setitem(sys.modules, "lightgbm", None)
    server = Server([settings(tmp_path)])
    async with server:
        [item] = await server.index()
    assert item.state == "FAILED"
    # Clients get the class (expose_load_errors is off); the operator reads why in the log.
    assert item.reason == "ModelLoadError (the reason is in the server log)"
    assert (
        "LightGBM is not installed (no module named 'lightgbm'): pip install 'inferkit[lightgbm]'"
    ) in caplog.text

"""The XGBoost runtime on tiny classifiers, regressors and native boosters trained in the test."""

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
from inferkit.runtimes.xgboost import XGBoostModel

xgb = pytest.importorskip("xgboost")

RNG = np.random.default_rng(7)
X = RNG.random((40, 3)).astype(np.float32)
LABELS = (X[:, 0] > 0.5).astype(np.int64)
TARGETS = X @ np.array([1.0, 2.0, -1.0], dtype=np.float32)


def classifier() -> Any:
    return xgb.XGBClassifier(n_estimators=3, max_depth=2).fit(X, LABELS)


def regressor() -> Any:
    return xgb.XGBRegressor(n_estimators=3, max_depth=2).fit(X, TARGETS)


def native() -> Any:
    params = {"max_depth": 2, "eta": 1, "objective": "binary:logistic"}
    return xgb.train(params, xgb.DMatrix(X, label=LABELS), num_boost_round=2)


def save(model: Any, folder: Path, filename: str = "model.json") -> Path:
    path = folder / filename
    model.save_model(str(path))
    return path


def request(x: Any = X, *outputs: str, **parameters: Any) -> InferenceRequest:
    x = np.asarray(x)
    return InferenceRequest(
        parameters=parameters or None,
        inputs=[RequestInput(name="x", shape=list(x.shape), datatype="FP32", data=x.tolist())],
        outputs=[RequestOutput(name=name) for name in outputs] or None,
    )


def settings(uri: str | Path, **extra: Any) -> ModelSettings:
    return ModelSettings(
        name="mushrooms",
        implementation="mlserver_xgboost.XGBoostModel",
        parameters=ModelParameters(uri=str(uri), version="v2", extra=extra),
    )


@asynccontextmanager
async def serving(uri: str | Path, **extra: Any) -> AsyncIterator[XGBoostModel]:
    model = XGBoostModel(settings(uri, **extra))
    await model.load()
    try:
        yield model
    finally:
        await model.unload()


async def test_classifier_predict_gives_labels_and_predict_proba_fp32(tmp_path: Path) -> None:
    estimator = classifier()
    async with serving(save(estimator, tmp_path)) as model:
        response = await model.predict(request(X, "predict", "predict_proba"))
    labels, proba = response.outputs
    assert (labels.name, labels.datatype, labels.shape) == ("predict", "INT64", [40, 1])
    np.testing.assert_array_equal(labels.data.reshape(-1), estimator.predict(X))
    assert (proba.name, proba.datatype, proba.shape) == ("predict_proba", "FP32", [40, 2])
    assert proba.parameters == {"content_type": "np"}
    np.testing.assert_allclose(proba.data, estimator.predict_proba(X))


async def test_regressor_predict_is_fp32_of_shape_n_by_1(tmp_path: Path) -> None:
    estimator = regressor()
    async with serving(save(estimator, tmp_path)) as model:
        response = await model.predict(request())
    [output] = response.outputs
    assert (output.name, output.datatype, output.shape) == ("predict", "FP32", [40, 1])
    assert output.parameters == {"content_type": "np"}
    np.testing.assert_allclose(output.data.reshape(-1), estimator.predict(X))


async def test_a_native_booster_predicts_its_objective_as_the_seed_shows(tmp_path: Path) -> None:
    # The seed's mushroom model: xgb.train(binary:logistic), served as FP32 [1, 1] probabilities.
    booster = native()
    async with serving(save(booster, tmp_path)) as model:
        response = await model.predict(request(X[:1]))
    [output] = response.outputs
    assert (output.name, output.datatype, output.shape) == ("predict", "FP32", [1, 1])
    np.testing.assert_allclose(output.data.reshape(-1), booster.predict(xgb.DMatrix(X[:1])))


@pytest.mark.parametrize(
    ("make", "output", "message"),
    [
        (
            regressor,
            "predict_proba",
            "XGBRegressor models do not support 'predict_proba' - at `$.outputs[0].name`",
        ),
        (
            native,
            "predict_proba",
            "XGBRegressor models do not support 'predict_proba' - at `$.outputs[0].name`",
        ),
        (
            classifier,
            "transform",
            "XGBoostModel only supports 'predict' and 'predict_proba' as outputs"
            " ('transform' was received) - at `$.outputs[0].name`",
        ),
    ],
    ids=["regressor", "native", "unknown"],
)
async def test_outputs_the_model_cannot_give_are_400_class_errors(
    tmp_path: Path, make: Any, output: str, message: str
) -> None:
    async with serving(save(make(), tmp_path)) as model:
        with pytest.raises(errors.OutputNotFound) as caught:
            await model.predict(request(X, output))
    assert caught.value.message == message


async def test_small_batches_run_on_one_thread_and_large_ones_on_the_model_setting(
    tmp_path: Path,
) -> None:
    estimator = regressor()
    rows = np.tile(X, (2, 1))  # 80 rows: over the small-batch limit
    assert len(rows) >= XGBoostModel.small_batch_rows > 1
    async with serving(save(estimator, tmp_path)) as model:
        assert model.estimator.n_jobs is None
        one = await model.predict(request(X[:1]))
        assert model.estimator.n_jobs == 1
        many = await model.predict(request(rows))
        assert model.estimator.n_jobs is None
    np.testing.assert_allclose(one.outputs[0].data.reshape(-1), estimator.predict(X[:1]))
    np.testing.assert_allclose(many.outputs[0].data.reshape(-1), estimator.predict(rows))


async def test_predict_fn_in_extra_sets_the_default_output(tmp_path: Path) -> None:
    async with serving(save(classifier(), tmp_path), predict_fn="predict_proba") as model:
        response = await model.predict(request())
    assert [(o.name, o.shape) for o in response.outputs] == [("predict_proba", [40, 2])]


async def test_predict_fn_predict_proba_on_a_regressor_fails_the_load(tmp_path: Path) -> None:
    model = XGBoostModel(settings(save(regressor(), tmp_path), predict_fn="predict_proba"))
    with pytest.raises(errors.ModelLoadError) as caught:
        await model.load()
    assert caught.value.message == (
        "parameters.extra.predict_fn is 'predict_proba', but XGBRegressor models do not support it"
    )


@pytest.mark.parametrize("filename", ["model.bst", "model.json", "model.ubj"])
async def test_a_folder_uri_finds_the_well_known_file(tmp_path: Path, filename: str) -> None:
    estimator = classifier()
    # XGBoost picks the format from the extension (``.bst`` is UBJSON); the runtime from content.
    estimator.save_model(str(tmp_path / "model.ubj"))
    (tmp_path / "model.ubj").rename(tmp_path / filename)
    async with serving(tmp_path) as model:
        response = await model.predict(request(X, "predict_proba"))
    np.testing.assert_allclose(response.outputs[0].data, estimator.predict_proba(X))


async def test_an_empty_folder_fails_the_load_with_the_names_looked_for(tmp_path: Path) -> None:
    with pytest.raises(errors.ModelLoadError) as caught:
        await XGBoostModel(settings(tmp_path)).load()
    assert caught.value.message == (
        f"No model artefact in {tmp_path}: expected one of 'model.bst', 'model.json', 'model.ubj'"
    )


async def test_rows_of_the_wrong_width_are_invalid_shape(tmp_path: Path) -> None:
    async with serving(save(native(), tmp_path)) as model:
        with pytest.raises(errors.InvalidShape) as caught:
            await model.predict(request(np.ones((2, 5))))
    assert caught.value.message == (
        "Expected shape [-1, 3] for input 'x', got [2, 5] - at `$.inputs[0].shape`"
    )


async def test_pd_content_type_gives_the_model_a_dataframe(tmp_path: Path) -> None:
    pd = pytest.importorskip("pandas")
    frame = pd.DataFrame(X, columns=["a", "b", "c"])
    estimator = xgb.XGBRegressor(n_estimators=3, max_depth=2).fit(frame, TARGETS)
    payload = InferenceRequest(
        parameters={"content_type": "pd"},
        inputs=[
            RequestInput(name=name, shape=[40, 1], datatype="FP32", data=X[:, i].tolist())
            for i, name in enumerate(["a", "b", "c"])
        ],
    )
    async with serving(save(estimator, tmp_path)) as model:
        response = await model.predict(payload)
    np.testing.assert_allclose(response.outputs[0].data.reshape(-1), estimator.predict(frame))


async def test_the_seed_model_settings_serve_through_the_server(tmp_path: Path) -> None:
    save(native(), tmp_path)
    server = Server([settings(tmp_path / "model.json")])
    async with server:
        [item] = await server.index()
        response = await server.infer("mushrooms", request(X[:1]), version="v2")
    assert (item.name, item.version, item.state, item.reason) == ("mushrooms", "v2", "READY", "")
    assert (response.model_name, response.model_version) == ("mushrooms", "v2")


async def test_missing_xgboost_fails_the_model_with_the_extra_to_install(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    path = save(native(), tmp_path)
    monkeypatch.setitem(sys.modules, "xgboost", None)
    server = Server([settings(path)])
    async with server:
        [item] = await server.index()
    assert item.state == "FAILED"
    # Clients get the class (expose_load_errors is off); the operator reads why in the log.
    assert item.reason == "ModelLoadError (the reason is in the server log)"
    assert (
        "XGBoost is not installed (no module named 'xgboost'): pip install 'inferkit[xgboost]'"
    ) in caplog.text

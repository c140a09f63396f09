"""The scikit-learn runtime on tiny models trained in the test and saved with joblib / pickle."""

from __future__ import annotations

import asyncio
import pickle
import sys
import threading
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import joblib
import numpy as np
import pytest
from sklearn.compose import ColumnTransformer
from sklearn.decomposition import PCA
from sklearn.linear_model import LinearRegression, LogisticRegression
from sklearn.pipeline import Pipeline, make_pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.svm import SVR

from inferkit import (
    InferenceRequest,
    ModelParameters,
    ModelSettings,
    RequestInput,
    RequestOutput,
    Server,
    errors,
)
from inferkit.runtimes.sklearn import SKLearnModel

pd = pytest.importorskip("pandas")

X = np.array([[0.0, 0.1], [0.2, 0.0], [1.0, 0.9], [0.9, 1.1], [2.0, 2.1], [2.2, 1.9]])
LABELS = np.array([0, 0, 1, 1, 2, 2])
TARGETS = X.sum(axis=1)


def classifier() -> LogisticRegression:
    return LogisticRegression().fit(X, LABELS)


def regressor() -> SVR:
    return SVR().fit(X, TARGETS)


def save(estimator: Any, folder: Path, filename: str = "model.joblib") -> Path:
    path = folder / filename
    joblib.dump(estimator, path)
    return path


def request(x: Any = X, *outputs: str, **parameters: Any) -> InferenceRequest:
    x = np.asarray(x)
    return InferenceRequest(
        parameters=parameters or None,
        inputs=[RequestInput(name="x", shape=list(x.shape), datatype="FP64", data=x.tolist())],
        outputs=[RequestOutput(name=name) for name in outputs] or None,
    )


def settings(uri: str | Path, **extra: Any) -> ModelSettings:
    return ModelSettings(
        name="m",
        implementation="mlserver_sklearn.SKLearnModel",
        parameters=ModelParameters(uri=str(uri), version="v1", extra=extra),
    )


@asynccontextmanager
async def serving(uri: str | Path, **extra: Any) -> AsyncIterator[SKLearnModel]:
    model = SKLearnModel(settings(uri, **extra))
    await model.load()
    try:
        yield model
    finally:
        await model.unload()


async def test_predict_is_int64_of_shape_n_by_1_as_mlserver_returns_it(tmp_path: Path) -> None:
    estimator = classifier()
    async with serving(save(estimator, tmp_path)) as model:
        response = await model.predict(request())
    assert response.model_name == "m" and response.model_version == "v1"
    [output] = response.outputs
    assert (output.name, output.datatype, output.shape) == ("predict", "INT64", [6, 1])
    assert output.parameters == {"content_type": "np"}
    np.testing.assert_array_equal(output.data.reshape(-1), estimator.predict(X))


async def test_several_outputs_in_the_order_asked(tmp_path: Path) -> None:
    estimator = classifier()
    async with serving(save(estimator, tmp_path)) as model:
        response = await model.predict(request(X, "predict_proba", "predict"))
    proba, labels = response.outputs
    assert (proba.name, proba.datatype, proba.shape) == ("predict_proba", "FP64", [6, 3])
    np.testing.assert_allclose(proba.data, estimator.predict_proba(X))
    assert (labels.name, labels.shape) == ("predict", [6, 1])


async def test_transform_of_a_pipeline(tmp_path: Path) -> None:
    pipeline = make_pipeline(StandardScaler(), PCA(n_components=1)).fit(X)
    async with serving(save(pipeline, tmp_path)) as model:
        response = await model.predict(request(X, "transform"))
    [output] = response.outputs
    assert (output.name, output.datatype, output.shape) == ("transform", "FP64", [6, 1])
    np.testing.assert_allclose(output.data, pipeline.transform(X))


async def test_predict_fn_in_extra_sets_the_default_output(tmp_path: Path) -> None:
    estimator = classifier()
    async with serving(save(estimator, tmp_path), predict_fn="predict_proba") as model:
        default = await model.predict(request())
        asked = await model.predict(request(X, "predict"))
    assert [o.name for o in default.outputs] == ["predict_proba"]
    assert [o.name for o in asked.outputs] == ["predict"]


@pytest.mark.parametrize(
    ("estimator", "output", "message"),
    [
        (
            regressor(),
            "predict_proba",
            "SVR models do not support 'predict_proba' - at `$.outputs[0].name`",
        ),
        (
            make_pipeline(StandardScaler(), SVR()).fit(X, TARGETS),
            "predict_proba",
            "SVR models do not support 'predict_proba' - at `$.outputs[0].name`",
        ),
        (
            make_pipeline(StandardScaler(), PCA(n_components=1)).fit(X),
            "predict",
            "PCA models do not support 'predict' - at `$.outputs[0].name`",
        ),
        (
            classifier(),
            "decision_function",
            "SKLearnModel only supports 'predict', 'predict_proba' and 'transform' as outputs"
            " ('decision_function' was received) - at `$.outputs[0].name`",
        ),
    ],
    ids=["regressor", "pipeline", "transformer", "unknown"],
)
async def test_outputs_the_model_cannot_give_are_400_class_errors(
    tmp_path: Path, estimator: Any, output: str, message: str
) -> None:
    async with serving(save(estimator, tmp_path)) as model:
        with pytest.raises(errors.OutputNotFound) as caught:
            await model.predict(request(X, output))
    assert caught.value.message == message
    assert caught.value.code == "OUTPUT_NOT_FOUND"


@pytest.mark.parametrize(
    ("estimator", "predict_fn", "reason"),
    [
        (
            classifier(),
            "decision_function",
            "parameters.extra.predict_fn must be one of 'predict', 'predict_proba',"
            " 'transform', got 'decision_function'",
        ),
        (
            regressor(),
            "predict_proba",
            "parameters.extra.predict_fn is 'predict_proba', but SVR models do not support it",
        ),
    ],
)
async def test_a_predict_fn_the_model_cannot_serve_fails_the_load(
    tmp_path: Path, estimator: Any, predict_fn: str, reason: str
) -> None:
    model = SKLearnModel(settings(save(estimator, tmp_path), predict_fn=predict_fn))
    with pytest.raises(errors.ModelLoadError) as caught:
        await model.load()
    assert caught.value.message == reason
    assert model.estimator is None


async def test_rows_of_the_wrong_width_are_invalid_shape(tmp_path: Path) -> None:
    async with serving(save(classifier(), tmp_path)) as model:
        with pytest.raises(errors.InvalidShape) as caught:
            await model.predict(request(np.ones((1, 3))))
        with pytest.raises(errors.InvalidShape) as flat:
            await model.predict(request(np.ones(2)))
    assert caught.value.message == (
        "Expected shape [-1, 2] for input 'x', got [1, 3] - at `$.inputs[0].shape`"
    )
    assert flat.value.message == (
        "Expected shape [-1, 2] for input 'x', got [2] - at `$.inputs[0].shape`"
    )


async def test_two_input_tensors_need_a_request_codec(tmp_path: Path) -> None:
    payload = request()
    payload.inputs.append(payload.inputs[0])
    async with serving(save(classifier(), tmp_path)) as model:
        with pytest.raises(errors.InvalidRequest) as caught:
            await model.predict(payload)
    assert caught.value.message == (
        "The 'np' codec only supports a single input tensor (2 were received) - at `$.inputs`"
    )


def frame_request(**parameters: Any) -> InferenceRequest:
    columns = {"a": [1.0, 2.0, 3.0], "b": [10.0, 20.0, 30.0]}
    return InferenceRequest(
        parameters=parameters or None,
        inputs=[
            RequestInput(name=name, shape=[3, 1], datatype="FP64", data=values)
            for name, values in columns.items()
        ],
    )


def column_b_pipeline() -> Pipeline:
    # Selecting a column by name only works on a DataFrame, so this proves what predict got.
    frame = pd.DataFrame({"a": [0.0, 1.0, 2.0], "b": [0.0, 10.0, 20.0]})
    select = ColumnTransformer([("b", "passthrough", ["b"])])
    return make_pipeline(select, LinearRegression()).fit(frame, [0.0, 1.0, 2.0])


@pytest.mark.parametrize("where", ["request", "model-settings"])
async def test_pd_content_type_gives_the_model_a_dataframe(tmp_path: Path, where: str) -> None:
    path = save(column_b_pipeline(), tmp_path)
    model = SKLearnModel(settings(path))
    if where == "model-settings":
        assert model.settings.parameters is not None
        model.settings.parameters.content_type = "pd"
    payload = frame_request(content_type="pd") if where == "request" else frame_request()
    await model.load()
    try:
        response = await model.predict(payload)
    finally:
        await model.unload()
    [output] = response.outputs
    assert (output.name, output.datatype, output.shape) == ("predict", "FP64", [3, 1])
    np.testing.assert_allclose(output.data.reshape(-1), [1.0, 2.0, 3.0])


@pytest.mark.parametrize("filename", ["model.joblib", "model.pickle", "model.pkl"])
async def test_a_folder_uri_finds_the_well_known_file(tmp_path: Path, filename: str) -> None:
    with (tmp_path / filename).open("wb") as file:
        pickle.dump(classifier(), file)  # a plain pickle loads too
    async with serving(tmp_path) as model:
        response = await model.predict(request())
    assert response.outputs[0].shape == [6, 1]


@pytest.mark.parametrize(
    ("uri", "reason"),
    [
        (
            "{tmp}",
            "No model artefact in {tmp}: expected one of 'model.joblib', 'model.pickle',"
            " 'model.pkl'",
        ),
        ("{tmp}/missing.joblib", "Model artefact {tmp}/missing.joblib does not exist"),
        (
            "s3://bucket/model.joblib",
            "Cannot read s3://bucket/model.joblib: only local paths are supported",
        ),
    ],
    ids=["empty-folder", "missing-file", "remote"],
)
async def test_without_an_artefact_the_load_fails_saying_where_it_looked(
    tmp_path: Path, uri: str, reason: str
) -> None:
    model = SKLearnModel(settings(uri.format(tmp=tmp_path)))
    with pytest.raises(errors.ModelLoadError) as caught:
        await model.load()
    assert caught.value.message == reason.format(tmp=tmp_path)


async def test_a_corrupt_artefact_fails_the_load_naming_the_file(tmp_path: Path) -> None:
    path = tmp_path / "model.joblib"
    path.write_bytes(b"not a pickle")
    with pytest.raises(errors.ModelLoadError) as caught:
        await SKLearnModel(settings(path)).load()
    assert caught.value.message.startswith(f"Cannot load scikit-learn model from {path}: ")


async def test_mlserver_name_serves_through_the_server(tmp_path: Path) -> None:
    server = Server([settings(save(classifier(), tmp_path))])
    async with server:
        [item] = await server.index()
        response = await server.infer("m", request(X[:1]), version="v1")
    assert (item.state, item.reason) == ("READY", "")
    assert response.outputs[0].data.tolist() == [[0]]


async def test_missing_scikit_learn_fails_the_model_with_the_extra_to_install(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    path = save(classifier(), tmp_path)
    monkeypatch.setitem(sys.modules, "sklearn", None)
    server = Server([settings(path)])
    async with server:
        [item] = await server.index()
    assert item.state == "FAILED"
    # Clients get the class (expose_load_errors is off); the operator reads why in the log.
    assert item.reason == "ModelLoadError (the reason is in the server log)"
    assert (
        "scikit-learn is not installed (no module named 'sklearn'): pip install 'inferkit[sklearn]'"
    ) in caplog.text


async def test_predict_runs_off_the_event_loop_on_one_thread_per_model(tmp_path: Path) -> None:
    started, release = threading.Event(), threading.Event()
    threads: set[int] = set()

    class Blocking:
        """Stands in for an estimator whose predict holds its thread until released."""

        n_features_in_ = 2

        def predict(self, x: Any) -> Any:
            threads.add(threading.get_ident())
            started.set()
            if not release.wait(10):
                raise AssertionError("never released: predict blocked the event loop")
            return np.zeros(len(x), dtype=np.int64)

    async with serving(save(classifier(), tmp_path)) as model:
        model.estimator = Blocking()
        task = asyncio.create_task(model.predict(request()))
        await asyncio.to_thread(started.wait, 10)
        # The loop ran this line while predict was blocked: it does not run on the loop.
        assert not task.done()
        release.set()
        await task
        await asyncio.gather(*(model.predict(request()) for _ in range(4)))
    assert len(threads) == 1 and threading.get_ident() not in threads


async def test_after_unload_predict_is_refused(tmp_path: Path) -> None:
    async with serving(save(classifier(), tmp_path)) as model:
        pass
    with pytest.raises(errors.ModelNotReady) as caught:
        await model.predict(request())
    assert caught.value.message == "Model 'm' is not loaded"

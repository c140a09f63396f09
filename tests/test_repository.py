from __future__ import annotations

import json
import logging
import sys
import types
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from inferkit.errors import ModelLoadError
from inferkit.repository import (
    IMPLEMENTATION_ALIASES,
    Discovery,
    DiscoveryFailure,
    ModelRepository,
    resolve_implementation,
)
from inferkit.settings import ModelParameters, ModelSettings
from inferkit.settings_loader import load_model_settings

# The seed multi-model example, verbatim (MLServer's docs/examples/mms).
SEED_MNIST = """{
    "name": "mnist_sklearn",
    "implementation": "mlserver_sklearn.SKLearnModel",
    "parameters": {
        "version": "v1.0.0"
    }
}
"""
SEED_MUSHROOM = """{
    "name": "mushroom_xgboost",
    "implementation": "mlserver_xgboost.XGBoostModel",
    "parameters": {
        "uri": "./model.json",
        "version": "v2.0.0"
    }
}
"""


def write(path: Path, content: str | dict[str, Any]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(content if isinstance(content, str) else json.dumps(content))
    return path


def model_folder(folder: Path, settings: dict[str, Any], **files: str) -> ModelSettings:
    """A model folder with its settings and source files; returns the loaded settings."""
    for name, source in files.items():
        write(folder / name, source)
    return load_model_settings(write(folder / "model-settings.json", settings))


@pytest.fixture(autouse=True)
def _forget_test_modules(tmp_path: Path) -> Iterator[None]:
    # Modules imported from the test's folders must not leak into the next test.
    yield
    for name, module in list(sys.modules.items()):
        file = getattr(module, "__file__", None) or ""
        if name.startswith("_inferkit_model_") or file.startswith(str(tmp_path)):
            del sys.modules[name]


# -- discovery ---------------------------------------------------------------------------------


def test_seed_multi_model_repository(tmp_path: Path) -> None:
    write(tmp_path / "models" / "mnist_sklearn" / "model-settings.json", SEED_MNIST)
    write(tmp_path / "models" / "mushroom_xgboost" / "model-settings.json", SEED_MUSHROOM)

    found = ModelRepository(tmp_path).discover()

    mnist, mushroom = (
        tmp_path / "models" / "mnist_sklearn",
        tmp_path / "models" / "mushroom_xgboost",
    )
    assert found == Discovery(
        [
            ModelSettings(
                name="mnist_sklearn",
                implementation="mlserver_sklearn.SKLearnModel",
                parameters=ModelParameters(uri=str(mnist), version="v1.0.0"),
                folder=str(mnist),
            ),
            ModelSettings(
                name="mushroom_xgboost",
                implementation="mlserver_xgboost.XGBoostModel",
                parameters=ModelParameters(uri=str(mushroom / "model.json"), version="v2.0.0"),
                folder=str(mushroom),
            ),
        ],
        [],
    )


def test_versions_of_one_model(tmp_path: Path) -> None:
    for folder, version in [("iris-2", "2"), ("iris-1", "1"), ("other", None)]:
        content: dict[str, Any] = {"name": "other" if version is None else "iris"}
        if version:
            content["parameters"] = {"version": version}
        write(tmp_path / folder / "model-settings.json", content)
    repository = ModelRepository(tmp_path)

    assert [m.version for m in repository.find("iris")] == ["1", "2"]
    assert [m.name for m in repository.find("other")] == ["other"]
    assert repository.find("missing") == []


def test_discovery_is_recursive_sorted_and_skips_hidden_folders(tmp_path: Path) -> None:
    for folder in ["b", "a/deep/er", "a", ".hidden", "a/.git/x", "z/.cache"]:
        write(tmp_path / folder / "model-settings.json", {})
    write(tmp_path / "c" / "not-model-settings.json", {})

    names = [m.folder for m in ModelRepository(tmp_path).discover().models]

    assert names == [str(tmp_path / f) for f in ["a", "a/deep/er", "b"]]


def test_root_itself_may_be_a_model_folder(tmp_path: Path) -> None:
    write(tmp_path / "model-settings.json", {"name": "solo"})
    assert [m.name for m in ModelRepository(tmp_path).discover().models] == ["solo"]


def test_symlink_loops_end(tmp_path: Path) -> None:
    write(tmp_path / "m" / "model-settings.json", {})
    (tmp_path / "m" / "loop").symlink_to(tmp_path)
    assert [m.name for m in ModelRepository(tmp_path).discover().models] == ["m"]


def test_missing_root_is_empty(tmp_path: Path) -> None:
    assert ModelRepository(tmp_path / "nope").discover().models == []


def test_a_broken_folder_does_not_hide_the_others(tmp_path: Path) -> None:
    write(tmp_path / "good" / "model-settings.json", {"name": "good"})
    broken = write(tmp_path / "broken" / "model-settings.json", '{"name": "x",')
    typed = write(tmp_path / "typed" / "model-settings.json", {"max_batch_size": [1]})

    models, failures = ModelRepository(tmp_path).discover()

    assert [m.name for m in models] == ["good"]
    assert failures == [
        DiscoveryFailure("broken", f"Invalid settings in {broken}: Input data was truncated"),
        DiscoveryFailure(
            "typed",
            f"Invalid settings in {typed}: Expected `int`, got `array` - at `$.max_batch_size`",
        ),
    ]


def test_settings_warnings_are_logged_once_per_file(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    settings = {"warm_workers": True, "implementaton": "m.M"}
    a = write(tmp_path / "a" / "model-settings.json", settings)
    write(tmp_path / "b" / "model-settings.json", {"warm_workers": False})
    repository = ModelRepository(tmp_path)

    with caplog.at_level(logging.WARNING, logger="inferkit.repository"):
        repository.discover()
        repository.discover()  # every load and index call rescans: nothing new to say
        assert repository.find("a")

    assert [(r.name, r.levelname, r.getMessage()) for r in caplog.records] == [
        (
            "inferkit.repository",
            "WARNING",
            f"Ignoring 'warm_workers' in {a}: inferkit does not implement it"
            " (workers load the model when they start; deprecated in MLServer too)",
        ),
        (
            "inferkit.repository",
            "WARNING",
            f"Ignoring unknown setting 'implementaton' in {a}; did you mean 'implementation'?",
        ),
    ]


def test_a_changed_settings_file_is_warned_about_again(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = write(tmp_path / "a" / "model-settings.json", {"implementaton": "m.M"})
    repository = ModelRepository(tmp_path)
    with caplog.at_level(logging.WARNING, logger="inferkit.repository"):
        repository.discover()
        write(path, {"implementation": "m.M", "cache_enabled": True})
        repository.discover()
        repository.discover()
    assert [r.getMessage() for r in caplog.records] == [
        f"Ignoring unknown setting 'implementaton' in {path}; did you mean 'implementation'?",
        f"Ignoring 'cache_enabled' in {path}: inferkit does not implement it"
        " (no response cache; requests always run the model)",
    ]


def test_environment_model_warnings_are_logged_once(caplog: pytest.LogCaptureFixture) -> None:
    environ = {
        "MLSERVER_MODEL_NAME": "m",
        "MLSERVER_MODEL_IMPLEMENTATION": "m.M",
        "MLSERVER_MODEL_CACHE_ENABLED": "yes",
    }
    repository = ModelRepository("/nonexistent-inferkit-root", environ)
    with caplog.at_level(logging.WARNING, logger="inferkit.repository"):
        assert [m.name for m in repository.discover().models] == ["m"]
        repository.discover()
    assert [r.getMessage() for r in caplog.records] == [
        "Ignoring 'cache_enabled' in environment variable MLSERVER_MODEL_CACHE_ENABLED:"
        " inferkit does not implement it (no response cache; requests always run the model)"
    ]


def test_rescans_pick_up_new_models(tmp_path: Path) -> None:
    repository = ModelRepository(tmp_path)
    assert repository.find("late") == []
    write(tmp_path / "late" / "model-settings.json", {})
    assert [m.name for m in repository.find("late")] == ["late"]


def test_discovery_reads_settings_and_imports_nothing(tmp_path: Path) -> None:
    # The server scans in a worker thread on every rescan; model code runs only at load time.
    model_folder(
        tmp_path / "m",
        {"name": "m", "implementation": "model.M"},
        **{"model.py": "raise SystemExit('imported during discovery')\n"},
    )
    assert [m.name for m in ModelRepository(tmp_path).discover().models] == ["m"]


ENV_MODEL = {
    "MLSERVER_MODEL_NAME": "from-env",
    "MLSERVER_MODEL_IMPLEMENTATION": "model.M",
    "MLSERVER_MODEL_URI": "/mnt/models",
}


@pytest.mark.parametrize(
    ("folders", "environ", "expected"),
    [
        ([], ENV_MODEL, ["from-env"]),
        ([], None, []),
        ([], {}, []),
        (["on-disk"], ENV_MODEL, ["on-disk"]),
        # As in MLServer, a broken file is not a model: the environment's model is used.
        (["broken"], ENV_MODEL, ["from-env"]),
    ],
)
def test_environment_model_when_the_repository_has_none(
    tmp_path: Path, folders: list[str], environ: dict[str, str] | None, expected: list[str]
) -> None:
    for folder in folders:
        write(tmp_path / folder / "model-settings.json", "{" if folder == "broken" else "{}")
    found = ModelRepository(tmp_path, environ).discover()
    assert [m.name for m in found.models] == expected


# -- resolve_implementation --------------------------------------------------------------------

ECHO_MODEL = """
class EchoModel:
    def predict(self):
        return {value!r}
"""


def test_two_models_with_the_same_module_and_class_do_not_clash(tmp_path: Path) -> None:
    a = model_folder(
        tmp_path / "a",
        {"implementation": "model.EchoModel"},
        **{"model.py": ECHO_MODEL.format(value="a")},
    )
    b = model_folder(
        tmp_path / "b",
        {"implementation": "model.EchoModel"},
        **{"model.py": ECHO_MODEL.format(value="b")},
    )
    path_before = list(sys.path)

    first, second = resolve_implementation(a), resolve_implementation(b)

    assert (first().predict(), second().predict()) == ("a", "b")
    assert first.__module__ != second.__module__
    assert sys.modules[first.__module__].__file__ == str(tmp_path / "a" / "model.py")
    assert "model" not in sys.modules
    assert sys.path == path_before


HELPER_MODEL = """
import helpers

class HelperModel:
    def predict(self):
        return helpers.VALUE
"""


def test_sibling_modules_of_two_models_do_not_clash(tmp_path: Path) -> None:
    a, b = (
        model_folder(
            tmp_path / name,
            {"implementation": "model.HelperModel"},
            **{"model.py": HELPER_MODEL, "helpers.py": f"VALUE = {name!r}\n"},
        )
        for name in ("a", "b")
    )

    first, second = resolve_implementation(a), resolve_implementation(b)

    assert (first().predict(), second().predict()) == ("a", "b")
    # The latest model's sibling stays importable by name, for pickles that refer to it.
    assert sys.modules["helpers"].VALUE == "b"


def test_already_imported_modules_are_not_replaced(tmp_path: Path) -> None:
    # A folder's `json.py` does not evict the standard library's `json` (nor does MLServer's).
    settings = model_folder(
        tmp_path / "m",
        {"implementation": "model.M"},
        **{
            "model.py": "import json\nclass M:\n    dumps = json.dumps\n",
            "json.py": "raise RuntimeError('shadowed')\n",
        },
    )
    assert resolve_implementation(settings).dumps is json.dumps
    assert sys.modules["json"] is json


def test_package_in_the_model_folder(tmp_path: Path) -> None:
    settings = model_folder(
        tmp_path / "m",
        {"implementation": "mypkg.runtime.PkgModel"},
        **{
            "mypkg/__init__.py": "",
            "mypkg/consts.py": "ANSWER = 42\n",
            "mypkg/runtime.py": (
                "from .consts import ANSWER\n\nclass PkgModel:\n    answer = ANSWER\n"
            ),
        },
    )
    assert resolve_implementation(settings).answer == 42


def test_each_resolution_reads_the_file_again(tmp_path: Path) -> None:
    settings = model_folder(
        tmp_path / "m",
        {"implementation": "model.EchoModel"},
        **{"model.py": ECHO_MODEL.format(value="v1")},
    )
    assert resolve_implementation(settings)().predict() == "v1"
    # A different length, so the bytecode cache cannot mistake it for the old file.
    write(tmp_path / "m" / "model.py", ECHO_MODEL.format(value="version 2"))
    assert resolve_implementation(settings)().predict() == "version 2"


def test_installed_modules_resolve_without_a_folder() -> None:
    settings = ModelSettings(name="m", implementation="collections.OrderedDict")
    assert resolve_implementation(settings) is __import__("collections").OrderedDict


def test_mlserver_runtime_names_map_to_inferkit_runtimes(monkeypatch: pytest.MonkeyPatch) -> None:
    runtime = types.ModuleType("inferkit.runtimes.sklearn")

    class SKLearnModel:
        pass

    runtime.SKLearnModel = SKLearnModel  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "inferkit.runtimes.sklearn", runtime)
    settings = ModelSettings(name="m", implementation="mlserver_sklearn.SKLearnModel")

    assert resolve_implementation(settings) is SKLearnModel
    assert dict(IMPLEMENTATION_ALIASES) == {
        "mlserver_sklearn.SKLearnModel": "inferkit.runtimes.sklearn.SKLearnModel",
        "mlserver_xgboost.XGBoostModel": "inferkit.runtimes.xgboost.XGBoostModel",
        "mlserver_lightgbm.LightGBMModel": "inferkit.runtimes.lightgbm.LightGBMModel",
        "mlserver_catboost.CatboostModel": "inferkit.runtimes.catboost.CatBoostModel",
        "mlserver_mlflow.MLflowRuntime": "inferkit.runtimes.mlflow.MLflowRuntime",
        "mlserver_huggingface.HuggingFaceRuntime": (
            "inferkit.runtimes.huggingface.HuggingFaceRuntime"
        ),
    }


@pytest.mark.parametrize(
    ("implementation", "files", "reason"),
    [
        (
            "",
            {},
            'No implementation set: add "implementation": "module.Class" to model-settings.json',
        ),
        (
            "EchoModel",
            {},
            "Cannot import 'EchoModel': expected 'module.Class',"
            " dotted Python names (not a file path)",
        ),
        (
            "model.",
            {},
            "Cannot import 'model.': expected 'module.Class',"
            " dotted Python names (not a file path)",
        ),
        (
            "nomodule.M",
            {},
            "Cannot import 'nomodule.M': No module named 'nomodule' in {folder}"
            " or the installed packages",
        ),
        (
            "model.Missing",
            {"model.py": ECHO_MODEL.format(value=1)},
            "Cannot import 'model.Missing': module 'model' has no attribute 'Missing'",
        ),
        (
            "model.VALUE",
            {"model.py": "VALUE = 1\n"},
            "Cannot import 'model.VALUE': 'VALUE' is not a class",
        ),
        (
            "model.M",
            {"model.py": "1 / 0\n"},
            "Cannot import 'model.M': ZeroDivisionError: division by zero",
        ),
        (
            "model.M",
            {"model.py": "from mlserver.grpc import servicers\n"},
            "Cannot import 'model.M': No module named 'mlserver.grpc': inferkit's MLServer"
            " compatibility covers mlserver, mlserver.codecs, mlserver.errors, mlserver.handlers,"
            " mlserver.handlers.custom, mlserver.logging, mlserver.settings, mlserver.types,"
            " mlserver.utils",
        ),
        (
            "model.M",
            {"model.py": "import sklearn.linear_model\n"},
            "Cannot import 'model.M': No module named 'sklearn':"
            " install it with pip install 'inferkit[sklearn]'",
        ),
        (
            "model.M",
            {"model.py": "import helpers_that_are_not_there\n"},
            "Cannot import 'model.M': No module named 'helpers_that_are_not_there'",
        ),
        (
            "mlserver_onnx.OnnxModel",
            {},
            "Cannot import 'mlserver_onnx.OnnxModel': No module named 'mlserver_onnx':"
            " inferkit has built-in equivalents only for mlserver_catboost.CatboostModel,"
            " mlserver_huggingface.HuggingFaceRuntime, mlserver_lightgbm.LightGBMModel,"
            " mlserver_mlflow.MLflowRuntime, mlserver_sklearn.SKLearnModel,"
            " mlserver_xgboost.XGBoostModel",
        ),
    ],
)
def test_import_errors_say_why(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    implementation: str,
    files: dict[str, str],
    reason: str,
) -> None:
    # None in sys.modules makes an import fail whether or not the package is installed.
    for absent in ("mlserver", "sklearn", "mlserver_onnx"):
        monkeypatch.setitem(sys.modules, absent, None)
    folder = tmp_path / "m"
    settings = model_folder(
        folder, {"implementation": implementation, "parameters": {"version": "3"}}, **files
    )
    path_before = list(sys.path)

    with pytest.raises(ModelLoadError) as info:
        resolve_implementation(settings)

    assert info.value.message == reason.format(folder=folder)
    assert (info.value.model, info.value.version) == ("m", "3")
    assert sys.path == path_before
    assert not [name for name in sys.modules if name.startswith("_inferkit_model_")]


@pytest.mark.parametrize(
    "implementation",
    [
        "{outside}/evil.Evil",  # an absolute path outside the model folder: once imported
        "{outside}/evil/__init__.Evil",
        "../outside/evil.Evil",
        "sub/evil.Evil",  # a path, even one inside the folder: names are module names
        "evil.Ev il",
    ],
)
def test_implementation_must_be_a_module_name_not_a_path(
    tmp_path: Path, implementation: str
) -> None:
    outside = tmp_path / "outside"
    marker = tmp_path / "imported"
    code = f"open({str(marker)!r}, 'w').close()\n\nclass Evil:\n    pass\n"
    write(outside / "evil.py", code)
    write(outside / "evil" / "__init__.py", code)
    settings = model_folder(
        tmp_path / "m",
        {"implementation": implementation.format(outside=outside)},
        **{"sub/evil.py": code},
    )

    with pytest.raises(ModelLoadError) as info:
        resolve_implementation(settings)

    assert "expected 'module.Class'" in info.value.message
    assert not marker.exists()  # nothing ran

"""MLServer's implementation names of the runtimes resolve to inferkit's, without importing the
runtimes' libraries (they are imported when a model loads)."""

from __future__ import annotations

import subprocess
import sys

import pytest

from inferkit import ModelSettings
from inferkit.repository import resolve_implementation
from inferkit.runtimes.catboost import CatBoostModel
from inferkit.runtimes.huggingface import HuggingFaceRuntime
from inferkit.runtimes.mlflow import MLflowRuntime


@pytest.mark.parametrize(
    ("mlserver_name", "runtime"),
    [
        ("mlserver_catboost.CatboostModel", CatBoostModel),
        ("mlserver_mlflow.MLflowRuntime", MLflowRuntime),
        ("mlserver_huggingface.HuggingFaceRuntime", HuggingFaceRuntime),
    ],
)
def test_mlservers_name_is_the_inferkit_runtime(mlserver_name: str, runtime: type) -> None:
    assert resolve_implementation(ModelSettings(name="m", implementation=mlserver_name)) is runtime


def test_importing_the_runtimes_imports_none_of_their_libraries() -> None:
    code = (
        "import sys\n"
        "import inferkit.runtimes.onnx, inferkit.runtimes.catboost\n"
        "import inferkit.runtimes.mlflow, inferkit.runtimes.huggingface\n"
        "heavy = {'onnxruntime', 'onnx', 'catboost', 'mlflow', 'transformers', 'torch', 'pandas'}\n"
        "print(sorted(heavy & set(sys.modules)))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=120
    )
    assert result.stdout.strip() == "[]"

"""The model repositories served by inferkit and MLServer, written into a temporary folder.

Both use MLServer's layout and the same ``model-settings.json`` files: the digits models name
MLServer's runtimes (``mlserver_sklearn.SKLearnModel``, ``mlserver_xgboost.XGBoostModel``),
which inferkit maps to its own. Only the ``sum`` model's file differs, by its imports: the same
codec calls (``NumpyCodec.decode_input`` / ``encode_output``) on both, so both do the same work.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

__all__ = ["MODEL_SETTINGS", "SUM_MODEL_SOURCE", "build_artifacts", "write_repository"]

_ARTIFACTS_SCRIPT = Path(__file__).with_name("artifacts.py")

#: The ``sum`` model for each server: the first input summed along its last axis.
SUM_MODEL_SOURCE: Mapping[str, str] = {
    "inferkit": '''\
from inferkit import InferenceRequest, InferenceResponse, Model
from inferkit.codecs import NumpyCodec


class SumModel(Model):
    """Sums the first input along its last axis."""

    async def predict(self, payload: InferenceRequest) -> InferenceResponse:
        total = NumpyCodec.decode_input(payload.inputs[0]).sum(axis=-1)
        return InferenceResponse(
            model_name=self.name, outputs=[NumpyCodec.encode_output("total", total)]
        )
''',
    "mlserver": '''\
from mlserver import MLModel
from mlserver.codecs import NumpyCodec
from mlserver.types import InferenceRequest, InferenceResponse


class SumModel(MLModel):
    """Sums the first input along its last axis."""

    async def predict(self, payload: InferenceRequest) -> InferenceResponse:
        total = NumpyCodec.decode_input(payload.inputs[0]).sum(axis=-1)
        return InferenceResponse(
            model_name=self.name, outputs=[NumpyCodec.encode_output("total", total)]
        )
''',
}

#: ``model-settings.json`` of each model, the same for both servers.
MODEL_SETTINGS: Mapping[str, Mapping[str, Any]] = {
    "sum": {"name": "sum", "implementation": "model.SumModel"},
    "digits-svc": {
        "name": "digits-svc",
        "implementation": "mlserver_sklearn.SKLearnModel",
        "parameters": {"uri": "./model.joblib"},
    },
    "digits-xgb": {
        "name": "digits-xgb",
        "implementation": "mlserver_xgboost.XGBoostModel",
        "parameters": {"uri": "./model.json"},
    },
}


def build_artifacts(python: str, out: Path, log: Path) -> dict[str, Any]:
    """Train and save the digits models with ``python``; returns its ``artifacts.json``.

    A model that could not be built maps to ``{"error": reason}``.
    """
    out.mkdir(parents=True, exist_ok=True)
    with log.open("w") as stream:
        done = subprocess.run(
            [python, str(_ARTIFACTS_SCRIPT), str(out)],
            stdout=stream,
            stderr=subprocess.STDOUT,
            timeout=600,
            check=False,
        )
    if done.returncode != 0:
        reason = f"building the models failed (exit {done.returncode}, see {log})"
        return {name: {"error": reason} for name in MODEL_SETTINGS if name != "sum"}
    built: dict[str, Any] = json.loads((out / "artifacts.json").read_text())
    return built


def write_repository(
    root: Path,
    flavour: str,
    models: Iterable[str],
    artifacts: Path,
    settings: Mapping[str, Any],
) -> Path:
    """A repository at ``root`` for ``flavour`` ("inferkit" or "mlserver") with ``models``.

    Artefacts are copied from ``artifacts/<model>/``; ``settings`` becomes ``settings.json``.
    """
    root.mkdir(parents=True, exist_ok=True)
    (root / "settings.json").write_text(json.dumps(settings, indent=2))
    for name in models:
        folder = root / name
        if name == "sum":
            folder.mkdir(exist_ok=True)
            (folder / "model.py").write_text(SUM_MODEL_SOURCE[flavour])
        else:
            shutil.copytree(artifacts / name, folder, dirs_exist_ok=True)
        (folder / "model-settings.json").write_text(json.dumps(MODEL_SETTINGS[name], indent=2))
    return root

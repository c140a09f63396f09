"""The model repositories served by inferkit and MLServer, written into a temporary folder.

Both use MLServer's layout and the same ``model-settings.json`` files: the digits models name
MLServer's runtimes (``mlserver_sklearn.SKLearnModel``, ``mlserver_xgboost.XGBoostModel``),
which inferkit maps to its own. Only the ``sum`` model's file differs, by its imports: the same
codec calls (``NumpyCodec.decode_input`` / ``encode_output``) on both, so both do the same work.

The adaptive batching models, ``batch-on`` and ``batch-off``, are one file written for MLServer
(``from mlserver import MLModel``), served unchanged by both: MLServer runs it as it is, inferkit
through its ``mlserver`` compatibility (``inferkit.compat``). Each call busy-waits a fixed 5 ms
plus 20 us per row, holding the CPU as real compute does; the two differ only in their
``model-settings.json``: ``batch-on`` asks for adaptive batching (``max_batch_size`` 32,
``max_batch_time`` 10 ms), ``batch-off`` does not.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

__all__ = [
    "BATCH_MODEL_SOURCE",
    "FIXED_COST_S",
    "MAX_BATCH_SIZE",
    "MAX_BATCH_TIME_S",
    "MODEL_SETTINGS",
    "PER_ROW_COST_S",
    "SOURCE_MODELS",
    "SUM_MODEL_SOURCE",
    "build_artifacts",
    "model_source",
    "write_repository",
]

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

#: What one call of the batching models costs: a fixed part, and a part per row of the batch.
FIXED_COST_S = 0.005
PER_ROW_COST_S = 20e-6
#: ``batch-on``'s adaptive batching settings.
MAX_BATCH_SIZE = 32
MAX_BATCH_TIME_S = 0.01

#: The ``batch-on`` / ``batch-off`` model, the same file for both servers: the input doubled,
#: one output row per input row (adaptive batching splits a batch's answer back by rows).
BATCH_MODEL_SOURCE = f'''\
import time

from mlserver import MLModel
from mlserver.codecs import NumpyCodec
from mlserver.types import InferenceRequest, InferenceResponse

#: Seconds of compute per call, and per row of the call's input.
FIXED_COST_S = {FIXED_COST_S!r}
PER_ROW_COST_S = {PER_ROW_COST_S!r}


def busy_wait(seconds: float) -> None:
    """Hold the CPU (and the event loop) for ``seconds`` of CPU time, as real compute does; no
    sleep. CPU time, not wall time: on a busy machine the call takes longer, as compute would,
    instead of costing less CPU."""
    end = time.thread_time() + seconds
    while time.thread_time() < end:
        pass


class FixedCostModel(MLModel):
    """Doubles its first input after FIXED_COST_S plus PER_ROW_COST_S per row of compute."""

    async def predict(self, payload: InferenceRequest) -> InferenceResponse:
        rows = NumpyCodec.decode_input(payload.inputs[0])
        busy_wait(FIXED_COST_S + PER_ROW_COST_S * rows.shape[0])
        return InferenceResponse(
            model_name=self.name, outputs=[NumpyCodec.encode_output("y", rows * 2)]
        )
'''

#: The models written from source (no artefact to build), by name: their ``model.py`` for each
#: server flavour.
SOURCE_MODELS: Mapping[str, Mapping[str, str]] = {
    "sum": SUM_MODEL_SOURCE,
    "batch-on": {"inferkit": BATCH_MODEL_SOURCE, "mlserver": BATCH_MODEL_SOURCE},
    "batch-off": {"inferkit": BATCH_MODEL_SOURCE, "mlserver": BATCH_MODEL_SOURCE},
}

#: ``model-settings.json`` of each model, the same for both servers.
MODEL_SETTINGS: Mapping[str, Mapping[str, Any]] = {
    "sum": {"name": "sum", "implementation": "model.SumModel"},
    "batch-on": {
        "name": "batch-on",
        "implementation": "model.FixedCostModel",
        "max_batch_size": MAX_BATCH_SIZE,
        "max_batch_time": MAX_BATCH_TIME_S,
    },
    "batch-off": {"name": "batch-off", "implementation": "model.FixedCostModel"},
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
        return {name: {"error": reason} for name in MODEL_SETTINGS if name not in SOURCE_MODELS}
    built: dict[str, Any] = json.loads((out / "artifacts.json").read_text())
    return built


def model_source(model: str, flavour: str) -> str:
    """The ``model.py`` of source model ``model`` for ``flavour`` ("inferkit" or "mlserver")."""
    return SOURCE_MODELS[model][flavour]


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
        if name in SOURCE_MODELS:
            folder.mkdir(exist_ok=True)
            (folder / "model.py").write_text(model_source(name, flavour))
        else:
            shutil.copytree(artifacts / name, folder, dirs_exist_ok=True)
        (folder / "model-settings.json").write_text(json.dumps(MODEL_SETTINGS[name], indent=2))
    return root

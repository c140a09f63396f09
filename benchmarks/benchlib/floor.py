"""The model libraries alone, no server: ``python floor.py ARTIFACTS_DIR MODEL...``.

Run by the harness with *each* server's interpreter, pinned to the server CPU like the servers.
It imports what the served models need (numpy for ``sum`` and the batching models; joblib,
which unpickles the scikit-learn SVC and so imports scikit-learn; xgboost, which imports
scikit-learn, SciPy and pandas itself) and loads the same artefacts the servers load, from
``ARTIFACTS_DIR/<model>/``, as the servers' runtimes do (``joblib.load``;
``XGBClassifier().load_model`` on the file's bytes). Then it prints one line, ``ready`` and the
models as JSON, and waits until its stdin closes or it is killed. The harness takes the time
from spawn to that line and the RSS at that moment: the *floor* under any server's
start-to-ready time and idle RSS with these models.

Like ``artifacts.py``, it imports nothing from the harness: MLServer's interpreter runs it too.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

#: Models written from source that need numpy only (no artefact to load).
NUMPY_ONLY = ("sum", "batch-on", "batch-off")


def load_models(artifacts: Path, models: list[str]) -> dict[str, Any]:
    """Import the libraries and load each model's artefact; returns the loaded models."""
    import numpy  # the sum model's only library (and every other one's)

    loaded: dict[str, Any] = {}
    for name in models:
        if name in NUMPY_ONLY:
            loaded[name] = numpy.zeros(1)
            continue
        if name == "digits-svc":
            import joblib

            loaded[name] = joblib.load(artifacts / name / "model.joblib")
        elif name == "digits-xgb":
            import xgboost

            model = xgboost.XGBClassifier()
            model.load_model(bytearray((artifacts / name / "model.json").read_bytes()))
            loaded[name] = model
        else:
            raise ValueError(f"no floor loader for model {name!r}")
    return loaded


def main(argv: list[str]) -> None:
    """Load, say ``ready``, hold the models until stdin closes."""
    loaded = load_models(Path(argv[0]), argv[1:])
    print("ready " + json.dumps(list(loaded)), flush=True)
    sys.stdin.read()  # keep the models (and the memory) alive until the harness is done
    del loaded


if __name__ == "__main__":
    main(sys.argv[1:])

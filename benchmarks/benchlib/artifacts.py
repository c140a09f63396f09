"""Train the benchmark's two real models and save them: ``python artifacts.py OUT_DIR``.

Run as a script by *each* server's interpreter (the bench venv for inferkit, MLServer's own venv
for MLServer), so every server loads an artefact pickled by its own scikit-learn and xgboost.
It imports nothing from the harness on purpose. For each model it writes
``OUT_DIR/<model>/model.*`` and a line in ``OUT_DIR/artifacts.json``: the sample input, the
prediction the harness must get back, or the reason the model could not be built.

The models are fixed and deterministic: an RBF SVC (``gamma=0.001``, scikit-learn's digits
example) and a 50-tree XGBoost classifier, both fitted on the 1,797 8x8 digits that ship inside
scikit-learn (no download).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

#: The digit (row of the digits data) that every digits request sends.
SAMPLE_ROW = 1000


def _digits() -> tuple[Any, Any]:
    from sklearn.datasets import load_digits

    data = load_digits()
    return data.data.astype("float32"), data.target


def build_svc(folder: Path) -> dict[str, Any]:
    """The digits SVC, saved with joblib as ``model.joblib``."""
    import joblib
    from sklearn.svm import SVC

    x, y = _digits()
    model = SVC(gamma=0.001).fit(x, y)
    folder.mkdir(parents=True, exist_ok=True)
    joblib.dump(model, folder / "model.joblib")
    sample = x[SAMPLE_ROW : SAMPLE_ROW + 1]
    return {"input": sample.ravel().tolist(), "predict": model.predict(sample).tolist()}


def build_xgboost(folder: Path) -> dict[str, Any]:
    """The digits XGBoost classifier, saved in xgboost's JSON format as ``model.json``."""
    from xgboost import XGBClassifier

    x, y = _digits()
    model = XGBClassifier(n_estimators=50, max_depth=4, random_state=0).fit(x, y)
    folder.mkdir(parents=True, exist_ok=True)
    model.save_model(folder / "model.json")
    sample = x[SAMPLE_ROW : SAMPLE_ROW + 1]
    return {"input": sample.ravel().tolist(), "predict": model.predict(sample).tolist()}


BUILDERS = {"digits-svc": build_svc, "digits-xgb": build_xgboost}


def main(out: Path) -> None:
    """Build every model into ``out``; a model whose library is missing records the reason."""
    results: dict[str, Any] = {}
    for name, build in BUILDERS.items():
        try:
            results[name] = build(out / name)
        except ImportError as exc:
            results[name] = {"error": f"cannot build {name}: {exc}"}
    (out / "artifacts.json").write_text(json.dumps(results))


if __name__ == "__main__":
    main(Path(sys.argv[1]))

"""Train the ``mushroom_xgboost`` model as XGBoost's Getting Started guide does.

A native booster (``xgb.train``: depth 2, eta 1, ``binary:logistic``, 2 rounds) on the generated
mushrooms of ``data.py`` (the seed downloads the real ones; this workplace cannot), saved as
``models/mushroom_xgboost/model.json``.
"""

from __future__ import annotations

import sys
from pathlib import Path

import xgboost as xgb

EXAMPLE = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(EXAMPLE))

import data  # noqa: E402  (lives in the example's folder)


def main() -> None:
    x_train, _, y_train, _ = data.mushrooms()
    train = xgb.DMatrix(data=x_train, label=y_train)
    params = {"max_depth": 2, "eta": 1, "objective": "binary:logistic"}
    booster = xgb.train(params, train, num_boost_round=2)
    target = EXAMPLE / "models" / "mushroom_xgboost" / "model.json"
    target.parent.mkdir(parents=True, exist_ok=True)
    booster.save_model(target)
    print(f"wrote {target}")


if __name__ == "__main__":
    main()

"""Train the ``mnist_sklearn`` model: a support vector classifier on the digits.

As in the scikit-learn example "Recognizing hand-written digits"; writes
``models/mnist_sklearn/model.joblib``.
"""

from __future__ import annotations

import sys
from pathlib import Path

import joblib
from sklearn import svm

EXAMPLE = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(EXAMPLE))

import data  # noqa: E402  (lives in the example's folder)


def main() -> None:
    x_train, _, y_train, _ = data.digits()
    classifier = svm.SVC(gamma=0.001)
    classifier.fit(x_train, y_train)
    target = EXAMPLE / "models" / "mnist_sklearn" / "model.joblib"
    target.parent.mkdir(parents=True, exist_ok=True)
    joblib.dump(classifier, target)
    print(f"wrote {target}")


if __name__ == "__main__":
    main()

"""scikit-learn models saved with joblib or pickle (MLServer's ``mlserver_sklearn.SKLearnModel``).

Outputs: ``predict`` (the default), ``predict_proba`` (classifiers) and ``transform`` (pipelines
and transformers), several at once if the request asks; ``parameters.extra.predict_fn`` changes
the default. A class label array of ints comes back as ``INT64`` of shape ``[N, 1]``, as MLServer
returns it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar

from .base import Runtime

__all__ = ["SKLearnModel"]


class SKLearnModel(Runtime):
    """Serves a scikit-learn estimator or pipeline saved with joblib or pickle."""

    library: ClassVar[str] = "scikit-learn"
    requires: ClassVar[tuple[str, ...]] = ("sklearn", "joblib")
    extra: ClassVar[str] = "sklearn"
    artefact_names: ClassVar[tuple[str, ...]] = ("model.joblib", "model.pickle", "model.pkl")
    supported_outputs: ClassVar[tuple[str, ...]] = ("predict", "predict_proba", "transform")

    def read_artefact(self, path: Path) -> Any:
        import joblib

        return joblib.load(path)

    def describe(self, estimator: Any) -> str:
        # A pipeline can do what its final step can, so name that step (as MLServer does).
        steps = getattr(estimator, "steps", None)
        if isinstance(steps, list) and steps:
            return type(steps[-1][-1]).__name__
        return type(estimator).__name__

"""CatBoost models saved with ``save_model`` (MLServer's ``mlserver_catboost.CatboostModel``).

The artefact is ``model.cbm`` or ``model.bin`` (CatBoost's own binary format). A model trained
with a classification loss (``Logloss``, ``CrossEntropy``, ``MultiClass``,
``MultiClassOneVsAll``) is loaded as a ``CatBoostClassifier``: ``predict`` gives the class labels
(as MLServer's runtime does, which loads every model so) and ``predict_proba`` the probabilities
as ``FP64``. Any other model is a ``CatBoostRegressor``, whose ``predict`` is the prediction as
``FP64``; MLServer cannot serve those.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar

from .base import Runtime

__all__ = ["CatBoostModel"]

#: Loss functions whose models are classifiers (CatBoost's names).
CLASSIFICATION_LOSSES = frozenset({"Logloss", "CrossEntropy", "MultiClass", "MultiClassOneVsAll"})


class CatBoostModel(Runtime):
    """Serves a CatBoost model as a ``CatBoostClassifier`` or ``CatBoostRegressor``."""

    library: ClassVar[str] = "CatBoost"
    requires: ClassVar[tuple[str, ...]] = ("catboost",)
    extra: ClassVar[str] = "catboost"
    artefact_names: ClassVar[tuple[str, ...]] = ("model.cbm", "model.bin")
    supported_outputs: ClassVar[tuple[str, ...]] = ("predict", "predict_proba")

    def read_artefact(self, path: Path) -> Any:
        import catboost

        generic = catboost.CatBoost()
        generic.load_model(str(path))
        loss = str(generic.get_all_params().get("loss_function", "")).split(":")[0]
        # The wrapper class decides what predict means: labels for a classifier; a classifier
        # wrapper on a regression model fails every request, a regressor's on a classifier
        # answers raw scores. So the class follows the loss the model was trained with.
        cls = (
            catboost.CatBoostClassifier
            if loss in CLASSIFICATION_LOSSES
            else catboost.CatBoostRegressor
        )
        model = cls()
        model.load_model(str(path))
        return model

    def feature_count(self, estimator: Any) -> int | None:
        # n_features_in_ is 0 on a loaded model; the feature names are always saved.
        names = getattr(estimator, "feature_names_", None)
        return len(names) if isinstance(names, list) and names else None

"""XGBoost models saved with ``save_model`` (MLServer's ``mlserver_xgboost.XGBoostModel``).

The artefact (``model.bst``, ``model.json`` or ``model.ubj``; the format is read from the content)
is loaded through XGBoost's scikit-learn interface, as MLServer does: a model saved from
``XGBClassifier`` is a classifier (``predict`` gives labels, ``predict_proba`` probabilities as
``FP32``); anything else, including a native ``Booster`` from ``xgb.train``, is a regressor whose
``predict`` is the objective's output (for ``binary:logistic``, the probability) as ``FP32``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar

from ..settings import ModelSettings
from .base import Runtime

__all__ = ["XGBoostModel"]


class XGBoostModel(Runtime):
    """Serves an XGBoost model as an ``XGBRegressor`` or ``XGBClassifier``."""

    library: ClassVar[str] = "XGBoost"
    requires: ClassVar[tuple[str, ...]] = ("xgboost",)
    extra: ClassVar[str] = "xgboost"
    artefact_names: ClassVar[tuple[str, ...]] = ("model.bst", "model.json", "model.ubj")
    supported_outputs: ClassVar[tuple[str, ...]] = ("predict", "predict_proba")
    #: Batches of fewer rows are predicted on one OpenMP thread. Waking the other OpenMP workers
    #: costs more than a few rows take, and once woken they spin on the cores the event loop
    #: needs, which is most of the latency of a one-row request on a busy machine.
    small_batch_rows: ClassVar[int] = 64

    def __init__(self, settings: ModelSettings | None = None) -> None:
        super().__init__(settings)
        #: The loaded model's own ``n_jobs``, used for large batches.
        self._n_jobs: Any = None

    def read_artefact(self, path: Path) -> Any:
        import xgboost

        # Bytes, not the path: XGBoost then detects JSON / UBJSON from the content instead of
        # guessing from the extension (and warning about ``.bst``).
        raw = bytearray(path.read_bytes())
        model: Any = xgboost.XGBRegressor()
        try:
            model.load_model(raw)
        except TypeError:
            # "Loading an estimator with different type": it was saved from XGBClassifier.
            model = xgboost.XGBClassifier()
            model.load_model(raw)
        self._n_jobs = model.n_jobs
        return model

    def compute(self, estimator: Any, names: list[str], features: Any) -> list[Any]:
        # Only the model's own thread runs this, one call at a time, so the estimator's thread
        # count can be switched safely; it changes only when the batch size class does.
        n_jobs = 1 if len(features) < self.small_batch_rows else self._n_jobs
        if estimator.n_jobs != n_jobs:
            estimator.set_params(n_jobs=n_jobs)
        return super().compute(estimator, names, features)

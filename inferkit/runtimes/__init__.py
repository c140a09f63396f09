"""Built-in runtimes: serve a trained artefact without writing a model class.

``"implementation": "inferkit.runtimes.sklearn.SKLearnModel"`` (or MLServer's name,
``mlserver_sklearn.SKLearnModel``) next to a ``model.joblib`` is a complete model. Each runtime
imports its library only when a model loads, so the extras (``inferkit[sklearn]``,
``inferkit[xgboost]``, ...) stay optional:

* :mod:`inferkit.runtimes.sklearn`: :class:`~inferkit.runtimes.sklearn.SKLearnModel`
* :mod:`inferkit.runtimes.xgboost`: :class:`~inferkit.runtimes.xgboost.XGBoostModel`
* :mod:`inferkit.runtimes.lightgbm`: :class:`~inferkit.runtimes.lightgbm.LightGBMModel`
* :mod:`inferkit.runtimes.catboost`: :class:`~inferkit.runtimes.catboost.CatBoostModel`
* :mod:`inferkit.runtimes.huggingface`: :class:`~inferkit.runtimes.huggingface.HuggingFaceRuntime`
* :mod:`inferkit.runtimes.mlflow`: :class:`~inferkit.runtimes.mlflow.MLflowRuntime`
* :mod:`inferkit.runtimes.onnx`: :class:`~inferkit.runtimes.onnx.OnnxModel`

:class:`~inferkit.runtimes.base.Runtime` is their common base, for runtimes of other libraries.
"""

from __future__ import annotations

from .base import Runtime

__all__ = ["Runtime"]

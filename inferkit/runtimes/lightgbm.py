"""LightGBM boosters saved as text (MLServer's ``mlserver_lightgbm.LightGBMModel``).

The artefact is ``model.bst`` or ``model.txt`` (``Booster.save_model``); the one output is
``predict``, the booster's ``predict`` (probabilities for a binary objective) as ``FP64``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar

from .base import Runtime

__all__ = ["LightGBMModel"]


class LightGBMModel(Runtime):
    """Serves a LightGBM ``Booster``."""

    library: ClassVar[str] = "LightGBM"
    requires: ClassVar[tuple[str, ...]] = ("lightgbm",)
    extra: ClassVar[str] = "lightgbm"
    artefact_names: ClassVar[tuple[str, ...]] = ("model.bst", "model.txt")
    supported_outputs: ClassVar[tuple[str, ...]] = ("predict",)

    def read_artefact(self, path: Path) -> Any:
        import lightgbm

        return lightgbm.Booster(model_file=str(path))

    def feature_count(self, estimator: Any) -> int | None:
        count = estimator.num_feature()
        return count if isinstance(count, int) and count > 0 else None

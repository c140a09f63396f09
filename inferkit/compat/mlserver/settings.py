"""``mlserver.settings`` for model files (see :mod:`inferkit.compat`)."""

from __future__ import annotations

from ...settings import CORSSettings, ModelParameters, ModelSettings, Settings

__all__ = ["CORSSettings", "ModelParameters", "ModelSettings", "Settings"]

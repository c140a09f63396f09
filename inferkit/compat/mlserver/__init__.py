"""What ``import mlserver`` gives a model file when MLServer is not installed (see
:mod:`inferkit.compat`): MLServer's top-level names, backed by inferkit."""

from __future__ import annotations

from ... import codecs, types
from ...model import Model as MLModel
from ...settings import ModelParameters, ModelSettings, Settings
from . import errors, settings

__all__ = [
    "MLModel",
    "ModelParameters",
    "ModelSettings",
    "Settings",
    "codecs",
    "errors",
    "settings",
    "types",
]

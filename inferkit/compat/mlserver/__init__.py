"""What ``import mlserver`` gives a model file when MLServer is not installed (see
:mod:`inferkit.compat`): MLServer's top-level names, backed by inferkit."""

from __future__ import annotations

from ... import types
from ...settings import ModelParameters, ModelSettings, Settings
from . import codecs, errors, handlers, logging, settings, utils
from .model import MLModel, log, register

__all__ = [
    "MLModel",
    "ModelParameters",
    "ModelSettings",
    "Settings",
    "codecs",
    "errors",
    "handlers",
    "log",
    "logging",
    "register",
    "settings",
    "types",
    "utils",
]

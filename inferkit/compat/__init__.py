"""Compatibility with model code written for MLServer.

Model files written for MLServer import from ``mlserver`` (``from mlserver import MLModel``,
``from mlserver.codecs import decode_args``). When MLServer itself is not installed, the
repository loader calls :func:`install_mlserver_alias` and retries, so such a file serves
unchanged: ``mlserver``, ``mlserver.codecs``, ``mlserver.types``, ``mlserver.settings``,
``mlserver.errors``, ``mlserver.utils``, ``mlserver.logging`` and ``mlserver.handlers`` then
name the inferkit equivalents in :mod:`inferkit.compat.mlserver`.

This touches ``sys.modules``, which is process-wide by nature (as every import is); it happens
only when a model actually needs it, never when MLServer is installed, and never on
``import inferkit``.
"""

from __future__ import annotations

import importlib
import importlib.util
import logging
import sys

__all__ = ["MLSERVER_MODULES", "install_mlserver_alias"]

log = logging.getLogger("inferkit.compat")

#: The MLServer modules model code imports, and the inferkit modules that stand in for them.
MLSERVER_MODULES = {
    "mlserver": "inferkit.compat.mlserver",
    "mlserver.codecs": "inferkit.compat.mlserver.codecs",
    "mlserver.types": "inferkit.types",
    "mlserver.settings": "inferkit.compat.mlserver.settings",
    "mlserver.errors": "inferkit.compat.mlserver.errors",
    "mlserver.utils": "inferkit.compat.mlserver.utils",
    "mlserver.logging": "inferkit.compat.mlserver.logging",
    "mlserver.handlers": "inferkit.compat.mlserver.handlers",
    "mlserver.handlers.custom": "inferkit.compat.mlserver.handlers",
}


def install_mlserver_alias() -> bool:
    """Make ``import mlserver`` give inferkit's equivalents; False if MLServer is installed."""
    current = sys.modules.get("mlserver")
    if current is not None:
        return current.__name__ == MLSERVER_MODULES["mlserver"]
    if importlib.util.find_spec("mlserver") is not None:
        return False  # the real MLServer is installed: its own classes are used
    for alias, target in MLSERVER_MODULES.items():
        sys.modules[alias] = importlib.import_module(target)
    log.info("Serving a model written for MLServer with inferkit's `mlserver` compatibility")
    return True

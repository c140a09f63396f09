"""``mlserver.logging`` for model files (see :mod:`inferkit.compat`): MLServer's logger."""

from __future__ import annotations

import logging

__all__ = ["logger"]

#: The logger MLServer's own modules and many model files write to, named as in MLServer.
logger = logging.getLogger("mlserver")

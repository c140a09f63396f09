"""Adaptive batching: concurrent requests to one model version run as one ``predict``.

Turned on per model by MLServer's settings, ``max_batch_size`` (rows) and ``max_batch_time``
(seconds); see ``docs/batching.md``. :class:`BatchingModel` wraps a model; the rules that decide
which requests run together and when are in :mod:`inferkit.batching.queue`, and joining and
splitting tensors in :mod:`inferkit.batching.tensors`.
"""

from __future__ import annotations

from .batcher import Batched, BatchingModel, batching_enabled
from .queue import DEFAULT_LEVEL, BatchQueue, Entry

__all__ = ["DEFAULT_LEVEL", "BatchQueue", "Batched", "BatchingModel", "Entry", "batching_enabled"]

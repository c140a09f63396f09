"""Worker processes as a model wrapper: multi-core throughput for Python models.

``parallel_workers`` (server-wide in ``settings.json``, or per model) makes the server put a
:class:`ParallelModel` in the registry instead of the model itself: it starts that many
``spawn``-ed worker processes, each loading the model once, and sends each request to the
least-loaded one. Tensors travel through shared memory, messages as msgpack; see
``docs/parallel.md`` for the design.
"""

from __future__ import annotations

from .proxy import (
    DEFAULT_ARENA_SIZE,
    DEFAULT_INLINE_THRESHOLD,
    DEFAULT_MAX_INFLIGHT,
    ParallelModel,
)

__all__ = [
    "DEFAULT_ARENA_SIZE",
    "DEFAULT_INLINE_THRESHOLD",
    "DEFAULT_MAX_INFLIGHT",
    "ParallelModel",
]

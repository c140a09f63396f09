"""Events the core sends to listeners (``Server.add_listener``).

Frozen Structs, in the spirit of grpclib's ``listen``: metrics, statistics and logs are built by
listening, so the core never imports a metrics library and keeps no collectors of its own.
Don't subclass these; listeners dispatch on the exact type.
"""

from __future__ import annotations

from collections.abc import Callable

import msgspec

__all__ = [
    "Event",
    "InferenceFinished",
    "Listener",
    "ModelFailed",
    "ModelLoaded",
    "ModelUnloaded",
]


class InferenceFinished(msgspec.Struct, frozen=True, kw_only=True, gc=False):
    """One ``Server.infer`` call ended, successfully or not."""

    model: str
    #: The resolved version ("" for an unversioned model), never ``None``.
    version: str
    #: Seconds from the call to the answer, including validation and encoding in the core.
    duration_s: float
    #: Seconds spent inside the model's ``predict``.
    compute_s: float
    ok: bool
    #: The error ``code`` when ``ok`` is false ("INTERNAL" for an unexpected exception).
    code: str = ""
    #: Batch size along the first dimension of the first input (1 when unknown).
    batch_size: int = 1


class ModelLoaded(msgspec.Struct, frozen=True, kw_only=True, gc=False):
    """A model version finished loading and is READY."""

    model: str
    version: str
    duration_s: float


class ModelUnloaded(msgspec.Struct, frozen=True, kw_only=True, gc=False):
    """A model version was unloaded and is UNAVAILABLE."""

    model: str
    version: str


class ModelFailed(msgspec.Struct, frozen=True, kw_only=True, gc=False):
    """A model version failed to import or load and is FAILED with ``reason``."""

    model: str
    version: str
    reason: str


Event = InferenceFinished | ModelLoaded | ModelUnloaded | ModelFailed

#: A listener is a plain callable; it must be quick and must not raise (errors are logged).
Listener = Callable[[Event], None]

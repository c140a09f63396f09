"""``mlserver.errors`` for model files (see :mod:`inferkit.compat`).

MLServer's errors carry an HTTP status; inferkit's errors carry none (each transport maps error
classes to its statuses). So the status is translated here, once, into an inferkit error class:
``MLServerError(msg, status_code=404)`` is also a :class:`~inferkit.errors.ModelNotFound`, which
REST answers 404 with code ``MODEL_NOT_FOUND`` and gRPC answers ``NOT_FOUND``. A status with no
inferkit class of its own falls back by its family: 4xx to ``InvalidRequest`` (400), anything
else to ``InferkitError`` (500).
"""

from __future__ import annotations

import functools
from typing import Any, cast

from ... import errors
from ...errors import InferkitError, InvalidRequest

__all__ = [
    "HTTP_STATUS_ERRORS",
    "CodecNotFound",
    "InferenceError",
    "InvalidModelURI",
    "MLServerError",
    "ModelNotFound",
    "ModelNotReady",
    "ModelParametersMissing",
]

#: HTTP status -> the inferkit error whose REST status it is (a test checks both directions).
HTTP_STATUS_ERRORS: dict[int, type[InferkitError]] = {
    400: errors.InvalidRequest,
    404: errors.ModelNotFound,
    413: errors.PayloadTooLarge,
    500: errors.InferkitError,
    503: errors.QueueFull,
    504: errors.InferenceTimeout,
}


class MLServerError(InferkitError):
    """MLServer's base error; ``status_code`` (default 400, as in MLServer) picks its kind."""

    def __init__(self, msg: str, status_code: int = 400, **_: Any) -> None:
        super().__init__(msg)
        self.status_code = status_code
        kind = _kind(status_code)
        if not isinstance(self, kind):
            # The instance becomes a subclass of both its own class and the inferkit error of
            # that status, so `except MyError`, the transports' MRO tables and `code` all hold.
            self.__class__ = _with_kind(cast(Any, type(self)), cast(Any, kind))


class InvalidModelURI(MLServerError):
    """``parameters.uri`` is missing or names nothing usable (422 in MLServer; 400 here)."""

    def __init__(self, name: str, model_uri: str | None = None) -> None:
        msg = f"Invalid URI specified for model {name}"
        super().__init__(f"{msg} ({model_uri})" if model_uri else msg, 422)


class ModelNotFound(MLServerError, errors.ModelNotFound):
    """No such model (or version): a 404."""

    def __init__(self, name: str, version: str | None = None) -> None:
        which = f"{name} with version {version}" if version is not None else name
        super().__init__(f"Model {which} not found", 404)


class ModelNotReady(MLServerError, errors.ModelNotReady):
    """The model is not ready yet: a 400, as in MLServer."""

    def __init__(self, name: str, version: str | None = None) -> None:
        which = f"{name} with version {version}" if version is not None else name
        super().__init__(f"Model {which} is not ready yet.", 400)


class InferenceError(MLServerError, InvalidRequest):
    """Raised by model code for a request it cannot answer: a 400 with the given message."""

    def __init__(self, msg: str, status_code: int = 400, **_: Any) -> None:
        super().__init__(msg, status_code)


class CodecNotFound(MLServerError, InvalidRequest):
    """No codec for an input or output (a 400)."""

    def __init__(self, name: str | None = None, payload_type: str | None = None) -> None:
        where = f"with name {name}" if name else ""
        if payload_type:
            where = f"with type {payload_type}"
        super().__init__(f"Codec not found for input / output {where}", 400)


class ModelParametersMissing(MLServerError, InvalidRequest):
    """The model's settings have no ``parameters`` (a 400)."""

    def __init__(self, model_name: str) -> None:
        super().__init__(f"Parameters missing for model {model_name}", 400)


def _kind(status_code: int) -> type[InferkitError]:
    found = HTTP_STATUS_ERRORS.get(status_code)
    if found is not None:
        return found
    return InvalidRequest if 400 <= status_code < 500 else InferkitError


@functools.cache
def _with_kind(cls: Any, kind: Any) -> Any:
    # (Called with casts: mypy takes exception classes for unhashable, as instances are.)
    # One derived class per (class, kind), named like the class so logs and reprs read the same.
    namespace = {"__module__": cls.__module__, "__qualname__": cls.__qualname__}
    return type(cls.__name__, (cls, kind), namespace)

"""The one error hierarchy of inferkit.

Errors carry data (which model, which version, where in the request) and a stable
machine-readable ``code``; they never carry transport status codes. Each transport owns exactly
one table mapping these classes to its own statuses, resolved along the class's MRO (see
``inferkit.transports.rest`` and ``inferkit.transports.grpc``), so a new subclass inherits its
parent's status until it is given one of its own.

The message of an :class:`InferkitError` is meant for the client. Anything that is not an
``InferkitError`` is unexpected: transports answer it with a generic message and log it once.
"""

from __future__ import annotations

from typing import ClassVar

__all__ = [
    "InferenceFailed",
    "InferenceTimeout",
    "InferkitError",
    "InvalidRequest",
    "InvalidShape",
    "ModelLoadError",
    "ModelNotFound",
    "ModelNotReady",
    "OutputNotFound",
    "PayloadTooLarge",
    "PermissionDenied",
    "QueueFull",
    "RepositoryReadOnly",
    "RequestTimeout",
    "SettingsError",
    "ShuttingDown",
    "Unauthenticated",
    "UnsupportedDatatype",
]


class InferkitError(Exception):
    """Base of every error inferkit reports to a client.

    ``where`` is a JSON path into the request (``$.inputs[1].data``) and is appended to the
    message the way msgspec does: ``Expected ... - at `$.inputs[1].data` ``.
    """

    #: Stable, machine-readable name of the error, sent to clients as ``code``.
    code: ClassVar[str] = "INTERNAL"
    #: Whether a client may retry the same request later (transports add ``Retry-After``).
    retryable: ClassVar[bool] = False

    def __init__(
        self,
        message: str,
        *,
        model: str | None = None,
        version: str | None = None,
        where: str | None = None,
    ) -> None:
        self.detail = message
        self.model = model
        self.version = version
        self.where = where
        super().__init__(self.message)

    @property
    def message(self) -> str:
        """The client-facing text, with the location when one is known."""
        if self.where:
            return f"{self.detail} - at `{self.where}`"
        return self.detail

    def at(self, where: str) -> InferkitError:
        """Set the location (a JSON path) if none is set yet, and return ``self`` for ``raise``."""
        if self.where is None:
            self.where = where
            self.args = (self.message,)
        return self


class InvalidRequest(InferkitError):
    """The request is malformed or does not match the schema or the model's declared inputs."""

    code = "INVALID_REQUEST"


class InvalidShape(InvalidRequest):
    """A tensor's data does not fit its shape, or the shape does not fit the model."""

    code = "INVALID_SHAPE"


class UnsupportedDatatype(InvalidRequest):
    """A tensor names a datatype that V2 does not define or the codec cannot handle."""

    code = "UNSUPPORTED_DATATYPE"


class OutputNotFound(InvalidRequest):
    """The request asks for an output the model does not produce."""

    code = "OUTPUT_NOT_FOUND"


class PayloadTooLarge(InvalidRequest):
    """The request body or message is larger than the configured limit."""

    code = "PAYLOAD_TOO_LARGE"


class RequestTimeout(InvalidRequest):
    """The request's body did not arrive in time (a client that stalls or trickles it)."""

    code = "REQUEST_TIMEOUT"


class ModelNotFound(InferkitError):
    """No model (or no such version of it) is known to the server."""

    code = "MODEL_NOT_FOUND"


class ModelNotReady(InferkitError):
    """The model exists but is not loaded (unloaded, loading, or failed)."""

    code = "MODEL_NOT_READY"


class ModelLoadError(InferkitError):
    """Importing, constructing or loading a model failed; the reason is in the message."""

    code = "MODEL_LOAD_FAILED"


class InferenceFailed(InferkitError):
    """The model raised an unexpected exception while predicting.

    The message is generic on purpose: the exception's own text may hold secrets or internals,
    so it is logged on the server and never sent to the client.
    """

    code = "INFERENCE_FAILED"


class WorkerLost(InferkitError):
    """The worker process running the request died (killed, out of memory, crashed).

    Retryable: the model's other workers still serve, and the lost one is restarted. The
    request may or may not have run; V2 inference is expected to be idempotent.
    """

    code = "WORKER_LOST"
    retryable = True


class InferenceTimeout(InferkitError):
    """The model did not answer within the configured inference timeout."""

    code = "INFERENCE_TIMEOUT"
    retryable = True


class QueueFull(InferkitError):
    """The server (or a model's workers) cannot take more requests right now."""

    code = "QUEUE_FULL"
    retryable = True


class ShuttingDown(InferkitError):
    """The server is draining and takes no new requests."""

    code = "SHUTTING_DOWN"
    retryable = True


class SettingsError(InferkitError):
    """A settings file or environment variable is invalid; names the file and the field."""

    code = "INVALID_SETTINGS"


class Unauthenticated(InferkitError):
    """Authentication is on and the call presents no token, or one the server does not know."""

    code = "UNAUTHENTICATED"


class PermissionDenied(InferkitError):
    """The caller's token does not allow this call (a data token loading a model)."""

    code = "PERMISSION_DENIED"


class RepositoryReadOnly(PermissionDenied):
    """``repository_read_only`` is set: models are not loaded or unloaded through the API."""

    code = "REPOSITORY_READ_ONLY"

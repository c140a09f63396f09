"""The one table from inferkit's errors to gRPC statuses, and the guard that applies it.

Every RPC handler of the inferkit services runs inside :func:`guard`: an
:class:`~inferkit.errors.InferkitError` ends the call with the status of its class in
:data:`STATUS` (looked up along the MRO, so a subclass inherits its parent's), the error's
message as the status message, and its stable ``code`` in the trailing metadata key
:data:`CODE_KEY`. Anything else is unexpected: it is logged once, here, and answered
``INTERNAL`` with a generic message, never with its text.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Any

import h2.exceptions
from grpclib.const import Status
from grpclib.exceptions import GRPCError, ProtocolError, StreamTerminatedError
from grpclib.server import Stream

from inferkit import errors

__all__ = ["CODE_KEY", "STATUS", "UNEXPECTED", "guard", "send_error", "status_for"]

log = logging.getLogger("inferkit.grpc")

#: Error class -> gRPC status. Looked up along the MRO, so subclasses inherit their parent's.
STATUS: dict[type[Exception], Status] = {
    errors.InferkitError: Status.INTERNAL,
    errors.InvalidRequest: Status.INVALID_ARGUMENT,
    errors.InvalidShape: Status.INVALID_ARGUMENT,
    errors.UnsupportedDatatype: Status.INVALID_ARGUMENT,
    errors.OutputNotFound: Status.INVALID_ARGUMENT,
    # grpcio answers an oversize message with RESOURCE_EXHAUSTED; clients expect the same.
    errors.PayloadTooLarge: Status.RESOURCE_EXHAUSTED,
    # REST's body read timeout; grpclib reads gRPC messages itself, so it never comes here.
    errors.RequestTimeout: Status.DEADLINE_EXCEEDED,
    errors.ModelNotFound: Status.NOT_FOUND,
    # Triton answers a model version that exists but is not READY with UNAVAILABLE.
    errors.ModelNotReady: Status.UNAVAILABLE,
    errors.ModelLoadError: Status.INTERNAL,
    errors.InferenceFailed: Status.INTERNAL,
    errors.WorkerLost: Status.UNAVAILABLE,
    errors.InferenceTimeout: Status.DEADLINE_EXCEEDED,
    errors.QueueFull: Status.UNAVAILABLE,
    errors.ShuttingDown: Status.UNAVAILABLE,
    errors.SettingsError: Status.INTERNAL,
    errors.Unauthenticated: Status.UNAUTHENTICATED,
    errors.PermissionDenied: Status.PERMISSION_DENIED,
    errors.RepositoryReadOnly: Status.PERMISSION_DENIED,
}

#: Trailing metadata key carrying the error's stable ``code`` (``MODEL_NOT_FOUND``, ...).
CODE_KEY = "inferkit-error-code"

#: What a client is told about an unexpected exception.
UNEXPECTED = "Internal server error"

Handler = Callable[[Stream[Any, Any]], Awaitable[None]]


def status_for(exc: BaseException) -> Status:
    """The gRPC status of an error, from :data:`STATUS` along its MRO (INTERNAL if none)."""
    for cls in type(exc).__mro__:
        status = STATUS.get(cls)
        if status is not None:
            return status
    return Status.INTERNAL


async def send_error(stream: Stream[Any, Any], exc: errors.InferkitError) -> None:
    """End the call with the error's status, message and code (as trailing metadata)."""
    try:
        await stream.send_trailing_metadata(
            status=status_for(exc), status_message=exc.message, metadata={CODE_KEY: exc.code}
        )
    except (ProtocolError, h2.exceptions.StreamClosedError):
        pass  # trailers already sent, or the client is gone: nobody is left to tell


def guard(handler: Handler, method: str) -> Handler:
    """``handler`` answering its errors through :data:`STATUS` (``method`` names it in logs)."""

    async def guarded(stream: Stream[Any, Any]) -> None:
        try:
            await handler(stream)
        except errors.InferkitError as exc:
            await send_error(stream, exc)
        except (GRPCError, StreamTerminatedError, ProtocolError):
            raise  # grpclib's own: it answers or logs them itself
        except Exception:
            log.exception("Unexpected error in %s", method)
            await send_error(stream, errors.InferkitError(UNEXPECTED))

    return guarded

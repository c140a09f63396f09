"""Authentication on gRPC: the server's :class:`AccessPolicy` as a grpclib ``RecvRequest`` hook.

:func:`protect` listens for every request a grpclib ``Server`` receives. Calls to inferkit's
services (``inference.*``) are checked against the policy: ``RepositoryModelLoad`` and
``RepositoryModelUnload`` are admin actions, the others data actions, and the token comes from
the ``authorization`` (``Bearer <token>``) or ``x-api-key`` metadata. A refused call is ended
with the status from the one table (UNAUTHENTICATED, PERMISSION_DENIED) and the error's code in
``inferkit-error-code``, before its message is read. Other services on the same grpclib server
are left alone, ``grpc.health.v1.Health`` among them: probes send no token.

The runner's listener calls :func:`protect`; an application that puts
:func:`~inferkit.transports.grpc.create_grpc_service` in its own grpclib server calls it too::

    grpc = grpclib.server.Server(create_grpc_service(server))
    protect(grpc, settings)
"""

from __future__ import annotations

from typing import Any

from grpclib.events import RecvRequest, listen
from grpclib.server import Server as GrpcServer
from grpclib.server import Stream

from inferkit.auth import API_KEY_HEADER, AccessPolicy, Action, token_from_headers
from inferkit.errors import InferkitError
from inferkit.settings import Settings

from .status import send_error

__all__ = ["action_of", "protect"]

#: The services this hook guards: V2's and MLServer's repository service.
_PREFIX = "/inference."
_CREDENTIALS = ("authorization", API_KEY_HEADER)
_ADMIN_METHODS = frozenset({"RepositoryModelLoad", "RepositoryModelUnload"})


def action_of(method_name: str) -> Action:
    """What a call to ``method_name`` (``/package.Service/Method``) does."""
    if not method_name.startswith(_PREFIX):
        return "open"
    return "admin" if method_name.rsplit("/", 1)[-1] in _ADMIN_METHODS else "data"


def protect(grpc: GrpcServer, settings: Settings) -> AccessPolicy:
    """Check the calls ``grpc`` receives for inferkit's services against the settings' policy.

    Installs nothing when the policy cannot refuse anything (authentication off and the
    repository writable). Returns the policy.
    """
    policy = AccessPolicy.from_settings(settings)
    if not policy.needed:
        return policy

    async def on_request(event: RecvRequest) -> None:
        action = action_of(event.method_name)
        if action == "open":
            return
        metadata = event.metadata
        authorization = metadata.get("authorization") if metadata else None
        api_key = metadata.get(API_KEY_HEADER) if metadata else None
        token = token_from_headers(_text(authorization), _text(api_key))
        try:
            policy.authorize(token, action)
        except InferkitError as exc:
            event.method_func = _refusal(exc)
            return
        if policy.enabled and metadata:
            # The token is the server's credential: the model (its request parameters) does
            # not see it. This metadata object becomes the stream's.
            for key in _CREDENTIALS:
                metadata.popall(key, None)

    listen(grpc, RecvRequest, on_request)
    return policy


def _refusal(exc: InferkitError) -> Any:
    async def refuse(stream: Stream[Any, Any]) -> None:
        await send_error(stream, exc)

    return refuse


def _text(value: Any) -> str | None:
    # ``-bin`` keys carry bytes; a token is text.
    return value if isinstance(value, str) else None

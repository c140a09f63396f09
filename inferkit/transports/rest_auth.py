"""Authentication on REST: an ASGI middleware applying the server's :class:`AccessPolicy`.

Each request is classified by its path (:func:`action_of`): the health probes (and the metrics
route when it is served on the HTTP port) are open, loading and unloading a model is an admin
action, every other path is a data action: inference, metadata, statistics, the repository
index, the API docs and the models' custom routes. The token comes from
``Authorization: Bearer <token>`` or ``X-API-Key``. A refusal is the usual error body with its
status from the one table (401, 403) and, for 401, ``WWW-Authenticate: Bearer`` (RFC 6750).

The middleware sits inside CORS, so browsers' preflight requests (which carry no token) are
answered by CORS first, and it is only installed when the policy can refuse something: with
authentication off, requests do not pass through it at all.
"""

from __future__ import annotations

import re

from starlette.types import ASGIApp, Receive, Scope, Send

from .. import errors
from ..auth import API_KEY_HEADER, AccessPolicy, Action, token_from_headers
from .infer_endpoint import error_parts

__all__ = ["OPEN_PATHS", "RestAuth", "action_of"]

#: Paths anyone may call: Kubernetes' probes and load balancers send no token.
OPEN_PATHS = frozenset({"/v2/health/live", "/v2/health/ready"})

_ADMIN = re.compile(r"/v2/repository/models/[^/]+/(?:load|unload)")
_API_KEY = API_KEY_HEADER.encode()
_CREDENTIALS = frozenset({b"authorization", _API_KEY})


def action_of(path: str, open_paths: frozenset[str] = OPEN_PATHS) -> Action:
    """What a request to ``path`` does (the path without the app's ``root_path``)."""
    if path in open_paths:
        return "open"
    if _ADMIN.fullmatch(path):
        return "admin"
    return "data"


class RestAuth:
    """ASGI middleware: ``policy.authorize`` before the app sees an HTTP request."""

    def __init__(
        self,
        app: ASGIApp,
        *,
        policy: AccessPolicy,
        open_paths: frozenset[str] = OPEN_PATHS,
        drain_limit: int = 1024 * 1024,
    ) -> None:
        self.app = app
        self.policy = policy
        self.open_paths = open_paths
        #: Bytes of a refused request's body read (and dropped) before answering.
        self.drain_limit = drain_limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        action = action_of(_route_path(scope), self.open_paths)
        if action != "open":
            authorization = api_key = None
            for key, value in scope["headers"]:
                if key == b"authorization":
                    authorization = value.decode("latin-1")
                elif key == _API_KEY:
                    api_key = value.decode("latin-1")
            try:
                self.policy.authorize(token_from_headers(authorization, api_key), action)
            except errors.InferkitError as exc:
                await _drain(receive, self.drain_limit)
                await _refuse(exc, authorization is not None or api_key is not None, send)
                return
            if self.policy.enabled:
                # The token is the server's credential: models (their request parameters,
                # custom routes) do not see it.
                headers = [(k, v) for k, v in scope["headers"] if k not in _CREDENTIALS]
                scope = {**scope, "headers": headers}
        await self.app(scope, receive, send)


async def _drain(receive: Receive, limit: int) -> None:
    # Read (and drop) a bounded amount of a refused request's body before answering: closing a
    # socket with unread data makes the kernel send a reset, which can destroy the answer
    # before the client reads it. Past ``limit`` bytes the connection is left to the server.
    drained = 0
    while drained <= limit:
        message = await receive()
        if message["type"] != "http.request":
            return
        drained += len(message.get("body", b""))
        if not message.get("more_body", False):
            return


async def _refuse(exc: errors.InferkitError, had_token: bool, send: Send) -> None:
    status, body, headers = error_parts(exc)
    if isinstance(exc, errors.Unauthenticated):
        challenge = b'Bearer realm="inferkit"'
        if had_token:
            challenge += b', error="invalid_token"'
        headers = [*headers, (b"www-authenticate", challenge)]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


def _route_path(scope: Scope) -> str:
    # Under a Mount (or an ASGI root_path) the path includes the prefix; the routes do not.
    path: str = scope["path"]
    root: str = scope.get("root_path", "")
    return path[len(root) :] if root and path.startswith(root) else path

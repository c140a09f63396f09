"""Custom handlers (``@custom_handler``) on REST: the routes the loaded models declare.

The server's table changes as models load and unload, so the routes are not Starlette routes
fixed at start-up: :class:`CustomRoutes` is the router's fallback, reached when no V2 route
matched, and looks the path up in ``server.custom_routes()`` on each request. A path that a V2
route matches is refused when the model loads (:func:`v2_route_check`).

The handler gets what its signature asks for: the Starlette ``Request`` for a parameter annotated
``Request``, the JSON body for one other parameter (validated against its annotation, so
``payload: list`` refuses an object), each key of the body for several (FastAPI's rule), nothing
for none. Its return value is sent as JSON; a Starlette ``Response`` is sent as it is. Plain
``def`` handlers run in a thread, as FastAPI runs them.
"""

from __future__ import annotations

import inspect
import logging
import typing
from collections.abc import Callable, Sequence
from typing import Any

import msgspec
from starlette.concurrency import run_in_threadpool
from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Match
from starlette.types import ASGIApp, Receive, Scope, Send

from .. import errors
from ..handlers import HandlerRoute
from ..server import Server
from ..types import encode_json
from .infer_endpoint import BodyReader, ClientGone, error_parts, scope_headers

__all__ = ["CustomRoutes", "NoAnswer", "v2_route_check"]

log = logging.getLogger("inferkit.rest")


class CustomRoutes:
    """An ASGI app serving the server's custom handlers; ``fallback`` answers other paths."""

    def __init__(self, server: Server, reader: BodyReader, fallback: ASGIApp) -> None:
        self.server = server
        self.reader = reader
        self.fallback = fallback

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.fallback(scope, receive, send)
            return
        path, method = _route_path(scope), scope["method"]
        routes = [r for r in self.server.custom_routes() if r.path == path]
        route = next((r for r in routes if r.method == method), None)
        if route is not None:
            response = await self.call(route, Request(scope, receive))
        elif routes:
            allow = ", ".join(sorted(r.method for r in routes))
            response = Response("Method Not Allowed", 405, headers={"Allow": allow})
        else:
            await self.fallback(scope, receive, send)
            return
        await response(scope, receive, send)

    async def call(self, route: HandlerRoute, request: Request) -> Response:
        """Call the handler with what its signature asks for; errors become error answers."""
        try:
            args = await self._arguments(route.func, request)
            if inspect.iscoroutinefunction(route.func):
                result = await route.func(*args)
            else:
                result = await run_in_threadpool(route.func, *args)
            if isinstance(result, Response):
                return result
            return Response(encode_json(result), media_type="application/json")
        except errors.InferkitError as exc:
            return _error(exc)
        except (ClientGone, ClientDisconnect):
            # The client left mid-body (inferkit's reader, or Starlette's Request.body()).
            return NoAnswer()
        except Exception:
            log.exception(
                "Custom handler %s %s of %s failed", route.method, route.path, route.owner
            )
            return _error(errors.InferkitError("Internal server error"))

    async def _arguments(self, func: Callable[..., Any], request: Request) -> list[Any]:
        params = list(inspect.signature(func).parameters.values())
        hints = _hints(func)
        body_params = [p for p in params if not _is_request(hints.get(p.name, p.annotation))]
        body: Any = None
        if body_params:
            raw = await self.reader.read(request.receive, scope_headers(request.scope))
            if not raw.strip():
                raise errors.InvalidRequest("Expected a JSON body")
            single = len(body_params) == 1
            wanted = hints.get(body_params[0].name, Any) if single else dict[str, Any]
            body = _decode(raw, wanted)
        args = []
        for param in params:
            if param not in body_params:
                args.append(request)
            elif len(body_params) == 1:
                args.append(body)
            elif param.name in body:
                args.append(body[param.name])
            else:
                raise errors.InvalidRequest(f"Object missing required field `{param.name}`")
        return args


class NoAnswer(Response):
    """What a handler returns for a client that disconnected: nothing is sent, as nobody is
    left to read it (the REST request metrics count the request as nginx's 499)."""

    def __init__(self) -> None:
        super().__init__(status_code=499)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        return None


def v2_route_check(routes: Sequence[BaseRoute]) -> Callable[[HandlerRoute], str]:
    """A route check for :meth:`Server.add_route_check`: refuse paths the V2 routes serve."""

    def check(route: HandlerRoute) -> str:
        scope = {"type": "http", "path": route.path, "method": route.method, "root_path": ""}
        for own in routes:
            if own.matches(scope)[0] is not Match.NONE:
                return f"{route.path} is a route of the REST app (V2, docs or metrics)"
        return ""

    return check


def _route_path(scope: Scope) -> str:
    # Under a Mount (or an ASGI root_path) the path includes the prefix; routes exclude it.
    path: str = scope["path"]
    root: str = scope.get("root_path", "")
    return path[len(root) :] if root and path.startswith(root) else path


def _hints(func: Callable[..., Any]) -> dict[str, Any]:
    try:
        return typing.get_type_hints(func)
    except Exception:  # an annotation naming something the module does not import
        return {}


def _is_request(annotation: Any) -> bool:
    if isinstance(annotation, str):  # unresolved: ``"Request"``, ``"fastapi.Request"``
        return annotation.rpartition(".")[2] == "Request"
    return isinstance(annotation, type) and issubclass(annotation, Request)


def _decode(raw: bytes, wanted: Any) -> Any:
    if wanted is inspect.Parameter.empty or isinstance(wanted, str):
        wanted = Any
    try:
        return msgspec.json.decode(raw, type=wanted)
    except (msgspec.ValidationError, msgspec.DecodeError) as exc:
        raise errors.InvalidRequest(str(exc)) from None
    except RecursionError:  # msgspec recurses into nested arrays and objects
        raise errors.InvalidRequest("Invalid JSON: nested too deeply") from None
    except TypeError:  # an annotation msgspec cannot decode into: take the plain JSON
        return _decode(raw, Any)


def _error(exc: errors.InferkitError) -> Response:
    status, body, headers = error_parts(exc)
    response = Response(body, status)
    response.raw_headers = headers
    return response

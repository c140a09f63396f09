"""The V2 REST transport: ``create_rest_app(server)`` returns a Starlette app.

Handlers only translate: read the body (within the size limit), decode it straight into the
core's Structs with msgspec, call one ``Server`` method, encode the answer. Errors are mapped by
one table (:data:`STATUS`), resolved along the exception's MRO; anything that is not an
``InferkitError`` is logged once and answered with a generic 500, never with its text.

The app owns no event loop and no server: mount it anywhere (``Mount("/ml", app=...)``) and load
the models from the host app's lifespan (``await server.start()`` / ``await server.stop()``), or
let :mod:`inferkit.runner` serve it.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Any

import msgspec
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.middleware.cors import CORSMiddleware
from starlette.middleware.gzip import GZipMiddleware
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route
from starlette.types import ASGIApp, Receive, Scope, Send

from .. import errors
from ..auth import AccessPolicy
from ..logs import escape_for_log
from ..server import Server
from ..settings import Settings
from ..types import RepositoryIndexRequest, encode_json
from .custom_routes import CustomRoutes, NoAnswer, v2_route_check
from .infer_endpoint import (
    STATUS,
    BodyReader,
    ClientGone,
    InferEndpoint,
    StreamEndpoint,
    decode,
    error_parts,
    scope_headers,
    status_for,
)
from .openapi import docs_routes
from .rest_auth import OPEN_PATHS, RestAuth

__all__ = ["STATUS", "create_rest_app", "error_response", "reserve_rest_paths", "status_for"]

log = logging.getLogger("inferkit.rest")

_JSON = "application/json"
#: Marks an app with middleware of its own: no request is passed to an endpoint directly.
_ALWAYS: frozenset[bytes] = frozenset({b"*"})
#: Actions of the unary inference endpoint (``generate`` is MLServer's name for LLMs).
_UNARY = ("infer", "generate")
_MODEL = "/v2/models/{name}"
_VERSIONED = "/v2/models/{name}/versions/{version}"
Handler = Callable[[Request], Awaitable[Response]]


def error_response(exc: errors.InferkitError) -> Response:
    """``{"error": message, "code": CODE}`` with the status from the table."""
    status, body, headers = error_parts(exc)
    response = Response(body, status)
    response.raw_headers = headers
    return response


def _guard(handler: Handler) -> Handler:
    async def guarded(request: Request) -> Response:
        try:
            return await handler(request)
        except errors.InferkitError as exc:
            return error_response(exc)
        except ClientGone:
            return NoAnswer()
        except Exception:
            log.exception(
                "Unexpected error on %s %s", request.method, escape_for_log(request.url.path)
            )
            return error_response(errors.InferkitError("Internal server error"))

    return guarded


def create_rest_app(server: Server, settings: Settings | None = None) -> Starlette:
    """The V2 REST API of ``server`` as a Starlette app (settings default to the server's),
    with the custom handlers of its loaded models.

    Tracing, like the access log and metrics, is the server's: ``server.add_hook(tracer)``
    (:mod:`inferkit.transports.tracing`) traces every transport.
    """
    settings = settings if settings is not None else server.settings
    api = _Api(server, settings)
    app = _RestApp(routes=api.routes(), middleware=_middleware(settings))
    # The models' custom handlers (``@custom_handler``) come and go with the models: the
    # router tries them when no V2 route matched, and a model may not take a V2 route's path.
    app.router.default = CustomRoutes(server, api.reader, app.router.default)
    server.add_route_check(v2_route_check(app.routes))
    return app


class _RestApp(Starlette):
    """Starlette, with ``infer`` requests handed straight to their endpoint when nothing
    between would touch them.

    Starlette's error and exception middleware, router and route cost a small request about
    as much CPU as decoding and encoding it; the ``infer`` endpoint catches its own errors
    and needs none of them. So a POST to an ``infer`` path goes to the endpoint directly when
    every middleware of the app is one of ours that would pass it through untouched (gzip
    without ``Accept-Encoding: gzip``, CORS without ``Origin``). Middleware added by an
    embedding app, or a mount under a ``root_path``, takes the ordinary route.
    """

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        # The router's own routes of the unary endpoint, by the path's tail: ``infer`` for
        # ``/v2/models/{name}/infer``, ``versions/infer`` for the versioned path.
        tails = {f"{_MODEL}/{action}": action for action in _UNARY}
        tails.update({f"{_VERSIONED}/{action}": f"versions/{action}" for action in _UNARY})
        self._direct = {
            tails[route.path]: route
            for route in self.router.routes
            if isinstance(route, Route) and route.path in tails
        }
        # The header names our middlewares act on, found at the first request (when no
        # middleware can be added any more); _ALWAYS when other middleware is there.
        self._acting: frozenset[bytes] | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["method"] == "POST" and not scope.get("root_path"):
            target = self._target(scope)
            if target is not None:
                scope["app"] = self
                await target(scope, receive, send)
                return
        await super().__call__(scope, receive, send)

    def _target(self, scope: Scope) -> ASGIApp | None:
        parts = scope["path"].split("/")
        if len(parts) == 5 and parts[1] == "v2" and parts[2] == "models" and parts[3]:
            key, params = parts[4], {"name": parts[3]}
        elif len(parts) == 7 and parts[1:3] == ["v2", "models"] and parts[4] == "versions":
            if not (parts[3] and parts[5]):
                return None
            key, params = f"versions/{parts[6]}", {"name": parts[3], "version": parts[5]}
        else:
            return None
        route = self._direct.get(key)
        if route is None or not self._untouched(scope):
            return None
        # What the router would have put in the scope (the REST metrics read the route).
        scope["path_params"] = params
        scope["endpoint"] = route.endpoint
        scope["route"] = route
        return route.app

    def _untouched(self, scope: Scope) -> bool:
        """Whether every middleware would pass this request through as it is."""
        if self._acting is None:
            # Our middlewares act on a header each; any other middleware at all (an
            # embedding app's) makes every request take the ordinary route.
            watched: dict[Any, bytes] = {
                _GzipIfAccepted: b"accept-encoding",
                CORSMiddleware: b"origin",
            }
            if all(m.cls in watched for m in self.user_middleware):
                self._acting = frozenset(watched[m.cls] for m in self.user_middleware)
            else:
                self._acting = _ALWAYS
        if self._acting is _ALWAYS:
            return False
        for key, value in scope["headers"]:
            if key in self._acting and (key != b"accept-encoding" or b"gzip" in value):
                return False  # CORS acts on any Origin, gzip on clients that accept it
        return True


def reserve_rest_paths(server: Server, settings: Settings | None = None) -> None:
    """Make a model whose custom handler takes a path of the V2 REST API fail to load.

    :func:`create_rest_app` does this for the models loaded after it; call this before
    ``server.start()`` when the app is made after the models load (the runner does).
    """
    settings = settings if settings is not None else server.settings
    routes = _Api(server, settings).routes()
    if settings.metrics_endpoint and settings.metrics_on_http_port:
        # The runner adds the metrics route to the app later; its path is taken too.
        routes.append(Route(settings.metrics_endpoint, _probe_route, methods=["GET"]))
    server.add_route_check(v2_route_check(routes))


async def _probe_route(request: Request) -> Response:  # a stand-in: only its path is matched
    return Response(status_code=404)


def _middleware(settings: Settings) -> list[Middleware]:
    middleware = []
    cors = settings.cors_settings
    if cors is not None and (cors.allow_origins or cors.allow_origin_regex):
        middleware.append(
            Middleware(
                CORSMiddleware,
                allow_origins=cors.allow_origins,
                allow_origin_regex=cors.allow_origin_regex,
                allow_credentials=cors.allow_credentials,
                allow_methods=cors.allow_methods,
                allow_headers=cors.allow_headers,
                expose_headers=cors.expose_headers,
                max_age=cors.max_age,
            )
        )
    # Inside CORS, whose preflight answers carry no token; off unless it can refuse something.
    policy = AccessPolicy.from_settings(settings)
    if policy.needed:
        open_paths = OPEN_PATHS
        if settings.metrics_endpoint and settings.metrics_on_http_port:
            open_paths |= {settings.metrics_endpoint}  # metrics are open on any port
        middleware.append(
            Middleware(
                RestAuth,
                policy=policy,
                open_paths=open_paths,
                drain_limit=settings.max_request_size,
            )
        )
    if settings.gzip_enabled:
        middleware.append(Middleware(_GzipIfAccepted))
    return middleware


class _GzipIfAccepted:
    """Starlette's GZipMiddleware, skipped for clients that do not accept gzip.

    Most V2 clients and load generators send no ``Accept-Encoding: gzip``; for them the
    request goes straight to the app instead of through GZip's response wrapper.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app
        self.gzip = GZipMiddleware(app, minimum_size=1024)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        # Server-Sent Events are never compressed: gzip would hold events back in its buffer.
        if scope["type"] == "http" and not scope["path"].endswith("_stream"):
            for key, value in scope["headers"]:
                if key == b"accept-encoding" and b"gzip" in value:
                    await self.gzip(scope, receive, send)
                    return
        await self.app(scope, receive, send)


class _Api:
    """The route handlers, bound to one server."""

    def __init__(self, server: Server, settings: Settings) -> None:
        self.server = server
        self.reader = BodyReader(settings.max_request_size, settings.request_body_timeout)
        self.infer = InferEndpoint(server, self.reader)
        self.stream = StreamEndpoint(self.infer)
        self._decode_index = msgspec.json.Decoder(RepositoryIndexRequest).decode

    def routes(self) -> list[BaseRoute]:
        model, versioned = _MODEL, _VERSIONED
        # Inference first: Starlette tries routes in order, so the hot path matches at once.
        # ``generate`` and ``generate_stream`` are MLServer's names (for LLMs) of the same.
        infer = [
            Route(path, endpoint.for_route(path), methods=["POST"])
            for base in (model, versioned)
            for action, endpoint in (
                ("infer", self.infer),
                ("infer_stream", self.stream),
                ("generate", self.infer),
                ("generate_stream", self.stream),
            )
            for path in [f"{base}/{action}"]
        ]
        table: list[tuple[str, Handler, str]] = [
            ("/v2/health/live", self.live, "GET"),
            ("/v2/health/ready", self.ready, "GET"),
            ("/v2", self.metadata, "GET"),
            ("/v2/models/stats", self.stats, "GET"),  # before {name}, which would match "stats"
            (f"{model}/stats", self.stats, "GET"),
            (f"{versioned}/stats", self.stats, "GET"),
            (model, self.model_metadata, "GET"),
            (versioned, self.model_metadata, "GET"),
            (f"{model}/ready", self.model_ready, "GET"),
            (f"{versioned}/ready", self.model_ready, "GET"),
            ("/v2/repository/index", self.index, "POST"),
            ("/v2/repository/models/{name}/load", self.load, "POST"),
            ("/v2/repository/models/{name}/unload", self.unload, "POST"),
        ]
        routes = [Route(path, _guard(h), methods=[method]) for path, h, method in table]
        return [*infer, *routes, *docs_routes()]

    async def live(self, request: Request) -> Response:
        return _probe(await self.server.live())

    async def ready(self, request: Request) -> Response:
        return _probe(await self.server.ready())

    async def metadata(self, request: Request) -> Response:
        return _json(await self.server.metadata())

    async def model_metadata(self, request: Request) -> Response:
        name, version = _model(request)
        return _json(await self.server.model_metadata(name, version))

    async def model_ready(self, request: Request) -> Response:
        name, version = _model(request)
        return _probe(await self.server.model_ready(name, version))

    async def stats(self, request: Request) -> Response:
        params = request.path_params
        return _json(await self.server.model_statistics(params.get("name"), params.get("version")))

    async def index(self, request: Request) -> Response:
        body = await self.reader.read(request.receive, scope_headers(request.scope))
        query = decode(self._decode_index, body) if body.strip() else None
        items = await self.server.index(query.ready if query else None, rescan=True)
        return _json(items)

    async def load(self, request: Request) -> Response:
        await self.server.load(request.path_params["name"])
        return Response(status_code=200)

    async def unload(self, request: Request) -> Response:
        await self.server.unload(request.path_params["name"])
        return Response(status_code=200)


def _model(request: Request) -> tuple[str, str | None]:
    params = request.path_params
    return params["name"], params.get("version")


def _probe(ok: bool) -> Response:
    # V2 health and readiness: 200 when true, 400 otherwise, no body needed.
    return Response(status_code=200 if ok else 400)


def _json(obj: Any) -> Response:
    return Response(encode_json(obj), media_type=_JSON)

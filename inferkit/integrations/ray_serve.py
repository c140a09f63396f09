"""Serving a model repository with Ray Serve: each replica is one inferkit server.

Ray Serve runs the replicas and its HTTP proxy routes requests to them; inside each replica,
inferkit's V2 REST app (:func:`inferkit.runner.http_app`, the same app ``inferkit start``
serves) answers them. The app and its :class:`~inferkit.server.Server` are built in the replica
(Ray's ``__serve_build_asgi_app__`` hook), so what Ray pickles and ships is the repository path
and a few settings, never a model or a server. The models load in the app's lifespan, as Ray
starts each replica, and unload when it stops it; Ray's health check asks the server whether it
is ready.

From the command line (``pip install 'inferkit[ray]'``)::

    serve run inferkit.integrations.ray_serve:app_builder repository=./models num_replicas=2

or from Python::

    from ray import serve
    from inferkit.integrations.ray_serve import deployment

    serve.run(deployment(num_replicas=2).bind("/srv/models"), route_prefix="/")

Only REST goes through Ray: Ray's gRPC proxy takes grpcio services, and inferkit's gRPC
service is grpclib's (``docs/deploy.md``).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import msgspec

from ..errors import SettingsError
from ..server import Server
from ..settings import Settings
from ..settings_loader import load_settings

if TYPE_CHECKING:
    from ray.serve import Application, Deployment

__all__ = ["InferkitReplica", "app_builder", "deployment"]

log = logging.getLogger("inferkit.ray_serve")

#: The deployment's name in Ray Serve (``serve status``, the replicas' actor names).
DEPLOYMENT_NAME = "inferkit"


class InferkitReplica:
    """One Ray Serve replica serving the model repository at ``repository`` over V2 REST.

    ``settings`` overrides fields of the repository's ``settings.json`` and the ``INFERKIT_*``
    / ``MLSERVER_*`` environment (``{"parallel_workers": 0}``); the ports are Ray's concern and
    are not used. Use :func:`deployment` to get the Ray Serve deployment of this class.
    """

    def __init__(self, repository: str, settings: Mapping[str, Any] | None = None) -> None:
        self.repository = repository
        self.overrides = dict(settings or {})
        #: The replica's server, once Ray has asked for the app.
        self.server: Server | None = None

    def __serve_build_asgi_app__(self) -> Any:
        """The replica's ASGI app: inferkit's HTTP app, loading the models in its lifespan.

        Ray calls this once in the replica, after ``__init__``, then runs the lifespan.
        """
        from ..repository import ModelRepository
        from ..runner import http_app
        from ..transports.rest import reserve_rest_paths

        environ = dict(os.environ)
        settings = _with_overrides(load_settings(self.repository, environ), self.overrides)
        server = Server(
            settings=settings,
            repository=ModelRepository(settings.model_repository_root, environ),
        )
        reserve_rest_paths(server, settings)
        self.server = server
        return _WithLifespan(http_app(server, settings), server)

    async def check_health(self) -> None:
        """Ray's health check: raise unless the server is ready (V2 readiness).

        Ray replaces a replica whose check keeps failing; it calls this only once the replica
        has started, so after the models' first load.
        """
        if self.server is None or not await self.server.ready():
            raise RuntimeError("inferkit is not ready: starting, stopping or loading a model")


def _with_overrides(settings: Settings, overrides: Mapping[str, Any]) -> Settings:
    """``settings`` with the fields in ``overrides`` replaced, checked as a settings file is."""
    fields = {field.name for field in msgspec.structs.fields(Settings)}
    unknown = sorted(set(overrides) - fields)
    if unknown:
        raise SettingsError(f"Invalid settings for the Ray Serve deployment: unknown {unknown}")
    merged = {**msgspec.to_builtins(settings), **overrides}
    try:
        return msgspec.convert(merged, Settings, strict=False)
    except msgspec.ValidationError as exc:
        raise SettingsError(f"Invalid settings for the Ray Serve deployment: {exc}") from exc


class _WithLifespan:
    """An ASGI app whose lifespan starts and stops ``server``; other scopes go to ``app``."""

    def __init__(self, app: Any, server: Server) -> None:
        self.app = app
        self.server = server

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "lifespan":
            await self.app(scope, receive, send)
            return
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                try:
                    await self.server.start()
                except Exception:
                    # Ray reports the failed start and retries the replica; say why here.
                    log.exception("inferkit could not start")
                    await send({"type": "lifespan.startup.failed", "message": "see the log"})
                    return
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                try:
                    await self.server.stop()
                except Exception:
                    log.exception("inferkit could not stop cleanly")
                    await send({"type": "lifespan.shutdown.failed", "message": "see the log"})
                    return
                await send({"type": "lifespan.shutdown.complete"})
                return


def deployment(**options: Any) -> Deployment:
    """The Ray Serve deployment of :class:`InferkitReplica`; ``options`` are
    ``serve.deployment``'s (``num_replicas``, ``ray_actor_options``, ...).

    Bind it to the repository path (and optionally settings overrides) to get an application:
    ``deployment(num_replicas=2).bind("/srv/models")``.
    """
    try:
        from ray import serve
    except ImportError as exc:  # pragma: no cover - the extra is in the test environment
        raise ImportError("Ray Serve is not installed: pip install 'inferkit[ray]'") from exc
    options.setdefault("name", DEPLOYMENT_NAME)
    ingress = serve.ingress()(InferkitReplica)
    made: Deployment = serve.deployment(**options)(ingress)
    return made


def app_builder(args: Mapping[str, str]) -> Application:
    """The application ``serve run inferkit.integrations.ray_serve:app_builder`` builds.

    ``args`` are the command's ``key=value`` words: ``repository`` (required: the model
    repository folder as each replica sees it), ``num_replicas`` (default 1) and ``num_cpus``
    (CPUs Ray reserves for each replica, default 1).
    """
    unknown = set(args) - {"repository", "num_replicas", "num_cpus"}
    if "repository" not in args or unknown:
        raise ValueError(
            "inferkit's Ray Serve app takes repository=PATH, and optionally num_replicas=N"
            " and num_cpus=N" + (f"; unknown: {', '.join(sorted(unknown))}" if unknown else "")
        )
    made = deployment(
        num_replicas=int(args.get("num_replicas", "1")),
        ray_actor_options={"num_cpus": float(args.get("num_cpus", "1"))},
    )
    return made.bind(os.path.abspath(args["repository"]))

"""inferkit embedded in a user's own Starlette service, served by uvicorn: ``python embedded.py
REPOSITORY --port P``.

What a team with an existing ASGI service does instead of running ``inferkit start``: build a
``Server`` on the model repository, mount inferkit's REST app in its own app, load the models
from the host app's lifespan (``await server.start()`` / ``await server.stop()``) and serve the
whole thing with uvicorn (uvloop, httptools, one worker: ``bare.serve_uvicorn``).

The mounted app is ``inferkit.runner.http_app``, the one ``inferkit start`` serves on its HTTP
port (the REST API with its request metrics). Settings
and logging come from the repository's ``settings.json`` as for ``inferkit start``. Only REST:
no gRPC listener and no separate metrics port.
"""

from __future__ import annotations

import argparse
import contextlib
import os
from collections.abc import AsyncIterator, Sequence
from pathlib import Path

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import BaseRoute, Mount, Route

from inferkit.logs import configure_logging
from inferkit.repository import ModelRepository
from inferkit.runner import http_app
from inferkit.server import Server
from inferkit.settings_loader import load_settings

if __package__:
    from .bare import serve_uvicorn
else:  # run as a script, beside bare.py
    from bare import serve_uvicorn

__all__ = ["embedded_app", "main"]


async def _service_health(request: Request) -> Response:
    return PlainTextResponse("ok")


def embedded_app(folder: Path) -> Starlette:
    """A user's service: its own route, and inferkit's REST app on ``folder`` mounted at ``/``."""
    environ = dict(os.environ)
    settings = load_settings(folder, environ)
    configure_logging(settings)
    server = Server(
        settings=settings, repository=ModelRepository(settings.model_repository_root, environ)
    )

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        await server.start()
        try:
            yield
        finally:
            await server.stop()

    # The service's own routes come first; everything else goes to inferkit.
    routes: list[BaseRoute] = [
        Route("/service/health", _service_health),
        Mount("/", app=http_app(server)),
    ]
    return Starlette(routes=routes, lifespan=lifespan)


def main(argv: Sequence[str] | None = None) -> None:
    """Serve the repository's models, embedded, on 127.0.0.1 until SIGTERM/SIGINT."""
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("repository", type=Path)
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args(argv)
    serve_uvicorn(embedded_app(args.repository), args.port)


if __name__ == "__main__":
    main()

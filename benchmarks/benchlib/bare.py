"""The bare-framework servers the results are compared with: ``python bare.py KIND --port P``.

Both are Starlette, on hypercorn by default, run the way ``inferkit.runner`` runs its REST app
(uvloop when installed, no access log, the same keep-alive), with the V2 infer route shape
``/v2/models/{name}/infer``:

- ``fixed``: reads the whole request body and returns a fixed reply (from ``--replies``, the
  correct answer for each payload, so the harness's answer check passes). No decoding at all: the
  ceiling of our REST stack, for a JSON body as for a binary-extension one (it never looks at
  the bytes, so a 4 MB binary body costs it only the reading).
- ``v2``: a minimal V2 infer path for the ``sum`` model: msgspec decode into a two-Struct schema,
  numpy sum, msgspec encode. What a hand-written endpoint costs, without validation of
  datatypes or shapes, content types, versions, errors, events or anything else inferkit does.
  JSON only: it does not support the binary extension.

``--server uvicorn`` serves the same app with uvicorn instead (uvloop, httptools, one worker,
no access log, the same keep-alive), as ``embedded.py`` serves inferkit: the uvicorn ceiling.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from collections.abc import Callable
from typing import Any

import msgspec
import numpy as np
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

__all__ = ["fixed_app", "main", "minimal_v2_app", "serve_uvicorn"]


class _Input(msgspec.Struct):
    name: str
    shape: list[int]
    datatype: str
    data: list[float]


class _InferRequest(msgspec.Struct):
    inputs: list[_Input]


class _Output(msgspec.Struct):
    name: str
    shape: list[int]
    datatype: str
    data: list[float]


class _InferResponse(msgspec.Struct):
    model_name: str
    outputs: list[_Output]


async def _ok(request: Request) -> Response:
    return Response(status_code=200)


def _probes() -> list[Route]:
    return [Route(path, _ok) for path in ("/v2/health/live", "/v2/health/ready")]


def fixed_app(replies: dict[str, bytes]) -> Starlette:
    """Reads the body, answers ``replies[model]`` (404 for another model)."""

    async def infer(request: Request) -> Response:
        await request.body()
        reply = replies.get(request.path_params["name"])
        if reply is None:
            return Response(status_code=404)
        return Response(reply, media_type="application/json")

    return Starlette(routes=[*_probes(), Route("/v2/models/{name}/infer", infer, methods=["POST"])])


def minimal_v2_app() -> Starlette:
    """Decode, sum along the last axis, encode: the ``sum`` model without inferkit."""
    decoder = msgspec.json.Decoder(_InferRequest)
    encoder = msgspec.json.Encoder()

    async def infer(request: Request) -> Response:
        payload = decoder.decode(await request.body())
        tensor = payload.inputs[0]
        total = np.asarray(tensor.data, dtype=np.float32).reshape(tensor.shape).sum(axis=-1)
        output = _Output("total", list(total.shape), "FP32", total.ravel().tolist())
        body = encoder.encode(_InferResponse(request.path_params["name"], [output]))
        return Response(body, media_type="application/json")

    return Starlette(routes=[*_probes(), Route("/v2/models/{name}/infer", infer, methods=["POST"])])


def _loop_factory() -> Callable[[], asyncio.AbstractEventLoop] | None:
    try:
        import uvloop
    except ImportError:
        return None
    factory: Callable[[], asyncio.AbstractEventLoop] = uvloop.new_event_loop
    return factory


def serve_uvicorn(app: Any, port: int) -> None:
    """Serve ``app`` with uvicorn on 127.0.0.1 until SIGTERM/SIGINT: uvloop, httptools, one
    worker, lifespan on, no access log, keep-alive as ``inferkit.runner``'s."""
    import uvicorn

    config = uvicorn.Config(
        app,
        host="127.0.0.1",
        port=port,
        loop="uvloop",
        http="httptools",
        lifespan="on",
        access_log=False,
        log_level="warning",
        timeout_keep_alive=75,
    )
    uvicorn.Server(config).run()


def main(argv: list[str] | None = None) -> None:
    """Serve the chosen app on 127.0.0.1 until killed."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("kind", choices=["fixed", "v2"])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--replies", help="JSON file: model name -> reply JSON (for fixed)")
    parser.add_argument("--server", choices=["hypercorn", "uvicorn"], default="hypercorn")
    args = parser.parse_args(argv)
    if args.kind == "fixed":
        with open(args.replies, encoding="utf-8") as file:
            replies: dict[str, Any] = json.load(file)
        app = fixed_app({name: json.dumps(reply).encode() for name, reply in replies.items()})
    else:
        app = minimal_v2_app()
    if args.server == "uvicorn":
        serve_uvicorn(app, args.port)
        return
    from hypercorn.asyncio import serve
    from hypercorn.config import Config

    config = Config()
    config.bind = [f"127.0.0.1:{args.port}"]
    config.accesslog = None
    config.keep_alive_timeout = 75  # as inferkit.runner
    coro = serve(app, config)  # type: ignore[arg-type]
    factory = _loop_factory()
    if factory is not None and sys.version_info >= (3, 11):
        with asyncio.Runner(loop_factory=factory) as runner:
            runner.run(coro)
    else:
        asyncio.run(coro)


if __name__ == "__main__":
    main()

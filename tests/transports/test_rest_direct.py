"""``infer`` requests that skip Starlette's middleware and router answer exactly as routed ones,
and only requests that no middleware would touch skip them."""

from __future__ import annotations

from typing import Any

import httpx
import pytest
from starlette.applications import Starlette
from starlette.routing import Mount
from starlette.types import ASGIApp, Receive, Scope, Send
from toymodels import FailingModel, named, sum_model

from inferkit import Server, Settings
from inferkit.settings import CORSSettings
from inferkit.transports.rest import create_rest_app

SUM = {"inputs": [{"name": "x", "shape": [1, 3], "datatype": "FP32", "data": [1, 2, 3]}]}

#: (path, body): answers, errors of every kind, and paths the direct route must refuse to take.
REQUESTS: list[tuple[str, Any]] = [
    ("/v2/models/sum/infer", SUM),
    ("/v2/models/sum/generate", SUM),
    ("/v2/models/sum/versions/v1/infer", SUM),
    ("/v2/models/sum/versions/v2/infer", SUM),  # unknown version
    ("/v2/models/nope/infer", SUM),  # unknown model
    ("/v2/models/failing/infer", SUM),  # the model raises
    ("/v2/models/sum/infer", b"{not json"),
    ("/v2/models/sum/infer", {"inputs": [{"name": "x", "shape": [2], "datatype": "FP32"}]}),
    ("/v2/models/sum/infer_stream", SUM),  # not a direct route: SSE, through the router
    ("/v2/models/sum/versions//infer", SUM),  # empty version: the router's 404
    ("/v2/models//infer", SUM),
    ("/v2/models/sum/ready", SUM),  # POST on a GET route: the router's 405
    ("/v2/models/stats/infer", SUM),
]


class Counting:
    """A middleware of an embedding app: it must see every request, inference included."""

    def __init__(self, app: ASGIApp, seen: list[str]) -> None:
        self.app = app
        self.seen = seen

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            self.seen.append(scope["path"])
        await self.app(scope, receive, send)


async def started(**settings: Any) -> Server:
    server = Server(
        [sum_model(version="v1"), named(FailingModel, "failing")], settings=Settings(**settings)
    )
    await server.start()
    return server


def routed_count(app: Starlette) -> list[int]:
    """Counts the requests that reach Starlette's middleware stack (the ordinary route)."""
    count = [0]
    stack = app.build_middleware_stack()

    async def counted(scope: Scope, receive: Receive, send: Send) -> None:
        count[0] += 1
        await stack(scope, receive, send)

    app.middleware_stack = counted
    return count


def route_recorded(app: ASGIApp) -> tuple[ASGIApp, list[str | None]]:
    """``app``, noting the route template each request was matched to (as the REST metrics
    read it from the scope after the call)."""
    routes: list[str | None] = []

    async def recorded(scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await app(scope, receive, send)
        finally:
            routes.append(getattr(scope.get("route"), "path", None))

    return recorded, routes


async def send(app: ASGIApp, path: str, body: Any, **headers: str) -> httpx.Response:
    transport = httpx.ASGITransport(app=app)
    # httpx asks for gzip by default; most V2 clients (tritonclient, curl, wrk) do not.
    plain = {"accept-encoding": "identity"}
    async with httpx.AsyncClient(
        transport=transport, base_url="http://test", headers=plain
    ) as http:
        if isinstance(body, bytes):
            return await http.post(path, content=body, headers=headers)
        return await http.post(path, json=body, headers=headers)


def comparable(response: httpx.Response) -> tuple[int, dict[str, str], bytes]:
    headers = dict(response.headers)
    headers.pop("server-timing", None)  # durations differ from call to call
    return response.status_code, headers, response.content


@pytest.mark.parametrize(("path", "body"), REQUESTS)
async def test_direct_answers_equal_routed_answers(path: str, body: Any) -> None:
    server = await started()
    direct = create_rest_app(server)
    routed = create_rest_app(server)
    seen: list[str] = []
    routed.add_middleware(Counting, seen=seen)  # any other middleware: the ordinary route
    direct_count = routed_count(direct)
    if isinstance(body, dict):
        body = {**body, "id": "fixed"}  # ids would differ otherwise
    direct_app, direct_routes = route_recorded(direct)
    routed_app, routed_routes = route_recorded(routed)
    answer = await send(direct_app, path, body, **{"x-request-id": "r1"})
    assert comparable(answer) == comparable(await send(routed_app, path, body))
    assert direct_routes == routed_routes  # the metrics' route label
    assert seen == [path]
    took_direct = path.endswith(("/infer", "/generate")) and "//" not in path
    assert direct_count == [0 if took_direct else 1]


async def test_direct_route_is_taken_only_when_no_middleware_would_act() -> None:
    server = await started(cors_settings=CORSSettings(allow_origins=["http://ui.example"]))
    app = create_rest_app(server)
    count = routed_count(app)
    assert (await send(app, "/v2/models/sum/infer", SUM)).status_code == 200
    assert count == [0]
    # CORS acts on requests with an Origin: they take the ordinary route, and get its headers.
    answer = await send(app, "/v2/models/sum/infer", SUM, origin="http://ui.example")
    assert answer.headers["access-control-allow-origin"] == "http://ui.example"
    assert count == [1]
    # So does gzip, for clients that accept it.
    answer = await send(app, "/v2/models/sum/infer", SUM, **{"accept-encoding": "gzip"})
    assert answer.status_code == 200
    assert count == [2]


async def test_mounted_under_a_prefix_takes_the_ordinary_route() -> None:
    server = await started()
    inner = create_rest_app(server)
    count = routed_count(inner)
    host = Starlette(routes=[Mount("/ml", app=inner)])
    answer = await send(host, "/ml/v2/models/sum/infer", SUM)
    assert answer.status_code == 200
    assert answer.json()["outputs"][0]["data"] == [6.0]
    assert count == [1]

"""Custom handlers on REST, in process: arguments by signature, JSON answers, errors, routes
that come and go with the models, and V2 paths refused."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import httpx
import msgspec
import numpy as np
import pytest
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from toymodels import SumModel, named

from inferkit import Server, Settings, custom_handler, errors
from inferkit.transports.rest import create_rest_app


class Point(msgspec.Struct):
    x: int
    y: int


class Handlers(SumModel):
    @custom_handler("/echo")
    async def echo(self, request: Request) -> dict[str, Any]:
        query = request.query_params["q"]
        return {"method": request.method, "body": await request.json(), "q": query}

    @custom_handler("/sum")
    def sum(self, payload: list[int]) -> int:  # a plain def runs in a thread
        return sum(payload)

    @custom_handler("/both")
    async def both(self, request: Request, payload: dict[str, int]) -> dict[str, Any]:
        return {"path": request.url.path, "keys": sorted(payload)}

    @custom_handler("/fields")
    async def fields(self, a: int, b: str) -> str:
        return f"{a}{b}"

    @custom_handler("/info", rest_method="GET")
    async def info(self) -> dict[str, Any]:
        return {"name": self.name, "point": Point(1, 2), "array": np.arange(3)}

    @custom_handler("/text", rest_method="GET")
    async def text(self) -> Response:
        return PlainTextResponse("as it is")

    @custom_handler("/refuse", rest_method="GET")
    async def refuse(self) -> None:
        raise errors.ModelNotFound("No such thing")

    @custom_handler("/crash", rest_method="GET")
    async def crash(self) -> None:
        raise RuntimeError("secret-db-password")


@asynccontextmanager
async def client(*models: Any, **settings: Any) -> AsyncIterator[httpx.AsyncClient]:
    server = Server(models or [named(Handlers, "h")], settings=Settings(**settings))
    app = create_rest_app(server)  # before start, as an embedding app does
    await server.start()
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as http:
        http.server = server  # type: ignore[attr-defined]
        yield http


async def test_a_request_parameter_gets_the_request() -> None:
    async with client() as http:
        answer = await http.post("/echo?q=1", json={"a": [1]})
        assert (answer.status_code, answer.json()) == (
            200,
            {"method": "POST", "body": {"a": [1]}, "q": "1"},
        )


async def test_one_other_parameter_gets_the_json_body_checked_by_its_annotation() -> None:
    async with client() as http:
        answer = await http.post("/sum", json=[1, 2, 3])
        assert (answer.status_code, answer.json()) == (200, 6)
        assert answer.headers["content-type"] == "application/json"
        wrong = await http.post("/sum", json={"a": 1})
        assert (wrong.status_code, wrong.json()) == (
            400,
            {"error": "Expected `array`, got `object`", "code": "INVALID_REQUEST"},
        )
        empty = await http.post("/sum")
        assert (empty.status_code, empty.json()["error"]) == (400, "Expected a JSON body")


async def test_request_and_body_together_and_several_body_fields() -> None:
    async with client() as http:
        answer = await http.post("/both", json={"b": 1, "a": 2})
        assert answer.json() == {"path": "/both", "keys": ["a", "b"]}
        fields = await http.post("/fields", json={"a": 1, "b": "x"})
        assert fields.json() == "1x"
        missing = await http.post("/fields", json={"a": 1})
        assert (missing.status_code, missing.json()["error"]) == (
            400,
            "Object missing required field `b`",
        )


async def test_get_handlers_answer_structs_numpy_and_responses() -> None:
    async with client() as http:
        answer = await http.get("/info")
        assert answer.json() == {"name": "h", "point": {"x": 1, "y": 2}, "array": [0, 1, 2]}
        text = await http.get("/text")
        assert (text.status_code, text.text) == (200, "as it is")


async def test_errors_inferkit_ones_with_their_status_others_generic(
    caplog: pytest.LogCaptureFixture,
) -> None:
    async with client() as http:
        refused = await http.get("/refuse")
        assert (refused.status_code, refused.json()) == (
            404,
            {"error": "No such thing", "code": "MODEL_NOT_FOUND"},
        )
        crash = await http.get("/crash")
        assert (crash.status_code, crash.json()) == (
            500,
            {"error": "Internal server error", "code": "INTERNAL"},
        )
        assert "secret-db-password" not in crash.text
    assert "Custom handler GET /crash of model 'h' failed" in caplog.text
    assert "secret-db-password" in caplog.text  # in the log only


async def test_wrong_method_is_405_and_unknown_paths_stay_404() -> None:
    async with client() as http:
        wrong = await http.get("/sum")
        assert (wrong.status_code, wrong.headers["allow"]) == (405, "POST")
        assert (await http.get("/nothing")).status_code == 404
        assert (await http.get("/v2/health/live")).status_code == 200
        assert (await http.post("/v2/health/live")).status_code == 405


async def test_unload_removes_the_routes_and_load_brings_them_back() -> None:
    async with client() as http:
        assert (await http.get("/info")).status_code == 200
        assert (await http.post("/v2/repository/models/h/unload")).status_code == 200
        assert (await http.get("/info")).status_code == 404
        assert (await http.post("/v2/repository/models/h/load")).status_code == 200
        assert (await http.get("/info")).status_code == 200


class Shadowing(SumModel):
    @custom_handler("/v2/models/{name}/ready", rest_method="GET")
    async def ready_too(self) -> bool:
        return True


class Exact(SumModel):
    @custom_handler("/v2/health/ready", rest_method="POST")
    async def ready_post(self) -> bool:
        return True


@pytest.mark.parametrize(
    ("cls", "route"),
    [(Shadowing, "GET /v2/models/{name}/ready"), (Exact, "POST /v2/health/ready")],
)
async def test_a_v2_path_is_a_load_error(cls: type[SumModel], route: str) -> None:
    # The reason is told to clients with expose_load_errors only.
    async with client(named(cls, "s"), expose_load_errors=True) as http:
        [item] = await http.server.index()  # type: ignore[attr-defined]
        path = route.split()[1]
        assert (item.state, item.reason) == (
            "FAILED",
            f"Custom handler {route} of model 's' cannot be served: "
            f"{path} is a route of the REST app (V2, docs or metrics)",
        )


async def test_mounted_under_a_prefix() -> None:
    from starlette.applications import Starlette
    from starlette.routing import Mount

    server = Server([named(Handlers, "h")])
    await server.start()
    host = Starlette(routes=[Mount("/ml", app=create_rest_app(server))])
    transport = httpx.ASGITransport(app=host)
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as http:
        assert (await http.post("/ml/sum", json=[1, 1])).json() == 2


class OnMetrics(SumModel):
    @custom_handler("/metrics", rest_method="GET")
    async def scrape(self) -> int:
        return 1


async def test_reserved_before_start_with_the_metrics_route_on_the_http_port() -> None:
    from inferkit.transports.rest import reserve_rest_paths

    server = Server(
        [named(OnMetrics, "m")],
        settings=Settings(metrics_on_http_port=True, expose_load_errors=True),
    )
    reserve_rest_paths(server)  # as the runner does: the app is made after the models load
    await server.start()
    [item] = await server.index()
    assert (item.state, item.reason) == (
        "FAILED",
        "Custom handler GET /metrics of model 'm' cannot be served: "
        "/metrics is a route of the REST app (V2, docs or metrics)",
    )

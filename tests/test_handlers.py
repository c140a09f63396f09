"""Custom handlers in the core: the marker, the table of the loaded models, load errors."""

from __future__ import annotations

import pytest
from toymodels import SumModel, named

from inferkit import ModelSettings, Server, Settings, custom_handler
from inferkit.handlers import CustomHandler, HandlerTable, find_handlers

# The tests of why a load is refused read the reason from the index: told to clients only
# with expose_load_errors (else they get the class; tests/test_server.py checks both).
EXPOSED = Settings(expose_load_errors=True)


class Handlers(SumModel):
    @custom_handler("/hello", rest_method="get")
    async def hello(self) -> str:
        return "hi"

    @custom_handler("/total")
    def total(self, payload: list[int]) -> int:
        return sum(payload)

    @property
    def explodes(self) -> int:  # properties are never run while looking for handlers
        raise AssertionError("property read")


def paths(server: Server) -> list[tuple[str, str, str]]:
    return sorted((r.model, r.method, r.path) for r in server.custom_routes())


def test_the_marker_is_data_and_found_bound() -> None:
    model = named(Handlers, "h")
    found = find_handlers(model)
    assert [h for h, _ in found] == [
        CustomHandler(rest_path="/hello", rest_method="GET"),
        CustomHandler(rest_path="/total", rest_method="POST"),
    ]
    assert found[1][1]([1, 2]) == 3  # bound to the instance
    assert [h for h, _ in find_handlers(Handlers)] == [h for h, _ in found]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("/x", "PUT"), "custom_handler: rest_method must be GET or POST, got 'PUT'"),
        (("x",), "custom_handler: rest_path must start with '/', got 'x'"),
    ],
)
def test_bad_markers_are_refused(args: tuple[str, ...], message: str) -> None:
    with pytest.raises(ValueError) as info:
        custom_handler(*args)
    assert str(info.value) == message


async def test_routes_come_with_the_load_and_go_with_the_unload() -> None:
    server = Server([named(Handlers, "h")])
    assert paths(server) == []
    await server.start()
    assert paths(server) == [("h", "GET", "/hello"), ("h", "POST", "/total")]
    await server.load("h")  # a reload replaces its own routes: no clash with itself
    assert paths(server) == [("h", "GET", "/hello"), ("h", "POST", "/total")]
    await server.unload("h")
    assert paths(server) == []


async def test_a_path_taken_by_another_model_fails_the_second_load() -> None:
    server = Server([named(Handlers, "a"), named(Handlers, "b")], settings=EXPOSED)
    await server.start()
    states = {item.name: (item.state, item.reason) for item in await server.index()}
    assert states["a"] == ("READY", "")
    assert states["b"] == (
        "FAILED",
        "Custom handler GET /hello of model 'b' cannot be served: "
        "it is already served by model 'a'",
    )
    assert paths(server) == [("a", "GET", "/hello"), ("a", "POST", "/total")]
    await server.unload("a")
    await server.load("b")  # the path is free again
    assert paths(server) == [("b", "GET", "/hello"), ("b", "POST", "/total")]


async def test_a_refused_load_unloads_what_it_loaded() -> None:
    unloaded = []

    class Recorded(Handlers):
        async def unload(self) -> None:
            unloaded.append(self.name)

    server = Server([named(Handlers, "a"), named(Recorded, "b")])
    await server.start()
    assert unloaded == ["b"]


async def test_a_transport_check_refuses_a_path() -> None:
    server = Server([named(Handlers, "h")], settings=EXPOSED)
    server.add_route_check(lambda route: "mine" if route.path == "/total" else "")
    await server.start()
    [item] = await server.index()
    assert (item.state, item.reason) == (
        "FAILED",
        "Custom handler POST /total of model 'h' cannot be served: mine",
    )
    assert paths(server) == []


def test_the_table_keeps_versions_apart() -> None:
    table = HandlerTable()
    table.attach("m", "1", named(Handlers, "m"))
    with pytest.raises(Exception) as info:
        table.attach("m", "2", named(Handlers, "m"))
    assert str(info.value) == (
        "Custom handler GET /hello of model 'm' version '2' cannot be served: "
        "it is already served by model 'm' version '1'"
    )


async def test_models_in_worker_processes_with_handlers_are_refused(tmp_path: object) -> None:
    from pathlib import Path

    folder = Path(str(tmp_path))
    (folder / "withh.py").write_text(
        "from inferkit import custom_handler\n"
        "from toymodels import SumModel\n"
        "class M(SumModel):\n"
        "    @custom_handler('/x')\n"
        "    def x(self) -> int:\n"
        "        return 1\n"
    )
    settings = ModelSettings(
        name="p", implementation="withh.M", parallel_workers=1, folder=str(folder)
    )
    server = Server([settings], settings=EXPOSED)
    await server.start()
    [item] = await server.index()
    assert (item.state, item.reason) == (
        "FAILED",
        "Custom handlers (POST /x) are not served for models in worker processes "
        "(parallel_workers above 0, or a model environment): set parallel_workers to 0 for "
        "this model",
    )


class Twice(SumModel):
    @custom_handler("/same")
    async def one(self) -> int:
        return 1

    @custom_handler("/same")
    async def two(self) -> int:
        return 2


async def test_one_path_twice_in_a_model_is_a_load_error() -> None:
    server = Server([named(Twice, "t")], settings=EXPOSED)
    await server.start()
    [item] = await server.index()
    assert (item.state, item.reason) == (
        "FAILED",
        "Custom handler POST /same of model 't' cannot be served: one() is served there too",
    )


async def test_a_batching_model_serves_the_handlers_of_the_model_inside() -> None:
    model = named(Handlers, "b", max_batch_size=4, max_batch_time=0.01)
    server = Server([model])
    await server.start()
    [route] = [r for r in server.custom_routes() if r.path == "/total"]
    assert route.func.__self__ is model  # type: ignore[attr-defined]

"""The REST transport in-process, through httpx's ASGI transport (no network)."""

from __future__ import annotations

import gzip
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import httpx
import msgspec
import numpy as np
import pytest
from starlette.applications import Starlette
from starlette.responses import PlainTextResponse
from starlette.routing import Mount, Route
from toymodels import FailingModel, named, sum_model

from inferkit import (
    InferenceRequest,
    InferenceResponse,
    Model,
    ResponseOutput,
    Server,
    Settings,
    errors,
)
from inferkit.codecs import decode_tensor, encode_tensor
from inferkit.settings import CORSSettings
from inferkit.transports.rest import STATUS, create_rest_app

SUM_BODY = {"inputs": [{"name": "x", "shape": [1, 3], "datatype": "FP32", "data": [1, 2, 3]}]}


@asynccontextmanager
async def client(*models: Any, **settings: Any) -> AsyncIterator[httpx.AsyncClient]:
    server = Server(models or [sum_model()], settings=Settings(**settings))
    await server.start()
    transport = httpx.ASGITransport(app=create_rest_app(server))
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as http:
        http.server = server  # type: ignore[attr-defined]
        yield http


def error(response: httpx.Response) -> tuple[int, str, str]:
    body = response.json()
    assert list(body) == ["error", "code"]  # the V2 `error` key first
    return response.status_code, body["code"], body["error"]


async def test_health_and_metadata() -> None:
    async with client(sum_model(version="v1")) as http:
        assert (await http.get("/v2/health/live")).status_code == 200
        assert (await http.get("/v2/health/ready")).status_code == 200
        assert (await http.get("/v2/models/sum/ready")).status_code == 200
        assert (await http.get("/v2/models/sum/versions/v1/ready")).status_code == 200
        meta = (await http.get("/v2")).json()
        assert meta["name"] == "inferkit" and "model_repository" in meta["extensions"]
        assert (await http.get("/v2/models/sum")).json() == {
            "name": "sum",
            "versions": ["v1"],
            "platform": "",
        }
        await http.server.unload("sum")  # type: ignore[attr-defined]
        assert (await http.get("/v2/models/sum/ready")).status_code == 400


async def test_infer_json() -> None:
    async with client() as http:
        response = await http.post("/v2/models/sum/infer", json={**SUM_BODY, "id": "r1"})
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/json"
    assert response.json() == {
        "model_name": "sum",
        "id": "r1",
        "outputs": [{"name": "total", "shape": [1], "datatype": "FP32", "data": [6.0]}],
    }


async def test_versioned_infer() -> None:
    async with client(sum_model(version="v1"), sum_model(version="v2")) as http:
        response = await http.post("/v2/models/sum/versions/v1/infer", json=SUM_BODY)
        assert response.json()["model_version"] == "v1"
        response = await http.post("/v2/models/sum/versions/v3/infer", json=SUM_BODY)
        assert error(response) == (
            404,
            "MODEL_NOT_FOUND",
            "Model 'sum' with version 'v3' not found",
        )


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        (b"{not json", (400, "INVALID_REQUEST", "Invalid JSON: JSON is malformed: ")),
        (
            b'{"inputs": "x"}',
            (400, "INVALID_REQUEST", "Expected `array`, got `str` - at `$.inputs`"),
        ),
        (
            b'{"inputs": [{"name": "x", "shape": [2, 2], "datatype": "FP32", "data": [1]}]}',
            (
                400,
                "INVALID_SHAPE",
                "Expected 4 elements for shape [2, 2], got 1 - at `$.inputs[0].data`",
            ),
        ),
        (
            b'{"inputs": [{"name": "x", "shape": [1], "datatype": "FP99", "data": [1]}]}',
            (400, "UNSUPPORTED_DATATYPE", "Unsupported datatype `FP99`"),
        ),
    ],
)
async def test_bad_requests(body: bytes, expected: tuple[int, str, str]) -> None:
    async with client() as http:
        response = await http.post("/v2/models/sum/infer", content=body)
        status, code, message = error(response)
        assert (status, code) == expected[:2]
        assert message.startswith(expected[2])
        assert (await http.post("/v2/models/sum/infer", json=SUM_BODY)).status_code == 200


async def test_unknown_model() -> None:
    async with client() as http:
        response = await http.post("/v2/models/nope/infer", json=SUM_BODY)
    assert error(response) == (404, "MODEL_NOT_FOUND", "Model 'nope' not found")


async def test_a_model_that_raises_gets_a_generic_500() -> None:
    async with client(named(FailingModel, "bad")) as http:
        response = await http.post("/v2/models/bad/infer", json=SUM_BODY)
    assert error(response) == (
        500,
        "INFERENCE_FAILED",
        "Model 'bad' failed to run inference; see the server log",
    )
    assert "secret" not in response.text


async def test_an_unexpected_error_in_the_server_leaks_nothing() -> None:
    async with client() as http:

        async def broken() -> Any:
            raise KeyError("internal detail")

        http.server.metadata = broken  # type: ignore[attr-defined]
        response = await http.get("/v2")
    assert error(response) == (500, "INTERNAL", "Internal server error")
    assert "internal detail" not in response.text


async def test_body_over_the_limit_is_413_even_without_content_length() -> None:
    async def chunks() -> AsyncIterator[bytes]:
        for _ in range(100):
            yield b" " * 100

    async with client(max_request_size=1000) as http:
        declared = await http.post("/v2/models/sum/infer", content=b" " * 2000)
        streamed = await http.post("/v2/models/sum/infer", content=chunks())
        bomb = await http.post(
            "/v2/models/sum/infer",
            content=gzip.compress(b" " * 100_000),
            headers={"content-encoding": "gzip"},
        )
    for response in (declared, streamed, bomb):
        assert error(response) == (
            413,
            "PAYLOAD_TOO_LARGE",
            "Request body is larger than the limit of 1000 bytes (max_request_size)",
        )


async def test_gzip_both_ways() -> None:
    async with client() as http:
        response = await http.post(
            "/v2/models/sum/infer",
            content=gzip.compress(msgspec.json.encode(SUM_BODY)),
            headers={"content-encoding": "gzip"},
        )
        assert response.json()["outputs"][0]["data"] == [6.0]
        big = {"inputs": [{"name": "x", "shape": [500, 2], "datatype": "FP64", "data": [1] * 1000}]}
        response = await http.post(
            "/v2/models/sum/infer", json=big, headers={"accept-encoding": "gzip"}
        )
        assert response.headers["content-encoding"] == "gzip"
        assert response.json()["outputs"][0]["data"] == [2.0] * 500


async def test_binary_tensor_extension() -> None:
    values = np.arange(6, dtype=np.float32).reshape(2, 3)
    header = msgspec.json.encode(
        {
            "inputs": [
                {
                    "name": "x",
                    "shape": [2, 3],
                    "datatype": "FP32",
                    "parameters": {"binary_data_size": values.nbytes},
                }
            ],
            "outputs": [{"name": "total", "parameters": {"binary_data": True}}],
        }
    )
    async with client() as http:
        response = await http.post(
            "/v2/models/sum/infer",
            content=header + values.tobytes(),
            headers={"Inference-Header-Content-Length": str(len(header))},
        )
    assert response.status_code == 200
    length = int(response.headers["inference-header-content-length"])
    meta = msgspec.json.decode(response.content[:length])
    assert meta["outputs"][0]["parameters"] == {"binary_data_size": 8}
    assert "data" not in meta["outputs"][0]
    assert np.frombuffer(response.content[length:], "<f4").tolist() == [3.0, 12.0]


async def test_binary_inputs_reach_the_model_uncopied_and_read_only() -> None:
    seen: dict[str, Any] = {}

    class Peek(Model):
        async def predict(self, payload: InferenceRequest) -> InferenceResponse:
            data = payload.inputs[0].data
            array = decode_tensor(payload.inputs[0])
            seen.update(kind=type(data), array=array, writable=array.flags.writeable)
            return InferenceResponse(model_name=self.name, outputs=[encode_tensor("o", array)])

    values = np.arange(4, dtype=np.int32)
    tensor = {"name": "x", "shape": [4], "datatype": "INT32"}
    header = msgspec.json.encode(
        {"inputs": [{**tensor, "parameters": {"binary_data_size": values.nbytes}}]}
    )
    async with client(named(Peek, "peek")) as http:
        response = await http.post(
            "/v2/models/peek/infer",
            content=header + values.tobytes(),
            headers={"Inference-Header-Content-Length": str(len(header))},
        )
    assert response.status_code == 200
    assert response.json()["outputs"][0]["data"] == [0, 1, 2, 3]
    # A view of the request body, not a copy of it; numpy reads it in place, read-only.
    assert seen["kind"] is memoryview
    assert seen["array"].tolist() == [0, 1, 2, 3]
    assert seen["writable"] is False


async def test_binary_input_of_the_wrong_size() -> None:
    header = msgspec.json.encode(
        {
            "inputs": [
                {
                    "name": "x",
                    "shape": [2],
                    "datatype": "FP32",
                    "parameters": {"binary_data_size": 8},
                }
            ]
        }
    )
    async with client() as http:
        response = await http.post(
            "/v2/models/sum/infer",
            content=header + b"\0" * 4,
            headers={"Inference-Header-Content-Length": str(len(header))},
        )
    assert error(response) == (
        400,
        "INVALID_REQUEST",
        "Expected 8 bytes of binary data, got 4 - at `$.inputs[0].parameters.binary_data_size`",
    )


async def test_headers_reach_the_model_and_come_back() -> None:
    class Echo(Model):
        async def predict(self, payload: InferenceRequest) -> InferenceResponse:
            seen = (payload.parameters or {})["headers"]["x-tenant"]
            return InferenceResponse(
                model_name=self.name,
                parameters={"headers": {"x-seen": seen}},
                outputs=[encode_tensor("o", np.zeros(1))],
            )

    async with client(named(Echo, "echo")) as http:
        response = await http.post(
            "/v2/models/echo/infer", json=SUM_BODY, headers={"X-Tenant": "t1"}
        )
    assert response.headers["x-seen"] == "t1"
    assert "parameters" not in response.json()


async def test_a_model_may_choose_the_content_type_but_not_the_length() -> None:
    class Typed(Model):
        async def predict(self, payload: InferenceRequest) -> InferenceResponse:
            headers = {"Content-Type": "application/vnd.tenant+json", "Content-Length": "1"}
            return InferenceResponse(
                model_name=self.name,
                parameters={"headers": headers},
                outputs=[encode_tensor("o", np.zeros(1))],
            )

    async with client(named(Typed, "typed")) as http:
        response = await http.post("/v2/models/typed/infer", json=SUM_BODY)
    assert response.status_code == 200
    assert response.headers.get_list("content-type") == ["application/vnd.tenant+json"]
    assert response.headers["content-length"] == str(len(response.content))
    assert response.json()["outputs"][0]["data"] == [0.0]


async def test_a_client_that_goes_away_mid_body_gets_no_answer_and_logs_no_error(
    caplog: pytest.LogCaptureFixture,
) -> None:
    server = Server([sum_model()])
    await server.start()
    app = create_rest_app(server)
    messages = iter(
        [
            {"type": "http.request", "body": b'{"inputs": [', "more_body": True},
            {"type": "http.disconnect"},
        ]
    )
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return next(messages)

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    scope = {
        "type": "http",
        "method": "POST",
        "path": "/v2/models/sum/infer",
        "root_path": "",
        "query_string": b"",
        "headers": [(b"content-type", b"application/json")],
    }
    await app(scope, receive, send)
    assert sent == []
    assert not [r for r in caplog.records if r.levelname == "ERROR"]
    # And the server goes on answering.
    async with client() as http:
        assert (await http.post("/v2/models/sum/infer", json=SUM_BODY)).status_code == 200


async def test_seed_repository_sequence() -> None:
    async with client(
        sum_model("mnist_sklearn", "v1.0.0"), sum_model("mushroom_xgboost", "v2.0.0")
    ) as http:
        index = (await http.post("/v2/repository/index", json={})).json()
        assert sorted((i["name"], i["version"], i["state"], i["reason"]) for i in index) == [
            ("mnist_sklearn", "v1.0.0", "READY", ""),
            ("mushroom_xgboost", "v2.0.0", "READY", ""),
        ]
        assert (await http.post("/v2/repository/models/mushroom_xgboost/unload")).status_code == 200
        index = (await http.post("/v2/repository/index")).json()
        assert {i["name"]: i["state"] for i in index} == {
            "mnist_sklearn": "READY",
            "mushroom_xgboost": "UNAVAILABLE",
        }
        refused = await http.post("/v2/models/mushroom_xgboost/infer", json=SUM_BODY)
        assert error(refused)[:2] == (400, "MODEL_NOT_READY")
        ready = (await http.post("/v2/repository/index", json={"ready": True})).json()
        assert [i["name"] for i in ready] == ["mnist_sklearn"]
        assert (await http.post("/v2/repository/models/mushroom_xgboost/load")).status_code == 200
        index = (await http.post("/v2/repository/index", json={})).json()
        assert {i["state"] for i in index} == {"READY"}
        missing = await http.post("/v2/repository/models/nope/load")
        assert error(missing) == (404, "MODEL_NOT_FOUND", "Model 'nope' not found")


async def test_retryable_errors_carry_retry_after() -> None:
    async with client() as http:
        http.server.begin_shutdown()  # type: ignore[attr-defined]
        response = await http.post("/v2/models/sum/infer", json=SUM_BODY)
    assert error(response) == (503, "SHUTTING_DOWN", "The server is shutting down")
    assert response.headers["retry-after"] == "1"


async def test_cors() -> None:
    cors = CORSSettings(allow_origins=["https://app.example"], allow_methods=["GET", "POST"])
    async with client(cors_settings=cors) as http:
        response = await http.options(
            "/v2/models/sum/infer",
            headers={"Origin": "https://app.example", "Access-Control-Request-Method": "POST"},
        )
    assert response.status_code == 200
    assert response.headers["access-control-allow-origin"] == "https://app.example"


async def test_openapi_and_docs_page() -> None:
    async with client() as http:
        document = (await http.get("/v2/docs/openapi.json")).json()
        page = await http.get("/v2/docs")
        asset = await http.get("/v2/docs/static/swagger-ui-bundle.js")
    assert document["openapi"].startswith("3.")
    infer = document["paths"]["/v2/models/{model_name}/infer"]["post"]
    assert infer["requestBody"]["content"]["application/json"]["schema"] == {
        "$ref": "#/components/schemas/InferenceRequest"
    }
    assert "RequestInput" in document["components"]["schemas"]
    assert "/v2/docs/static/swagger-ui-bundle.js" in page.text
    assert asset.status_code == 200 and len(asset.content) > 100_000


def test_every_error_class_has_a_status() -> None:
    classes = [
        c
        for c in vars(errors).values()
        if isinstance(c, type) and issubclass(c, errors.InferkitError)
    ]
    assert set(classes) <= set(STATUS), set(classes) - set(STATUS)


async def test_embedding_under_a_prefix_with_the_host_lifespan() -> None:
    server = Server([sum_model()])

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        async with server:
            yield

    async def home(request: Any) -> PlainTextResponse:
        return PlainTextResponse("host app")

    host = Starlette(
        routes=[Route("/", home), Mount("/ml", app=create_rest_app(server))], lifespan=lifespan
    )
    async with host.router.lifespan_context(host):
        transport = httpx.ASGITransport(app=host)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as http:
            assert (await http.get("/")).text == "host app"
            assert (await http.get("/ml/v2/health/ready")).status_code == 200
            response = await http.post("/ml/v2/models/sum/infer", json=SUM_BODY)
            assert response.json()["outputs"][0]["data"] == [6.0]
            page = await http.get("/ml/v2/docs")
            assert "/ml/v2/docs/openapi.json" in page.text
    assert [i.state for i in await server.index()] == ["UNAVAILABLE"]  # unloaded on exit


async def test_the_openapi_document_lists_every_route_of_the_app() -> None:
    server = Server([sum_model()])
    app = create_rest_app(server)
    async with client() as http:
        paths = (await http.get("/v2/docs/openapi.json")).json()["paths"]
    routed = {
        (route.path.replace("{name}", "{model_name}").replace("{version}", "{model_version}"), m)
        for route in app.routes
        if isinstance(route, Route) and not route.path.startswith("/v2/docs")
        for m in route.methods or ()
        if m != "HEAD"
    }
    documented = {
        (path, method.upper())
        for path, item in paths.items()
        for method in item
        if method != "parameters"
    }
    assert routed - documented == set()
    stream = paths["/v2/models/{model_name}/generate_stream"]["post"]["responses"]["200"]
    assert list(stream["content"]) == ["text/event-stream"]


async def test_large_json_tensors_decode_as_before() -> None:
    # Past the fast path's threshold (inferkit/transports/json_numbers.py): the model gets the
    # same array from the codec; reading `data` itself, the float64 array of the same floats.
    seen: dict[str, Any] = {}

    class Peek(Model):
        async def predict(self, payload: InferenceRequest) -> InferenceResponse:
            array = decode_tensor(payload.inputs[0])
            seen.update(array=array, data=payload.inputs[1].data)
            return InferenceResponse(
                model_name=self.name,
                outputs=[
                    encode_tensor("total", array.sum(axis=-1)),
                    ResponseOutput(name="echo", shape=[20_000], datatype="FP64", data=seen["data"]),
                ],
            )

    values = np.random.default_rng(0).random(20_000, dtype=np.float32)
    texts = values.tolist()
    body = {
        "inputs": [
            {"name": "x", "shape": [2, 10_000], "datatype": "FP32", "data": texts},
            {"name": "y", "shape": [20_000], "datatype": "FP64", "data": texts},
        ]
    }
    async with client(named(Peek, "peek")) as http:
        response = await http.post("/v2/models/peek/infer", json=body)
        assert response.status_code == 200
        assert seen["array"].dtype == np.float32 and seen["array"].shape == (2, 10_000)
        assert seen["array"].tobytes() == values.tobytes()
        assert type(seen["data"]) is np.ndarray and seen["data"].dtype == np.float64
        assert response.json()["outputs"][1]["data"] == texts  # echoed: the same numbers
        # A count that does not match the shape: the same error, at the same place, as before.
        body["inputs"][0]["shape"] = [2, 9_999]
        response = await http.post("/v2/models/peek/infer", json=body)
    assert error(response) == (
        400,
        "INVALID_SHAPE",
        "Expected 19998 elements for shape [2, 9999], got 20000 - at `$.inputs[0].data`",
    )

"""The V2 behaviour, checked the same way over REST and gRPC (in process, no ports).

Every test takes the ``client`` fixture, parametrised over both transports; what may differ
between them (the status numbering, where an error points on each wire) is spelled out in the
tables below, and everything else must be identical.
"""

from __future__ import annotations

import shutil
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from grpclib.testing import ChannelFor
from samples import ARRAYS
from toymodels import FailingModel, named, sum_model, sum_model_folder
from v2_clients import GrpcClient, RestClient, V2Client, V2Error, as_array

from inferkit import (
    InferenceRequest,
    InferenceResponse,
    Model,
    RequestInput,
    RequestOutput,
    ResponseOutput,
    Server,
)
from inferkit.repository import ModelRepository
from inferkit.transports.grpc import create_grpc_service
from inferkit.transports.rest import create_rest_app


class Echo(Model):
    """Returns every input as an output; answers an ``x-tenant`` header with ``x-seen``."""

    async def predict(self, payload: InferenceRequest) -> InferenceResponse:
        headers = (payload.parameters or {}).get("headers", {})
        seen = {"headers": {"x-seen": headers["x-tenant"]}} if "x-tenant" in headers else None
        return InferenceResponse(
            model_name=self.name,
            parameters=seen,
            outputs=[
                ResponseOutput(name=t.name, shape=t.shape, datatype=t.datatype, data=t.data)
                for t in payload.inputs
            ],
        )


def models() -> list[Model]:
    return [
        named(Echo, "echo"),
        named(Echo, "versioned", "v1"),
        named(Echo, "versioned", "v2"),
        sum_model(),
        named(FailingModel, "boom"),
    ]


@asynccontextmanager
async def connect(server: Server, transport: str) -> AsyncIterator[V2Client]:
    """A client of ``server`` over ``transport`` ("rest" or "grpc"), with the server started."""
    async with server:
        if transport == "rest":
            asgi = httpx.ASGITransport(app=create_rest_app(server))
            async with httpx.AsyncClient(transport=asgi, base_url="http://test") as http:
                yield RestClient(http)
        else:
            async with ChannelFor(create_grpc_service(server)) as channel:
                yield GrpcClient(channel)


@pytest.fixture(params=["rest", "grpc"])
async def client(request: pytest.FixtureRequest) -> AsyncIterator[V2Client]:
    async with connect(Server(models()), request.param) as client:
        yield client


#: The status each transport gives an error code (REST: HTTP; gRPC: grpc Status).
STATUS: dict[str, dict[str, int | str]] = {
    "MODEL_NOT_FOUND": {"rest": 404, "grpc": "NOT_FOUND"},
    "MODEL_NOT_READY": {"rest": 400, "grpc": "UNAVAILABLE"},
    "INVALID_REQUEST": {"rest": 400, "grpc": "INVALID_ARGUMENT"},
    "INVALID_SHAPE": {"rest": 400, "grpc": "INVALID_ARGUMENT"},
    "UNSUPPORTED_DATATYPE": {"rest": 400, "grpc": "INVALID_ARGUMENT"},
    "OUTPUT_NOT_FOUND": {"rest": 400, "grpc": "INVALID_ARGUMENT"},
    "INFERENCE_FAILED": {"rest": 500, "grpc": "INTERNAL"},
}


def check_error(client: V2Client, error: V2Error, code: str, message: str) -> None:
    assert (error.status, error.code, error.message) == (
        STATUS[code][client.transport],
        code,
        message,
    )


def tensor(name: str, array: np.ndarray[Any, Any], datatype: str) -> RequestInput:
    return RequestInput(name=name, shape=list(array.shape), datatype=datatype, data=array)


# -- health and metadata ------------------------------------------------------------------------


async def test_health(client: V2Client) -> None:
    assert await client.live()
    assert await client.ready()
    assert await client.model_ready("echo")
    assert await client.model_ready("versioned", "v1")
    await client.unload("echo")
    assert not await client.model_ready("echo")


async def test_metadata(client: V2Client) -> None:
    meta = await client.server_metadata()
    assert meta.name == "inferkit"
    assert {"model_repository", "statistics"} <= set(meta.extensions)
    versioned = await client.model_metadata("versioned")
    assert (versioned.name, sorted(versioned.versions or []), versioned.platform) == (
        "versioned",
        ["v1", "v2"],
        "",
    )
    assert (await client.model_metadata("versioned", "v2")).name == "versioned"


@pytest.mark.parametrize("call", ["model_ready", "model_metadata"])
async def test_unknown_model_is_not_found(client: V2Client, call: str) -> None:
    with pytest.raises(V2Error) as caught:
        await getattr(client, call)("nope")
    check_error(client, caught.value, "MODEL_NOT_FOUND", "Model 'nope' not found")


# -- inference ----------------------------------------------------------------------------------


@pytest.mark.parametrize("binary", [False, True], ids=["json-or-typed", "binary-or-raw"])
@pytest.mark.parametrize("datatype", sorted(ARRAYS))
async def test_infer_every_datatype(client: V2Client, datatype: str, binary: bool) -> None:
    array = ARRAYS[datatype]
    request = InferenceRequest(id="r-1", inputs=[tensor("x", array, datatype)])
    reply = await client.infer("echo", request, binary=binary)
    response = reply.response
    assert (response.model_name, response.id) == ("echo", "r-1")
    [output] = response.outputs
    assert (output.name, output.datatype, output.shape) == ("x", datatype, list(array.shape))
    got = as_array(output)
    assert got.dtype == array.dtype
    assert got.tolist() == array.tolist()


async def test_versioned_infer(client: V2Client) -> None:
    request = InferenceRequest(inputs=[tensor("x", np.array([7], dtype=np.int32), "INT32")])
    for version in ("v1", "v2"):
        reply = await client.infer("versioned", request, version)
        assert reply.response.model_version == version


async def test_requested_outputs(client: V2Client) -> None:
    request = InferenceRequest(
        inputs=[
            tensor("a", np.array([1], dtype=np.int32), "INT32"),
            tensor("b", np.array([2.5]), "FP64"),
        ],
        outputs=[RequestOutput(name="b")],
    )
    reply = await client.infer("echo", request)
    assert [(o.name, as_array(o).tolist()) for o in reply.response.outputs] == [("b", [2.5])]


async def test_sum(client: V2Client) -> None:
    request = InferenceRequest(
        inputs=[tensor("x", np.array([[1, 2, 3], [4, 5, 6]], dtype=np.float32), "FP32")]
    )
    for binary in (False, True):
        reply = await client.infer("sum", request, binary=binary)
        [total] = reply.response.outputs
        assert (total.name, total.shape, as_array(total).tolist()) == ("total", [2], [6, 15])


async def test_headers_reach_the_model_and_come_back(client: V2Client) -> None:
    request = InferenceRequest(inputs=[tensor("x", np.array([1], dtype=np.int32), "INT32")])
    reply = await client.infer("echo", request, headers={"x-tenant": "t1"})
    assert reply.headers["x-seen"] == "t1"
    assert reply.response.parameters is None


# -- errors -------------------------------------------------------------------------------------

UNSUPPORTED = (
    "Unsupported datatype `FP8`; expected one of BOOL, UINT8, UINT16, UINT32, UINT64, INT8, "
    "INT16, INT32, INT64, FP16, FP32, FP64, BYTES - at `$.inputs[0].datatype`"
)
FP32_3 = InferenceRequest(inputs=[tensor("x", np.array([1, 2, 3], dtype=np.float32), "FP32")])

#: (id, model, request, tamper with the first input on the wire, code, message per transport)
ERRORS: list[tuple[str, str, InferenceRequest, dict[str, Any], str, dict[str, str]]] = [
    (
        "unknown-model",
        "nope",
        FP32_3,
        {},
        "MODEL_NOT_FOUND",
        {"rest": "Model 'nope' not found", "grpc": "Model 'nope' not found"},
    ),
    (
        "bad-shape",
        "sum",
        FP32_3,
        {"shape": [4]},
        "INVALID_SHAPE",
        {
            "rest": "Expected 4 elements for shape [4], got 3 - at `$.inputs[0].data`",
            "grpc": "Expected 4 elements for shape [4], got 3 - at "
            "`$.inputs[0].contents.fp32_contents`",
        },
    ),
    (
        "unsupported-datatype",
        "sum",
        FP32_3,
        {"datatype": "FP8"},
        "UNSUPPORTED_DATATYPE",
        {
            "rest": UNSUPPORTED,
            "grpc": UNSUPPORTED,
        },
    ),
    (
        "unknown-output",
        "sum",
        InferenceRequest(inputs=FP32_3.inputs, outputs=[RequestOutput(name="nope")]),
        {},
        "OUTPUT_NOT_FOUND",
        {
            "rest": "Model 'sum' has no output 'nope'; it produced ['total'] - at "
            "`$.outputs[0].name`",
            "grpc": "Model 'sum' has no output 'nope'; it produced ['total'] - at "
            "`$.outputs[0].name`",
        },
    ),
    (
        "model-raises",
        "boom",
        FP32_3,
        {},
        "INFERENCE_FAILED",
        {
            "rest": "Model 'boom' failed to run inference; see the server log",
            "grpc": "Model 'boom' failed to run inference; see the server log",
        },
    ),
]


@pytest.mark.parametrize(
    ("model", "request_", "tamper", "code", "messages"),
    [row[1:] for row in ERRORS],
    ids=[row[0] for row in ERRORS],
)
async def test_infer_errors(
    client: V2Client,
    model: str,
    request_: InferenceRequest,
    tamper: dict[str, Any],
    code: str,
    messages: dict[str, str],
) -> None:
    with pytest.raises(V2Error) as caught:
        await client.infer(model, request_, tamper=tamper)
    check_error(client, caught.value, code, messages[client.transport])
    assert "secret" not in caught.value.message
    # The server keeps serving.
    assert (await client.infer("sum", FP32_3)).response.outputs[0].name == "total"


async def test_model_not_ready(client: V2Client) -> None:
    await client.unload("sum")
    with pytest.raises(V2Error) as caught:
        await client.infer("sum", FP32_3)
    check_error(client, caught.value, "MODEL_NOT_READY", "Model 'sum' is not ready (UNAVAILABLE)")


# -- repository ---------------------------------------------------------------------------------


async def test_repository_sequence(client: V2Client) -> None:
    def states(items: list[Any]) -> dict[str, str]:
        return {f"{i.name}:{i.version}": i.state for i in items}

    assert set(states(await client.index()).values()) == {"READY"}
    await client.unload("versioned")
    assert states(await client.index()) == {
        "echo:": "READY",
        "versioned:v1": "UNAVAILABLE",
        "versioned:v2": "UNAVAILABLE",
        "sum:": "READY",
        "boom:": "READY",
    }
    assert sorted(states(await client.index(ready=False))) == ["versioned:v1", "versioned:v2"]
    assert sorted(states(await client.index(ready=True))) == ["boom:", "echo:", "sum:"]
    await client.load("versioned")
    assert set(states(await client.index()).values()) == {"READY"}
    with pytest.raises(V2Error) as caught:
        await client.load("nope")
    check_error(client, caught.value, "MODEL_NOT_FOUND", "Model 'nope' not found")


@pytest.mark.parametrize("transport", ["rest", "grpc"])
async def test_the_index_rescans_the_repository_folder(tmp_path: Path, transport: str) -> None:
    sum_model_folder(tmp_path / "first", "first")
    async with connect(Server(repository=ModelRepository(tmp_path)), transport) as client:
        sum_model_folder(tmp_path / "added", "added")
        shutil.rmtree(tmp_path / "first")
        # MLServer lists models added to the folder; a loaded one serves until unloaded.
        assert {i.name: i.state for i in await client.index()} == {
            "added": "UNAVAILABLE",
            "first": "READY",
        }
        await client.unload("first")
        assert [i.name for i in await client.index()] == ["added"]

"""The real ``inferkit start`` over gRPC, with tritonclient.grpc, Triton's grpcio stubs and
grpclib's health client."""

from __future__ import annotations

import queue
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc  # type: ignore[import-untyped, unused-ignore]
import numpy as np
import pytest
import tritonclient.grpc as triton
from grpclib.client import Channel
from grpclib.health.v1.health_grpc import HealthStub
from grpclib.health.v1.health_pb2 import HealthCheckRequest, HealthCheckResponse
from harness import Running, inferkit_start, write_repository
from samples import ARRAYS
from tritonclient.grpc import service_pb2, service_pb2_grpc
from tritonclient.utils import InferenceServerException

pytestmark = pytest.mark.e2e

MODELS: dict[str, dict[str, Any]] = {
    "echo": {"name": "echo", "implementation": "model.Echo"},
    "spare": {"name": "spare", "implementation": "model.Echo"},
    "boom": {"name": "boom", "implementation": "model.Boom"},
    "v1": {"name": "versioned", "implementation": "model.Echo", "parameters": {"version": "v1"}},
    "v2": {"name": "versioned", "implementation": "model.Echo", "parameters": {"version": "v2"}},
    "broken": {"name": "broken", "implementation": "model.DoesNotExist"},
}

LIMIT = 1_000_000


@pytest.fixture(scope="module")
def running(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Running]:
    root = write_repository(tmp_path_factory.mktemp("repo"), MODELS, grpc_max_message_length=LIMIT)
    with inferkit_start(root) as server:
        yield server


@pytest.fixture
def client(running: Running) -> Iterator[triton.InferenceServerClient]:
    client = triton.InferenceServerClient(running.grpc)
    yield client
    client.close()


@pytest.fixture
def stub(running: Running) -> Iterator[service_pb2_grpc.GRPCInferenceServiceStub]:
    """Triton's own generated grpcio stub, for requests tritonclient does not make (typed)."""
    with grpc.insecure_channel(running.grpc) as channel:
        yield service_pb2_grpc.GRPCInferenceServiceStub(channel)


# The InferTensorContents field of each datatype (FP16 has none: raw only).
TYPED = {
    "BOOL": "bool_contents",
    "UINT8": "uint_contents",
    "UINT16": "uint_contents",
    "UINT32": "uint_contents",
    "UINT64": "uint64_contents",
    "INT8": "int_contents",
    "INT16": "int_contents",
    "INT32": "int_contents",
    "INT64": "int64_contents",
    "FP32": "fp32_contents",
    "FP64": "fp64_contents",
    "BYTES": "bytes_contents",
}


def infer_input(name: str, array: np.ndarray[Any, Any], datatype: str) -> triton.InferInput:
    tensor = triton.InferInput(name, list(array.shape), datatype)
    tensor.set_data_from_numpy(array)  # tritonclient.grpc always sends raw_input_contents
    return tensor


@pytest.mark.parametrize("datatype", sorted(ARRAYS))
def test_tritonclient_infer_every_datatype_raw(
    client: triton.InferenceServerClient, datatype: str
) -> None:
    array = ARRAYS[datatype]
    result = client.infer("echo", [infer_input("x", array, datatype)], request_id="req-1")
    got = result.as_numpy("x")
    assert got is not None and got.shape == array.shape and got.dtype == array.dtype
    assert got.tolist() == array.tolist()
    response = result.get_response()
    assert (response.id, response.model_name) == ("req-1", "echo")
    assert len(response.raw_output_contents) == 1  # raw in, raw out


@pytest.mark.parametrize("datatype", sorted(TYPED))
def test_typed_contents_every_datatype(
    stub: service_pb2_grpc.GRPCInferenceServiceStub, datatype: str
) -> None:
    array = ARRAYS[datatype]
    request = service_pb2.ModelInferRequest(model_name="echo")
    tensor = request.inputs.add(name="x", datatype=datatype, shape=list(array.shape))
    getattr(tensor.contents, TYPED[datatype]).extend(array.reshape(-1).tolist())
    response = stub.ModelInfer(request)
    [output] = response.outputs
    assert not response.raw_output_contents  # typed in, typed out
    assert (output.datatype, list(output.shape)) == (datatype, list(array.shape))
    assert list(getattr(output.contents, TYPED[datatype])) == array.reshape(-1).tolist()


def test_health_metadata_and_statistics(client: triton.InferenceServerClient) -> None:
    assert client.is_server_live() and client.is_server_ready()
    assert client.is_model_ready("echo")
    assert client.is_model_ready("versioned", "v1")
    assert not client.is_model_ready("broken")
    meta = client.get_server_metadata()
    assert meta.name == "inferkit" and "model_repository" in meta.extensions
    assert sorted(client.get_model_metadata("versioned").versions) == ["v1", "v2"]
    client.infer("echo", [infer_input("x", ARRAYS["INT32"], "INT32")])
    [stats] = client.get_inference_statistics("echo").model_stats
    assert stats.name == "echo" and stats.inference_count >= 1


def test_repository_index_unload_load(client: triton.InferenceServerClient) -> None:
    def states() -> dict[str, str]:
        index = client.get_model_repository_index()
        return {f"{m.name}:{m.version}": m.state for m in index.models}

    assert states()["spare:"] == "READY" and states()["broken:"] == "FAILED"
    client.unload_model("spare")
    assert states()["spare:"] == "UNAVAILABLE"
    assert not client.is_model_ready("spare")
    client.load_model("spare")
    assert states()["spare:"] == "READY"


def test_streaming_infer_answers_in_order_and_survives_errors(
    client: triton.InferenceServerClient,
) -> None:
    answers: queue.Queue[tuple[Any, Any]] = queue.Queue()
    client.start_stream(callback=lambda result, error: answers.put((result, error)))
    try:
        for i, model in enumerate(["echo", "nope", "echo"]):
            array = np.array([[i]], dtype=np.int64)
            client.async_stream_infer(model, [infer_input("x", array, "INT64")], request_id=str(i))
    finally:
        client.stop_stream()  # waits for the answers
    got = [answers.get_nowait() for _ in range(3)]
    assert got[0][1] is None and got[0][0].as_numpy("x").tolist() == [[0]]
    assert got[1][0] is None and got[1][1].message() == "Model 'nope' not found"
    assert got[2][1] is None and got[2][0].get_response().id == "2"


# (model, input, status, code, message)
ERRORS = [
    ("nope", ARRAYS["FP32"], "NOT_FOUND", "MODEL_NOT_FOUND", "Model 'nope' not found"),
    (
        "broken",
        ARRAYS["FP32"],
        "UNAVAILABLE",
        "MODEL_NOT_READY",
        "Model 'broken' is not ready (FAILED)",
    ),
    (
        "boom",
        ARRAYS["FP32"],
        "INTERNAL",
        "INFERENCE_FAILED",
        "Model 'boom' failed to run inference; see the server log",
    ),
    (
        "echo",
        np.zeros((1, LIMIT // 4 + 1), dtype=np.float32),
        "RESOURCE_EXHAUSTED",
        "PAYLOAD_TOO_LARGE",
        None,  # the size of the message is in it
    ),
]


@pytest.mark.parametrize(
    ("model", "array", "status", "code", "message"), ERRORS, ids=[row[3] for row in ERRORS]
)
def test_errors_map_to_grpc_codes(
    client: triton.InferenceServerClient,
    stub: service_pb2_grpc.GRPCInferenceServiceStub,
    model: str,
    array: np.ndarray[Any, Any],
    status: str,
    code: str,
    message: str | None,
) -> None:
    with pytest.raises(InferenceServerException) as caught:
        client.infer(model, [infer_input("x", array, "FP32")])
    assert caught.value.status() == f"StatusCode.{status}"
    if message is not None:
        assert caught.value.message() == message
    assert "secret" not in str(caught.value)
    # The stable code travels in the trailing metadata.
    request = service_pb2.ModelInferRequest(model_name=model, raw_input_contents=[array.tobytes()])
    request.inputs.add(name="x", datatype="FP32", shape=list(array.shape))
    with pytest.raises(grpc.RpcError) as raw:
        stub.ModelInfer(request)
    error: Any = raw.value
    assert error.code().name == status
    assert ("inferkit-error-code", code) in error.trailing_metadata()
    assert client.is_server_live()


def test_bad_shape_is_invalid_argument(stub: service_pb2_grpc.GRPCInferenceServiceStub) -> None:
    request = service_pb2.ModelInferRequest(model_name="echo", raw_input_contents=[b"\0" * 4])
    request.inputs.add(name="x", datatype="FP32", shape=[3])
    with pytest.raises(grpc.RpcError) as caught:
        stub.ModelInfer(request)
    error: Any = caught.value
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert error.details() == (
        "Expected 12 bytes for shape [3] of `FP32`, got 4 - at `$.raw_input_contents[0]`"
    )


async def test_grpc_health_checking(running: Running) -> None:
    host, port = running.grpc.split(":")
    channel = Channel(host, int(port))
    try:
        reply = await HealthStub(channel).Check(HealthCheckRequest(service=""))
    finally:
        channel.close()
    assert reply.status == HealthCheckResponse.SERVING


def test_sigterm_drains_grpc_and_exits_zero(tmp_path: Path) -> None:
    root = write_repository(tmp_path, {"echo": MODELS["echo"]})
    with inferkit_start(root) as server:
        client = triton.InferenceServerClient(server.grpc)
        assert client.is_server_ready()
        client.close()
        code, log = server.stop()
    assert code == 0
    assert f"gRPC server running on 127.0.0.1:{server.grpc_port}" in log
    assert "Stopped" in log

"""The generated V2 messages are wire compatible with tritonclient's, and import without grpcio."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import AsyncIterator
from typing import Any

import betterproto2
import numpy as np
import proto_convert
import pytest
from grpclib.const import Cardinality, Status
from grpclib.exceptions import GRPCError
from grpclib.testing import ChannelFor

from inferkit.transports.grpc._generated import inference as pb
from inferkit.transports.grpc._generated.inference import model_repository as mr
from inferkit.transports.grpc._generated.message_pool import default_message_pool
from inferkit.types import InferenceResponse, ResponseOutput

triton_pb2 = pytest.importorskip("tritonclient.grpc.service_pb2")
grpcclient = pytest.importorskip("tritonclient.grpc")
_triton_utils = pytest.importorskip("tritonclient.grpc._utils")

FieldDescriptor = pytest.importorskip("google.protobuf.descriptor").FieldDescriptor

# protobuf's field types, as betterproto2 names them.
_TYPES = {
    FieldDescriptor.TYPE_BOOL: betterproto2.TYPE_BOOL,
    FieldDescriptor.TYPE_INT32: betterproto2.TYPE_INT32,
    FieldDescriptor.TYPE_INT64: betterproto2.TYPE_INT64,
    FieldDescriptor.TYPE_UINT32: betterproto2.TYPE_UINT32,
    FieldDescriptor.TYPE_UINT64: betterproto2.TYPE_UINT64,
    FieldDescriptor.TYPE_FLOAT: betterproto2.TYPE_FLOAT,
    FieldDescriptor.TYPE_DOUBLE: betterproto2.TYPE_DOUBLE,
    FieldDescriptor.TYPE_STRING: betterproto2.TYPE_STRING,
    FieldDescriptor.TYPE_BYTES: betterproto2.TYPE_BYTES,
    FieldDescriptor.TYPE_MESSAGE: betterproto2.TYPE_MESSAGE,
}

# Fields we add to Triton's messages: MLServer's metadata parameters and KServe's load replies.
EXTENSIONS = {
    ("inference.ModelMetadataResponse", 6),
    ("inference.ModelMetadataResponse.TensorMetadata", 4),
    ("inference.RepositoryModelLoadResponse", 1),
    ("inference.RepositoryModelLoadResponse", 2),
    ("inference.RepositoryModelUnloadResponse", 1),
    ("inference.RepositoryModelUnloadResponse", 2),
}


def _ours(full_name: str) -> Any:
    return default_message_pool.url_to_type.get(f"type.googleapis.com/{full_name}")


def _fields(cls: Any) -> dict[int, tuple[str, str, bool]]:
    meta = cls._betterproto.meta_by_field_name
    return {m.number: (name, m.proto_type, bool(m.repeated)) for name, m in meta.items()}


def _triton_messages() -> list[Any]:
    found = []

    def walk(descriptor: Any) -> None:
        if descriptor.GetOptions().map_entry:
            return
        found.append(descriptor)
        for nested in descriptor.nested_types:
            walk(nested)

    for descriptor in triton_pb2.DESCRIPTOR.message_types_by_name.values():
        walk(descriptor)
    return [d for d in found if _ours(d.full_name) is not None]


def _triton_field(field: Any) -> tuple[str, str, bool]:
    if field.message_type is not None and field.message_type.GetOptions().map_entry:
        return (field.name, betterproto2.TYPE_MAP, False)
    repeated = getattr(field, "is_repeated", None)  # protobuf < 5.28 only has `label`
    if repeated is None:
        repeated = field.label == FieldDescriptor.LABEL_REPEATED
    return (field.name, _TYPES[field.type], bool(repeated))


MESSAGES = _triton_messages()


def test_the_messages_tritonclient_uses_are_all_defined() -> None:
    names = {d.full_name for d in MESSAGES}
    assert {
        "inference.ModelInferRequest",
        "inference.ModelInferRequest.InferInputTensor",
        "inference.ModelInferResponse",
        "inference.ModelStreamInferResponse",
        "inference.InferParameter",
        "inference.InferTensorContents",
        "inference.ModelStatisticsResponse",
        "inference.ModelStatistics",
        "inference.RepositoryModelLoadRequest",
        "inference.RepositoryIndexResponse.ModelIndex",
    } <= names


@pytest.mark.parametrize("descriptor", MESSAGES, ids=lambda d: d.full_name)
def test_fields_match_tritonclient(descriptor: Any) -> None:
    ours = _fields(_ours(descriptor.full_name))
    theirs = {f.number: _triton_field(f) for f in descriptor.fields}
    assert {n: ours[n] for n in theirs if n in ours} == theirs
    extra = {(descriptor.full_name, n) for n in ours.keys() - theirs.keys()}
    assert extra <= EXTENSIONS


def test_rpcs_match_tritonclient() -> None:
    service = triton_pb2.DESCRIPTOR.services_by_name["GRPCInferenceService"]
    mapping = pb.GrpcInferenceServiceBase().__mapping__()
    assert len(mapping) == 11
    for path, handler in mapping.items():
        method = service.methods_by_name[path.rsplit("/", 1)[1]]
        assert path == f"/inference.GRPCInferenceService/{method.name}"
        assert _ours(method.input_type.full_name) is handler.request_type
        assert _ours(method.output_type.full_name) is handler.reply_type
        streaming = method.client_streaming and method.server_streaming
        assert (handler.cardinality is Cardinality.STREAM_STREAM) is streaming


def test_model_repository_service() -> None:
    mapping = mr.ModelRepositoryServiceBase().__mapping__()
    assert sorted(mapping) == [
        "/inference.model_repository.ModelRepositoryService/RepositoryIndex",
        "/inference.model_repository.ModelRepositoryService/RepositoryModelLoad",
        "/inference.model_repository.ModelRepositoryService/RepositoryModelUnload",
    ]


# MLServer's model_repository.proto, which no installed package ships: its numbers by hand.
MLSERVER_FIELDS = [
    (mr.RepositoryIndexRequest, {1: "repository_name", 2: "ready"}),
    (mr.RepositoryIndexResponse, {1: "models"}),
    (mr.RepositoryIndexResponseModelIndex, {1: "name", 2: "version", 3: "state", 4: "reason"}),
    (mr.RepositoryModelLoadRequest, {1: "repository_name", 2: "model_name"}),
    (mr.RepositoryModelUnloadRequest, {1: "repository_name", 2: "model_name"}),
    (mr.RepositoryModelLoadResponse, {}),
    (mr.RepositoryModelUnloadResponse, {}),
]


@pytest.mark.parametrize(
    ("cls", "expected"), MLSERVER_FIELDS, ids=lambda x: getattr(x, "__name__", "")
)
def test_model_repository_fields(cls: Any, expected: dict[int, str]) -> None:
    assert {n: name for n, (name, _, _) in _fields(cls).items()} == expected


def test_generated_code_needs_no_grpcio_or_protobuf() -> None:
    code = (
        "import sys\n"
        "import inferkit.transports.grpc.convert\n"
        "bad = sorted(m for m in sys.modules if m == 'grpc' or m.startswith(('grpc.', 'google')))\n"
        "print(bad)\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "[]"


# -- against tritonclient's own encoder and decoder ---------------------------------------------

TRITON_ARRAYS = [
    ("BOOL", np.array([[True, False]])),
    ("UINT8", np.array([[0, 255]], np.uint8)),
    ("UINT64", np.array([[0, 2**64 - 1]], np.uint64)),
    ("INT16", np.array([[-7, 7]], np.int16)),
    ("INT64", np.array([[-(2**63), 2**63 - 1]], np.int64)),
    ("FP16", np.array([[0.5, -1.0]], np.float16)),
    ("FP32", np.arange(16, dtype=np.float32).reshape(1, 16)),
    ("FP64", np.array([[1e-300, 2.5]])),
    ("BYTES", np.array([[b"a\x00b", "é".encode()]], dtype=object)),
]


def test_tritonclient_request_parses() -> None:
    inputs = []
    for datatype, array in TRITON_ARRAYS:
        infer_input = grpcclient.InferInput(datatype.lower(), list(array.shape), datatype)
        infer_input.set_data_from_numpy(array)
        inputs.append(infer_input)
    request = _triton_utils._get_inference_request(
        model_name="m",
        inputs=inputs,
        model_version="3",
        request_id="id-1",
        outputs=[grpcclient.InferRequestedOutput("y")],
        sequence_id=0,
        sequence_start=False,
        sequence_end=False,
        priority=5,
        timeout=None,
        parameters={"custom": 1.5, "flag": True, "name": "n", "count": -2},
    )

    message = pb.ModelInferRequest.parse(request.SerializeToString())

    assert (message.model_name, message.model_version) == ("m", "3")
    assert proto_convert.uses_raw(message)
    core = proto_convert.request_from_proto(message)
    assert core.id == "id-1"
    assert core.parameters == {"priority": 5, "custom": 1.5, "flag": True, "name": "n", "count": -2}
    assert [o.name for o in core.outputs or ()] == ["y"]
    for (datatype, array), tensor in zip(TRITON_ARRAYS, core.inputs, strict=True):
        assert tensor.datatype == datatype
        assert tensor.data.dtype == array.dtype
        np.testing.assert_array_equal(tensor.data, array)


def test_tritonclient_reads_raw_response() -> None:
    response = InferenceResponse(
        model_name="m",
        model_version="3",
        id="id-1",
        parameters={"sequence_end": True},
        outputs=[
            ResponseOutput(name=datatype, shape=list(array.shape), datatype=datatype, data=array)
            for datatype, array in TRITON_ARRAYS
        ],
    )
    wire = bytes(proto_convert.response_to_proto(response, raw=True))

    result = grpcclient.InferResult(triton_pb2.ModelInferResponse.FromString(wire))

    raw = result.get_response()
    assert (raw.model_name, raw.model_version, raw.id) == ("m", "3", "id-1")
    assert raw.parameters["sequence_end"].bool_param is True
    for datatype, array in TRITON_ARRAYS:
        got = result.as_numpy(datatype)
        assert got.dtype == array.dtype
        np.testing.assert_array_equal(got, array)


def test_tritonclient_reads_stream_response() -> None:
    ok = pb.ModelStreamInferResponse(
        infer_response=proto_convert.response_to_proto(
            InferenceResponse(model_name="m", outputs=[])
        )
    )
    failed = pb.ModelStreamInferResponse(error_message="Model 'x' not found")
    assert (
        triton_pb2.ModelStreamInferResponse.FromString(bytes(ok)).infer_response.model_name == "m"
    )
    assert triton_pb2.ModelStreamInferResponse.FromString(bytes(failed)).error_message == (
        "Model 'x' not found"
    )


def test_tritonclient_statistics_round_trip() -> None:
    stats = pb.ModelStatisticsResponse(
        model_stats=[
            pb.ModelStatistics(
                name="m",
                version="1",
                inference_count=3,
                inference_stats=pb.InferStatistics(success=pb.StatisticDuration(count=3, ns=1500)),
                response_stats={
                    "0": pb.InferResponseStatistics(success=pb.StatisticDuration(count=1, ns=2))
                },
            )
        ]
    )
    theirs = triton_pb2.ModelStatisticsResponse.FromString(bytes(stats))
    assert theirs.model_stats[0].inference_stats.success.ns == 1500
    assert theirs.model_stats[0].response_stats["0"].success.count == 1
    assert pb.ModelStatisticsResponse.parse(theirs.SerializeToString()) == stats


def test_tritonclient_load_request_parameters() -> None:
    theirs = triton_pb2.RepositoryModelLoadRequest(model_name="m")
    theirs.parameters["config"].string_param = "{}"
    theirs.parameters["file:1/model.onnx"].bytes_param = b"\x00\x01"
    ours = pb.RepositoryModelLoadRequest.parse(theirs.SerializeToString())
    assert ours.model_name == "m"
    assert ours.parameters == {
        "config": pb.ModelRepositoryParameter(string_param="{}"),
        "file:1/model.onnx": pb.ModelRepositoryParameter(bytes_param=b"\x00\x01"),
    }


# -- the generated grpclib service base and stub work together, in memory ----------------------


class _Echo(pb.GrpcInferenceServiceBase):
    async def server_live(self, message: pb.ServerLiveRequest) -> pb.ServerLiveResponse:
        return pb.ServerLiveResponse(live=True)

    async def model_infer(self, message: pb.ModelInferRequest) -> pb.ModelInferResponse:
        request = proto_convert.request_from_proto(message)
        response = InferenceResponse(
            model_name=message.model_name,
            outputs=[
                ResponseOutput(name=t.name, shape=t.shape, datatype=t.datatype, data=t.data)
                for t in request.inputs
            ],
        )
        return proto_convert.response_to_proto(response, raw=proto_convert.uses_raw(message))

    async def model_stream_infer(
        self, messages: AsyncIterator[pb.ModelInferRequest]
    ) -> AsyncIterator[pb.ModelStreamInferResponse]:
        async for message in messages:
            if message.model_name == "missing":
                yield pb.ModelStreamInferResponse(error_message="Model 'missing' not found")
            else:
                yield pb.ModelStreamInferResponse(infer_response=await self.model_infer(message))


async def test_generated_service_and_stub_in_memory() -> None:
    array = np.arange(6, dtype=np.float32).reshape(2, 3)
    request = pb.ModelInferRequest(
        model_name="m",
        inputs=[pb.ModelInferRequestInferInputTensor(name="x", datatype="FP32", shape=[2, 3])],
        raw_input_contents=[array.tobytes()],
    )
    async with ChannelFor([_Echo()]) as channel:
        stub = pb.GrpcInferenceServiceStub(channel)
        assert (await stub.server_live()).live is True
        reply = await stub.model_infer(request)
        streamed = [
            r
            async for r in stub.model_stream_infer(
                [request, pb.ModelInferRequest(model_name="missing")]
            )
        ]
        with pytest.raises(GRPCError) as caught:
            await stub.server_ready()
    assert reply.raw_output_contents == [array.tobytes()]
    assert streamed[0].infer_response == reply
    assert streamed[1].error_message == "Model 'missing' not found"
    assert caught.value.status is Status.UNIMPLEMENTED

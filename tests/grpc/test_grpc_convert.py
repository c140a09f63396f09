"""Round trips between the core Structs and the V2 protobuf messages, through real wire bytes."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import proto_convert
import pytest
from samples import NUMERIC_DTYPES

from inferkit.errors import (
    InferkitError,
    InvalidRequest,
    InvalidShape,
    ModelNotFound,
    UnsupportedDatatype,
)
from inferkit.transports.grpc import _wire, convert
from inferkit.transports.grpc._generated import inference as pb
from inferkit.transports.grpc._generated.inference import model_repository as mr
from inferkit.types import (
    InferenceRequest,
    InferenceResponse,
    MetadataModelResponse,
    MetadataServerResponse,
    MetadataTensor,
    RepositoryIndexRequest,
    RepositoryIndexResponseItem,
    RequestInput,
    RequestOutput,
    ResponseOutput,
)

DTYPES = {**NUMERIC_DTYPES, "BYTES": object}

# (datatype, elements, typed contents field); every datatype, extremes included. FP16 has no
# typed field: it always travels raw.
TENSORS: list[tuple[str, list[Any], str | None]] = [
    ("BOOL", [True, False, True, True], "bool_contents"),
    ("UINT8", [0, 1, 128, 255], "uint_contents"),
    ("UINT16", [0, 1, 2**15, 2**16 - 1], "uint_contents"),
    ("UINT32", [0, 1, 2**31, 2**32 - 1], "uint_contents"),
    ("UINT64", [0, 1, 2**63, 2**64 - 1], "uint64_contents"),
    ("INT8", [-128, -1, 0, 127], "int_contents"),
    ("INT16", [-(2**15), -1, 0, 2**15 - 1], "int_contents"),
    ("INT32", [-(2**31), -1, 0, 2**31 - 1], "int_contents"),
    ("INT64", [-(2**63), -1, 0, 2**63 - 1], "int64_contents"),
    ("FP16", [0.5, -2.0, math.inf, 65504.0], None),
    ("FP32", [1.5, -0.25, math.nan, 3.0e38], "fp32_contents"),
    ("FP64", [1e-300, -2.5, math.inf, 1.0 / 3.0], "fp64_contents"),
    ("BYTES", [b"", b"\x00\xff", "héllo".encode(), b"abc"], "bytes_contents"),
]
IDS = [row[0] for row in TENSORS]


def array_of(datatype: str, values: list[Any], shape: tuple[int, ...] = (2, 2)) -> Any:
    if datatype == "BYTES":
        array = np.empty(len(values), dtype=object)
        array[:] = values
        return array.reshape(shape)
    return np.array(values, dtype=DTYPES[datatype]).reshape(shape)


def assert_tensor(data: Any, datatype: str, expected: Any) -> None:
    assert isinstance(data, np.ndarray)
    assert data.dtype == np.dtype(DTYPES[datatype])
    assert data.shape == expected.shape
    if datatype == "BYTES":
        assert all(type(item) is bytes for item in data.reshape(-1))
    np.testing.assert_array_equal(data, expected)


# The two readers of a ModelInferRequest: the generated class then proto_convert (what a
# client does), and _wire (the service's ModelInfer). Both must give the same core request.
READERS = ["generated", "wire"]


def read_request(wire: bytes, reader: str) -> InferenceRequest:
    if reader == "generated":
        return proto_convert.request_from_proto(pb.ModelInferRequest.parse(wire))
    return _wire.request_of(_wire.ModelInferRequest.FromString(wire))


def write_response(response: InferenceResponse, raw: bool) -> bytes:
    """The response as the service writes it, checked against the generated class's bytes."""
    wire = _wire.write_infer_response(response, raw=raw)
    assert wire == bytes(proto_convert.response_to_proto(response, raw=raw))
    return wire


def raw_of(datatype: str, array: Any) -> bytes:
    if datatype == "BYTES":
        items = array.reshape(-1).tolist()
        return b"".join(len(x).to_bytes(4, "little") + x for x in items)
    return bytes(array.astype(np.dtype(DTYPES[datatype]).newbyteorder("<")).tobytes())


# -- tensors, both directions, typed and raw ----------------------------------------------------


@pytest.mark.parametrize("reader", READERS)
@pytest.mark.parametrize("raw", [False, True], ids=["typed", "raw"])
@pytest.mark.parametrize(("datatype", "values", "field"), TENSORS, ids=IDS)
def test_request_round_trip(
    datatype: str, values: list[Any], field: str | None, raw: bool, reader: str
) -> None:
    array = array_of(datatype, values)
    request = InferenceRequest(
        id="r-1",
        inputs=[RequestInput(name="x", shape=[2, 2], datatype=datatype, data=array)],
        outputs=[RequestOutput(name="y")],
    )

    message = proto_convert.request_to_proto(request, "model", "v1", raw=raw)

    if raw or field is None:
        assert message.inputs[0].contents is None
        assert message.raw_input_contents == [raw_of(datatype, array)]
    else:
        assert message.raw_input_contents == []
        typed = getattr(message.inputs[0].contents, field)
        assert all(
            type(x) is type(y) for x, y in zip(typed, array.reshape(-1).tolist(), strict=True)
        )
        np.testing.assert_array_equal(np.array(typed, dtype=array.dtype), array.reshape(-1))

    parsed = pb.ModelInferRequest.parse(bytes(message))
    assert (parsed.model_name, parsed.model_version) == ("model", "v1")
    assert proto_convert.uses_raw(parsed) is (raw or field is None)
    read = _wire.ModelInferRequest.FromString(bytes(message))
    assert (read.model_name, read.model_version) == ("model", "v1")
    assert bool(read.raw_input_contents) is (raw or field is None)
    back = read_request(bytes(message), reader)
    assert back.id == "r-1"
    assert back.outputs == [RequestOutput(name="y")]
    (tensor,) = back.inputs
    assert (tensor.name, tensor.shape, tensor.datatype) == ("x", [2, 2], datatype)
    assert_tensor(tensor.data, datatype, array)


@pytest.mark.parametrize("raw", [False, True], ids=["typed", "raw"])
@pytest.mark.parametrize(("datatype", "values", "field"), TENSORS, ids=IDS)
def test_response_round_trip(
    datatype: str, values: list[Any], field: str | None, raw: bool
) -> None:
    array = array_of(datatype, values, (4,))
    response = InferenceResponse(
        model_name="model",
        model_version="v1",
        id="r-1",
        outputs=[ResponseOutput(name="y", shape=[4], datatype=datatype, data=array)],
    )

    message = proto_convert.response_to_proto(response, raw=raw)

    assert bool(message.raw_output_contents) is (raw or field is None)
    back = proto_convert.response_from_proto(
        pb.ModelInferResponse.parse(write_response(response, raw))
    )
    assert (back.model_name, back.model_version, back.id) == ("model", "v1", "r-1")
    (tensor,) = back.outputs
    assert (tensor.name, tensor.shape, tensor.datatype) == ("y", [4], datatype)
    assert_tensor(tensor.data, datatype, array)


# What a model may put in `data`: lists, nested lists, arrays of another dtype, views, raw bytes.
DATA_FORMS = [
    ("flat list", "INT32", [2, 2], [1, 2, 3, 4], [[1, 2], [3, 4]]),
    ("nested list", "FP64", [2, 2], [[1.5, 2.0], [3.0, 4.0]], [[1.5, 2.0], [3.0, 4.0]]),
    ("float64 array as FP32", "FP32", [2], np.array([0.5, 1.5]), [0.5, 1.5]),
    ("transposed view", "INT64", [2, 2], np.arange(4).reshape(2, 2).T, [[0, 2], [1, 3]]),
    ("raw bytes", "UINT16", [2], np.array([7, 9], "<u2").tobytes(), [7, 9]),
    ("str elements", "BYTES", [2], ["a", "é"], [b"a", "é".encode()]),
    ("nested str", "BYTES", [1, 2], [["a", "b"]], [[b"a", b"b"]]),
    ("one bytes element", "BYTES", [1], b"\x00\x01", [b"\x00\x01"]),
    ("None as empty", "FP32", [0], None, np.empty(0, np.float32)),
]


@pytest.mark.parametrize("raw", [False, True], ids=["typed", "raw"])
@pytest.mark.parametrize(
    ("datatype", "shape", "data", "expected"),
    [row[1:] for row in DATA_FORMS],
    ids=[row[0] for row in DATA_FORMS],
)
def test_response_data_forms(
    datatype: str, shape: list[int], data: Any, expected: Any, raw: bool
) -> None:
    response = InferenceResponse(
        model_name="m",
        outputs=[ResponseOutput(name="y", shape=shape, datatype=datatype, data=data)],
    )
    back = proto_convert.response_from_proto(
        pb.ModelInferResponse.parse(write_response(response, raw))
    )
    assert_tensor(
        back.outputs[0].data,
        datatype,
        np.array(expected, dtype=object if datatype == "BYTES" else DTYPES[datatype]),
    )


WRITERS = [proto_convert.response_to_proto, _wire.write_infer_response]


@pytest.mark.parametrize("write", WRITERS, ids=["generated", "wire"])
def test_response_data_not_fitting_its_shape_is_a_server_error(write: Any) -> None:
    response = InferenceResponse(
        model_name="m", outputs=[ResponseOutput(name="y", shape=[3], datatype="FP32", data=[1.0])]
    )
    with pytest.raises(ValueError, match=r"^Tensor 'y' has 1 elements; shape \[3\] needs 3$"):
        write(response)


@pytest.mark.parametrize("raw", [False, True], ids=["typed", "raw"])
@pytest.mark.parametrize("write", WRITERS, ids=["generated", "wire"])
def test_bytes_output_with_non_bytes_elements_is_a_server_error(write: Any, raw: bool) -> None:
    response = InferenceResponse(
        model_name="m", outputs=[ResponseOutput(name="y", shape=[1], datatype="BYTES", data=[1])]
    )
    with pytest.raises(TypeError, match=r"^Expected bytes or str elements for BYTES, got int$"):
        write(response, raw=raw)


def test_fp16_output_makes_the_whole_response_raw() -> None:
    response = InferenceResponse(
        model_name="m",
        outputs=[
            ResponseOutput(name="a", shape=[1], datatype="FP32", data=[1.0]),
            ResponseOutput(name="b", shape=[1], datatype="FP16", data=[2.0]),
        ],
    )
    message = pb.ModelInferResponse.parse(write_response(response, raw=False))
    assert message.raw_output_contents == [
        np.float32(1.0).tobytes(),
        np.float16(2.0).tobytes(),
    ]
    assert [o.contents for o in message.outputs] == [None, None]


@pytest.mark.parametrize("reader", READERS)
def test_typed_request_arrays_are_writable(reader: str) -> None:
    request = InferenceRequest(
        inputs=[RequestInput(name="x", shape=[4], datatype="FP32", data=np.arange(4.0))]
    )
    data = read_request(bytes(proto_convert.request_to_proto(request, "m")), reader).inputs[0].data
    data += 1  # new arrays, as the ones a model gets from JSON lists
    np.testing.assert_array_equal(data, [1, 2, 3, 4])


@pytest.mark.parametrize("reader", READERS)
def test_raw_request_arrays_are_read_only_views(reader: str) -> None:
    # As REST's raw data (the binary extension) and MLServer: no copy of a large tensor.
    request = InferenceRequest(
        inputs=[RequestInput(name="x", shape=[4], datatype="FP32", data=np.arange(4.0))]
    )
    wire = bytes(proto_convert.request_to_proto(request, "m", raw=True))
    data = read_request(wire, reader).inputs[0].data
    assert not data.flags.writeable
    np.testing.assert_array_equal(data, [0, 1, 2, 3])
    with pytest.raises(ValueError, match="read-only"):
        data += 1


@pytest.mark.parametrize("reader", READERS)
def test_raw_bool_bytes_other_than_one_are_true(reader: str) -> None:
    message = pb.ModelInferRequest(
        inputs=[pb.ModelInferRequestInferInputTensor(name="x", datatype="BOOL", shape=[3])],
        raw_input_contents=[b"\x00\x01\x02"],
    )
    data = read_request(bytes(message), reader).inputs[0].data
    assert data.dtype == np.bool_
    assert data.tolist() == [False, True, True]


@pytest.mark.parametrize("reader", READERS)
def test_mixed_typed_and_raw_inputs(reader: str) -> None:
    # MLServer's rule: inputs without typed contents take the raw entries, in order.
    message = pb.ModelInferRequest(
        inputs=[
            pb.ModelInferRequestInferInputTensor(name="a", datatype="INT32", shape=[2]),
            pb.ModelInferRequestInferInputTensor(
                name="b",
                datatype="INT32",
                shape=[1],
                contents=pb.InferTensorContents(int_contents=[5]),
            ),
            pb.ModelInferRequestInferInputTensor(name="c", datatype="BYTES", shape=[1]),
        ],
        raw_input_contents=[np.array([1, 2], "<i4").tobytes(), b"\x02\x00\x00\x00hi"],
    )
    a, b, c = (t.data for t in read_request(bytes(message), reader).inputs)
    np.testing.assert_array_equal(a, [1, 2])
    np.testing.assert_array_equal(b, [5])
    assert c.tolist() == [b"hi"]


# -- invalid requests: exact messages -----------------------------------------------------------


def tensor(datatype: str, shape: list[int], **contents: Any) -> Any:
    return pb.ModelInferRequestInferInputTensor(
        name="x",
        datatype=datatype,
        shape=shape,
        contents=pb.InferTensorContents(**contents) if contents else None,
    )


INVALID = [
    (
        "unknown datatype",
        [tensor("BF16", [1])],
        [b"\x00\x00"],
        UnsupportedDatatype,
        "Unsupported datatype `BF16`; expected one of BOOL, UINT8, UINT16, UINT32, UINT64, "
        "INT8, INT16, INT32, INT64, FP16, FP32, FP64, BYTES - at `$.inputs[0].datatype`",
    ),
    (
        "negative dimension",
        [tensor("FP32", [2, -1], fp32_contents=[1.0])],
        [],
        InvalidShape,
        "Expected `int` >= 0, got `-1` - at `$.inputs[0].shape[1]`",
    ),
    (
        "too few typed elements",
        [tensor("FP32", [1, 3], fp32_contents=[1.0, 2.0])],
        [],
        InvalidShape,
        "Expected 3 elements for shape [1, 3], got 2 - at `$.inputs[0].contents.fp32_contents`",
    ),
    (
        "no contents at all",
        [tensor("INT64", [2])],
        [],
        InvalidShape,
        "Expected 2 elements for shape [2], got 0 - at `$.inputs[0].contents.int64_contents`",
    ),
    (
        "wrong typed field",
        [tensor("FP32", [1], fp64_contents=[1.0])],
        [],
        InvalidRequest,
        "Expected `fp32_contents` for datatype `FP32`, got `fp64_contents` "
        "- at `$.inputs[0].contents`",
    ),
    (
        "INT8 out of range",
        [tensor("INT8", [3], int_contents=[1, 300, 2])],
        [],
        InvalidRequest,
        "Expected `INT8` values, got `300` - at `$.inputs[0].contents.int_contents[1]`",
    ),
    (
        "UINT16 out of range",
        [tensor("UINT16", [1], uint_contents=[70000])],
        [],
        InvalidRequest,
        "Expected `UINT16` values, got `70000` - at `$.inputs[0].contents.uint_contents[0]`",
    ),
    (
        "typed FP16",
        [tensor("FP16", [1], fp32_contents=[1.0])],
        [],
        InvalidRequest,
        "Expected raw contents for `FP16`, which has no typed contents field "
        "- at `$.inputs[0].contents`",
    ),
    (
        "raw size",
        [tensor("FP32", [2])],
        [b"\x00" * 7],
        InvalidShape,
        "Expected 8 bytes for shape [2] of `FP32`, got 7 - at `$.raw_input_contents[0]`",
    ),
    (
        "raw BYTES count",
        [tensor("BYTES", [2])],
        [b"\x01\x00\x00\x00a"],
        InvalidShape,
        "Expected 2 elements for shape [2], got 1 - at `$.raw_input_contents[0]`",
    ),
    (
        "raw BYTES cut in the prefix",
        [tensor("BYTES", [2])],
        [b"\x01\x00\x00\x00a\x01\x00"],
        InvalidRequest,
        "Expected a 4-byte length prefix at byte 5 of raw `BYTES` data, got 2 bytes "
        "- at `$.raw_input_contents[0]`",
    ),
    (
        "raw BYTES cut in an element",
        [tensor("BYTES", [1])],
        [b"\x05\x00\x00\x00abc"],
        InvalidRequest,
        "Expected 5 bytes for element 0 of raw `BYTES` data, got 3 - at `$.raw_input_contents[0]`",
    ),
    (
        "too few raw entries",
        [tensor("INT8", [1]), tensor("INT8", [1])],
        [b"\x01"],
        InvalidRequest,
        "Expected a raw_input_contents entry for 'x', got 1 entries - at `$.raw_input_contents`",
    ),
    (
        "too many raw entries",
        [tensor("INT8", [1])],
        [b"\x01", b"\x02"],
        InvalidRequest,
        "Expected 1 raw_input_contents entries, one per tensor without contents, got 2 "
        "- at `$.raw_input_contents`",
    ),
]


@pytest.mark.parametrize("reader", READERS)
@pytest.mark.parametrize(
    ("inputs", "raw", "error", "message"),
    [row[1:] for row in INVALID],
    ids=[row[0] for row in INVALID],
)
def test_invalid_requests(
    inputs: list[Any], raw: list[bytes], error: type[InferkitError], message: str, reader: str
) -> None:
    wire = bytes(pb.ModelInferRequest(model_name="m", inputs=inputs, raw_input_contents=raw))
    with pytest.raises(error) as caught:
        read_request(wire, reader)
    assert type(caught.value) is error
    assert str(caught.value) == message


# -- parameters ---------------------------------------------------------------------------------

# (Python value, InferParameter as sent, value read back)
PARAMETERS = [
    (True, pb.InferParameter(bool_param=True), True),
    (False, pb.InferParameter(bool_param=False), False),
    (0, pb.InferParameter(int64_param=0), 0),
    (-(2**63), pb.InferParameter(int64_param=-(2**63)), -(2**63)),
    (2**63 - 1, pb.InferParameter(int64_param=2**63 - 1), 2**63 - 1),
    (2**63, pb.InferParameter(uint64_param=2**63), 2**63),
    (2**64 - 1, pb.InferParameter(uint64_param=2**64 - 1), 2**64 - 1),
    (0.0, pb.InferParameter(double_param=0.0), 0.0),
    (-1.25, pb.InferParameter(double_param=-1.25), -1.25),
    ("", pb.InferParameter(string_param=""), ""),
    ("np", pb.InferParameter(string_param="np"), "np"),
    (np.float32(0.5), pb.InferParameter(double_param=0.5), 0.5),
    (np.int64(7), pb.InferParameter(int64_param=7), 7),
    (np.bool_(True), pb.InferParameter(bool_param=True), True),
    ({"a": [1, "b"]}, pb.InferParameter(string_param='{"a":[1,"b"]}'), '{"a":[1,"b"]}'),
    ([1, 2], pb.InferParameter(string_param="[1,2]"), "[1,2]"),
]


@pytest.mark.parametrize(
    ("value", "param", "back"), PARAMETERS, ids=[repr(p[0]) for p in PARAMETERS]
)
def test_parameters(value: Any, param: pb.InferParameter, back: Any) -> None:
    sent = convert.parameters_to_proto({"p": value})
    assert sent == {"p": param}
    wire = bytes(pb.ModelInferRequest(parameters=sent))
    received = proto_convert.parameters_from_proto(pb.ModelInferRequest.parse(wire).parameters)
    assert received == {"p": back}
    assert type(received["p"]) is type(back)
    read = _wire.ModelInferRequest.FromString(wire).parameters
    assert read == {"p": back}
    assert type(read["p"]) is type(back)
    # Written by the service, the same bytes as the generated class writes.
    response = InferenceResponse(model_name="m", parameters={"p": value}, outputs=[])
    assert pb.ModelInferResponse.parse(write_response(response, False)).parameters == sent


def test_parameters_none_and_empty() -> None:
    assert convert.parameters_to_proto(None) == {}
    assert convert.parameters_to_proto({"gone": None}) == {}
    assert proto_convert.parameters_from_proto({}) is None
    assert proto_convert.parameters_from_proto({"unset": pb.InferParameter()}) == {"unset": None}


@pytest.mark.parametrize("reader", READERS)
def test_parameters_on_every_level(reader: str) -> None:
    params = {"content_type": "np", "n": 3}
    request = InferenceRequest(
        parameters=params,
        inputs=[RequestInput(name="x", shape=[1], datatype="INT32", parameters=params, data=[1])],
        outputs=[RequestOutput(name="y", parameters=params)],
    )
    wire = bytes(proto_convert.request_to_proto(request, "m"))
    back = read_request(wire, reader)
    assert back.parameters == params
    assert back.inputs[0].parameters == params
    assert back.outputs == [RequestOutput(name="y", parameters=params)]


# -- metadata and repository --------------------------------------------------------------------


def test_server_metadata_round_trip() -> None:
    meta = MetadataServerResponse(name="inferkit", version="1.0", extensions=["model_repository"])
    message = convert.server_metadata_to_proto(meta)
    wire = pb.ServerMetadataResponse.parse(bytes(message))
    assert wire == pb.ServerMetadataResponse(
        name="inferkit", version="1.0", extensions=["model_repository"]
    )
    assert proto_convert.server_metadata_from_proto(wire) == meta


MODEL_METADATA = [
    MetadataModelResponse(name="bare", platform=""),
    MetadataModelResponse(
        name="full",
        versions=["1", "2"],
        platform="sklearn",
        inputs=[
            MetadataTensor(
                name="x", datatype="FP32", shape=[-1, 3], parameters={"content_type": "np"}
            )
        ],
        outputs=[MetadataTensor(name="y", datatype="BYTES", shape=[-1])],
        parameters={"content_type": "np", "batch": 8},
    ),
]


@pytest.mark.parametrize("meta", MODEL_METADATA, ids=lambda m: m.name)
def test_model_metadata_round_trip(meta: MetadataModelResponse) -> None:
    wire = bytes(convert.model_metadata_to_proto(meta))
    assert proto_convert.model_metadata_from_proto(pb.ModelMetadataResponse.parse(wire)) == meta


INDEX = [
    RepositoryIndexResponseItem(name="a", version="1", state="READY", reason=""),
    RepositoryIndexResponseItem(name="b", state="FAILED", reason="ImportError: no module x"),
]


def test_index_round_trip_on_both_services() -> None:
    inference = convert.index_to_proto(INDEX)
    legacy = convert.index_to_model_repository_proto(INDEX)
    assert isinstance(legacy, mr.RepositoryIndexResponse)
    # Same fields, same numbers: the two services' messages are the same bytes.
    assert bytes(inference) == bytes(legacy)
    assert (
        proto_convert.index_from_proto(pb.RepositoryIndexResponse.parse(bytes(inference))) == INDEX
    )
    assert proto_convert.index_from_proto(mr.RepositoryIndexResponse.parse(bytes(legacy))) == INDEX


def test_index_unknown_state_reads_as_unknown() -> None:
    message = pb.RepositoryIndexResponse(
        models=[pb.RepositoryIndexResponseModelIndex(name="a", state="WEIRD")]
    )
    assert proto_convert.index_from_proto(message)[0].state == "UNKNOWN"


@pytest.mark.parametrize(("ready", "expected"), [(False, None), (True, True)])
@pytest.mark.parametrize("cls", [pb.RepositoryIndexRequest, mr.RepositoryIndexRequest])
def test_index_request(cls: Any, ready: bool, expected: bool | None) -> None:
    message = cls.parse(bytes(cls(repository_name="r", ready=ready)))
    assert convert.index_request_from_proto(message) == RepositoryIndexRequest(ready=expected)


@pytest.mark.parametrize(
    ("message", "expected"),
    [
        (pb.ModelReadyRequest(name="m"), ("m", None)),
        (pb.ModelReadyRequest(name="m", version="2"), ("m", "2")),
        (pb.ModelMetadataRequest(name="m", version="2"), ("m", "2")),
        (pb.ModelStatisticsRequest(), ("", None)),
    ],
)
def test_model_ref(message: Any, expected: tuple[str, str | None]) -> None:
    assert convert.model_ref(message) == expected


# Load/unload bodies as each family of clients writes them: field 1 and field 2 are strings.
def string_field(number: int, text: str) -> bytes:
    data = text.encode()
    return bytes([number << 3 | 2, len(data)]) + data


KNOWN = {"iris", "mnist"}.__contains__

MODEL_NAMES = [
    ("triton: repository_name=1, model_name=2", string_field(2, "iris"), "iris"),
    ("triton with a repository", string_field(1, "repo") + string_field(2, "iris"), "iris"),
    ("kserve: model_name=1", string_field(1, "mnist"), "mnist"),
]


@pytest.mark.parametrize(
    "cls",
    [
        pb.RepositoryModelLoadRequest,
        pb.RepositoryModelUnloadRequest,
        mr.RepositoryModelLoadRequest,
        mr.RepositoryModelUnloadRequest,
    ],
)
@pytest.mark.parametrize(
    ("wire", "expected"), [row[1:] for row in MODEL_NAMES], ids=[row[0] for row in MODEL_NAMES]
)
def test_model_name_of(cls: Any, wire: bytes, expected: str) -> None:
    assert convert.model_name_of(cls.parse(wire), KNOWN) == expected


def test_model_name_of_unknown_field_one() -> None:
    with pytest.raises(ModelNotFound, match=r"^Model 'nope' not found$"):
        convert.model_name_of(pb.RepositoryModelLoadRequest.parse(string_field(1, "nope")), KNOWN)


def test_model_name_of_nothing() -> None:
    with pytest.raises(InvalidRequest) as caught:
        convert.model_name_of(pb.RepositoryModelLoadRequest(), KNOWN)
    assert str(caught.value) == "Expected a model name, got none - at `$.model_name`"

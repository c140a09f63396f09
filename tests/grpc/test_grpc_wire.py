"""The service's own ModelInfer reader and writer (``_wire``) against the generated classes.

tests/grpc/test_grpc_convert.py runs its request and response tables through both; this file
covers what only a hand-written protobuf codec can get wrong: the encodings a peer may choose
(unpacked repeated scalars, packed runs split in several, any field order, unknown fields), the
vectorised varint paths of large arrays, malformed bytes, and random messages (hypothesis).
"""

from __future__ import annotations

import struct
from typing import Any, Literal

import numpy as np
import proto_convert
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from samples import NUMERIC_DTYPES

from inferkit.errors import InvalidRequest
from inferkit.transports.grpc import _wire
from inferkit.transports.grpc._generated import inference as pb
from inferkit.types import InferenceRequest, InferenceResponse, RequestInput, ResponseOutput

# -- field numbers ------------------------------------------------------------------------------

# _wire's names for the field numbers it reads and writes, message by message (the generated
# classes are checked against proto/ and tritonclient in test_grpc_proto.py).
FIELD_NUMBERS: list[tuple[Any, dict[str, int]]] = [
    (
        pb.ModelInferRequest,
        {
            "model_name": _wire.REQUEST_MODEL_NAME,
            "model_version": _wire.REQUEST_MODEL_VERSION,
            "id": _wire.REQUEST_ID,
            "parameters": _wire.REQUEST_PARAMETERS,
            "inputs": _wire.REQUEST_INPUTS,
            "outputs": _wire.REQUEST_OUTPUTS,
            "raw_input_contents": _wire.REQUEST_RAW_INPUT_CONTENTS,
        },
    ),
    (
        pb.ModelInferRequestInferInputTensor,
        {
            "name": _wire.INPUT_NAME,
            "datatype": _wire.INPUT_DATATYPE,
            "shape": _wire.INPUT_SHAPE,
            "parameters": _wire.INPUT_PARAMETERS,
            "contents": _wire.INPUT_CONTENTS,
        },
    ),
    (
        pb.ModelInferRequestInferRequestedOutputTensor,
        {"name": _wire.REQUESTED_OUTPUT_NAME, "parameters": _wire.REQUESTED_OUTPUT_PARAMETERS},
    ),
    (
        pb.ModelInferResponse,
        {
            "model_name": _wire.RESPONSE_MODEL_NAME,
            "model_version": _wire.RESPONSE_MODEL_VERSION,
            "id": _wire.RESPONSE_ID,
            "parameters": _wire.RESPONSE_PARAMETERS,
            "outputs": _wire.RESPONSE_OUTPUTS,
            "raw_output_contents": _wire.RESPONSE_RAW_OUTPUT_CONTENTS,
        },
    ),
    (
        pb.ModelInferResponseInferOutputTensor,
        {
            "name": _wire.OUTPUT_NAME,
            "datatype": _wire.OUTPUT_DATATYPE,
            "shape": _wire.OUTPUT_SHAPE,
            "parameters": _wire.OUTPUT_PARAMETERS,
            "contents": _wire.OUTPUT_CONTENTS,
        },
    ),
    (
        pb.ModelStreamInferResponse,
        {
            "error_message": _wire.STREAM_ERROR_MESSAGE,
            "infer_response": _wire.STREAM_INFER_RESPONSE,
        },
    ),
    (
        pb.InferParameter,
        {
            "bool_param": _wire.PARAMETER_BOOL,
            "int64_param": _wire.PARAMETER_INT64,
            "string_param": _wire.PARAMETER_STRING,
            "double_param": _wire.PARAMETER_DOUBLE,
            "uint64_param": _wire.PARAMETER_UINT64,
        },
    ),
    (
        pb.InferTensorContents,
        {
            "bool_contents": _wire.CONTENTS_BOOL,
            "int_contents": _wire.CONTENTS_INT,
            "int64_contents": _wire.CONTENTS_INT64,
            "uint_contents": _wire.CONTENTS_UINT,
            "uint64_contents": _wire.CONTENTS_UINT64,
            "fp32_contents": _wire.CONTENTS_FP32,
            "fp64_contents": _wire.CONTENTS_FP64,
            "bytes_contents": _wire.CONTENTS_BYTES,
        },
    ),
]


@pytest.mark.parametrize(
    ("cls", "numbers"), FIELD_NUMBERS, ids=lambda x: getattr(x, "__name__", "")
)
def test_field_numbers_are_the_generated_classes(cls: Any, numbers: dict[str, int]) -> None:
    meta = cls._betterproto.meta_by_field_name
    assert numbers == {name: m.number for name, m in meta.items()}


def test_contents_table_names_the_fields_by_their_numbers() -> None:
    numbers = dict(FIELD_NUMBERS)[pb.InferTensorContents]
    assert {name: n for n, (name, _, _) in _wire._CONTENTS.items()} == numbers


def test_map_entries_are_key_1_value_2() -> None:
    # protobuf's map encoding, which no generated class spells out.
    entry = bytes(pb.ModelInferRequest(parameters={"k": pb.InferParameter(bool_param=True)}))
    key = field(_wire.MAP_KEY, 2, b"k")
    value = field(_wire.MAP_VALUE, 2, field(_wire.PARAMETER_BOOL, 0, b"\x01"))
    assert entry == field(_wire.REQUEST_PARAMETERS, 2, key + value)


# -- hand-made protobuf -------------------------------------------------------------------------


def varint(value: int) -> bytes:
    value &= (1 << 64) - 1
    out = bytearray()
    while value > 0x7F:
        out.append(value & 0x7F | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def field(number: int, wire_type: int, payload: bytes) -> bytes:
    key = varint(number << 3 | wire_type)
    if wire_type == 2:
        return key + varint(len(payload)) + payload
    return key + payload


def text(number: int, value: str) -> bytes:
    return field(number, 2, value.encode())


def both(wire: bytes) -> tuple[InferenceRequest, InferenceRequest]:
    """The core request of ``wire`` by the generated class and by ``_wire``."""
    generated = proto_convert.request_from_proto(pb.ModelInferRequest.parse(wire))
    return generated, _wire.request_of(_wire.ModelInferRequest.FromString(wire))


def assert_same(a: InferenceRequest, b: InferenceRequest) -> None:
    assert (a.id, a.parameters, a.outputs) == (b.id, b.parameters, b.outputs)
    assert len(a.inputs) == len(b.inputs)
    for x, y in zip(a.inputs, b.inputs, strict=True):
        assert (x.name, x.shape, x.datatype, x.parameters) == (
            y.name,
            y.shape,
            y.datatype,
            y.parameters,
        )
        assert x.data.dtype == y.data.dtype and x.data.shape == y.data.shape
        np.testing.assert_array_equal(x.data, y.data)


def tensor_with(datatype: str, shape: list[int], contents: bytes = b"") -> bytes:
    body = text(1, "x") + text(2, datatype)
    body += field(3, 2, b"".join(varint(d) for d in shape))
    if contents:
        body += field(5, 2, contents)
    return field(5, 2, body)


# -- encodings a peer may choose ----------------------------------------------------------------

INT32S = [0, 1, -1, 127, 128, 300, -(2**31), 2**31 - 1]


def test_unpacked_repeated_scalars() -> None:
    # proto2-style writers send one field per element; proto3 readers must accept it.
    contents = b"".join(field(2, 0, varint(v)) for v in INT32S)
    shape = b"".join(field(3, 0, varint(d)) for d in [2, 4])
    wire = field(5, 2, text(1, "x") + text(2, "INT32") + shape + field(5, 2, contents))
    generated, read = both(wire)
    assert_same(generated, read)
    assert read.inputs[0].data.tolist() == [INT32S[:4], INT32S[4:]]


def test_packed_runs_split_and_mixed_with_single_elements() -> None:
    floats = [1.5, -2.0, 3.25, 4.0, 5.5]
    contents = (
        field(6, 2, struct.pack("<2f", *floats[:2]))
        + field(6, 5, struct.pack("<f", floats[2]))
        + field(6, 2, struct.pack("<2f", *floats[3:]))
    )
    generated, read = both(tensor_with("FP32", [5], contents))
    assert_same(generated, read)
    assert read.inputs[0].data.tolist() == floats


def test_fields_in_any_order_with_unknown_fields_of_every_wire_type() -> None:
    unknown = (
        field(99, 0, varint(5))
        + field(98, 1, b"\0" * 8)
        + field(97, 2, b"junk")
        + field(96, 5, b"\0" * 4)
    )
    contents = unknown + field(3, 2, varint(-5) + varint(7))
    tensor = field(5, 2, field(5, 2, contents) + unknown + text(2, "INT64") + text(1, "x"))
    tensor += field(5, 2, field(3, 2, varint(2)) + text(1, "y") + text(2, "BYTES"))
    wire = (
        field(7, 2, b"ab")
        + unknown
        + tensor
        + text(3, "id-1")
        + text(1, "m")
        + field(6, 2, text(1, "out") + unknown)
    )
    read = _wire.ModelInferRequest.FromString(wire)
    assert (read.model_name, read.id, [bytes(r) for r in read.raw_input_contents]) == (
        "m",
        "id-1",
        [b"ab"],
    )
    assert [t.name for t in read.inputs] == ["x", "y"]
    assert list(read.inputs[0].contents.int64_contents) == [-5, 7]  # type: ignore[union-attr]
    assert [o.name for o in read.outputs] == ["out"]


def test_known_fields_of_another_wire_type_are_skipped() -> None:
    wire = field(1, 0, varint(7)) + text(1, "m") + field(3, 5, b"\0" * 4)
    read = _wire.ModelInferRequest.FromString(wire)
    assert (read.model_name, read.id) == ("m", "")


def test_raw_contents_are_views_of_the_message() -> None:
    wire = bytes(
        pb.ModelInferRequest(
            inputs=[pb.ModelInferRequestInferInputTensor(name="x", datatype="UINT8", shape=[3])],
            raw_input_contents=[b"\x01\x02\x03"],
        )
    )
    (raw,) = _wire.ModelInferRequest.FromString(wire).raw_input_contents
    assert isinstance(raw, memoryview) and raw.obj is wire and bytes(raw) == b"\x01\x02\x03"


# -- large arrays: the vectorised varint paths --------------------------------------------------

LARGE = {
    "BOOL": np.arange(300) % 3 == 0,
    "INT8": np.arange(300) % 256 - 128,
    "INT16": np.arange(300) * 219 - 2**15,
    "INT32": np.linspace(-(2**31), 2**31 - 1, 300).astype(np.int64),
    "INT64": np.linspace(-(2**63), 2**63 - 1025, 300).astype(np.int64),
    "UINT8": np.arange(300) % 256,
    "UINT16": np.arange(300) * 219,
    "UINT32": np.linspace(0, 2**32 - 1, 300).astype(np.uint64),
    "UINT64": np.linspace(0, 2**64 - 2049, 300).astype(np.uint64),
}


@pytest.mark.parametrize("raw", [False, True], ids=["typed", "raw"])
@pytest.mark.parametrize("datatype", list(LARGE))
def test_large_integer_tensors(datatype: str, raw: bool) -> None:
    values = LARGE[datatype]
    request = InferenceRequest(
        inputs=[RequestInput(name="x", shape=[3, 100], datatype=datatype, data=values)]
    )
    generated, read = both(bytes(proto_convert.request_to_proto(request, "m", raw=raw)))
    assert_same(generated, read)
    response = InferenceResponse(
        model_name="m",
        outputs=[ResponseOutput(name="y", shape=[300], datatype=datatype, data=values)],
    )
    wire = _wire.write_infer_response(response, raw=raw)
    assert wire == bytes(proto_convert.response_to_proto(response, raw=raw))


def test_out_of_range_values_of_a_large_tensor_name_the_first() -> None:
    values = [*range(200), 1000, 5]
    wire = tensor_with("INT8", [202], field(2, 2, b"".join(varint(v) for v in values)))
    expected = "Expected `INT8` values, got `128` - at `$.inputs[0].contents.int_contents[128]`"
    with pytest.raises(InvalidRequest) as generated:
        proto_convert.request_from_proto(pb.ModelInferRequest.parse(wire))
    with pytest.raises(InvalidRequest) as read:
        _wire.request_of(_wire.ModelInferRequest.FromString(wire))
    assert str(generated.value) == str(read.value) == expected


# -- malformed bytes ----------------------------------------------------------------------------

GOOD = bytes(
    proto_convert.request_to_proto(
        InferenceRequest(
            id="r",
            parameters={"a": 1.5},
            inputs=[
                RequestInput(name="x", shape=[2], datatype="INT64", data=[-1, 300]),
                RequestInput(name="y", shape=[1], datatype="BYTES", data=[b"hi"]),
            ],
        ),
        "model",
    )
)

MALFORMED = [
    ("varint longer than 10 bytes", field(1, 0, b"\xff" * 10 + b"\x01")),
    ("field number 0", b"\x02\x00"),
    ("group wire type", b"\x0b"),
    ("wire type 6", b"\x0e"),
    ("length past the end", b"\x0a\x05abc"),
    ("fixed64 past the end", b"\x09\x00\x00"),
    ("packed FP32 not a multiple of 4", tensor_with("FP32", [1], field(6, 2, b"\0" * 5))),
    ("packed varints cut", tensor_with("INT32", [1], field(2, 2, b"\x80"))),
    ("name not UTF-8", text(1, "m")[:-1] + b"\xff"),
]


@pytest.mark.parametrize("wire", [row[1] for row in MALFORMED], ids=[row[0] for row in MALFORMED])
def test_malformed_messages_raise_value_errors(wire: bytes) -> None:
    with pytest.raises((ValueError, IndexError)):
        _wire.ModelInferRequest.FromString(wire)


def test_every_truncation_parses_or_raises_a_value_error() -> None:
    for end in range(len(GOOD)):
        try:
            _wire.ModelInferRequest.FromString(GOOD[:end])
        except (ValueError, IndexError):
            pass


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=64))
def test_random_bytes_parse_or_raise_a_value_error(data: bytes) -> None:
    try:
        _wire.ModelInferRequest.FromString(GOOD[:20] + data)
    except (ValueError, IndexError):
        pass


# -- random messages ----------------------------------------------------------------------------

DTYPES = NUMERIC_DTYPES

params = st.dictionaries(
    st.text(max_size=5),
    st.one_of(
        st.booleans(),
        st.integers(-(2**63), 2**64 - 1),
        st.floats(allow_nan=False),
        st.text(max_size=8),
    ),
    max_size=3,
)


WIDTHS: dict[int, Literal[16, 32, 64]] = {2: 16, 4: 32, 8: 64}


@st.composite
def tensors(draw: Any) -> tuple[str, list[int], Any, dict[str, Any]]:
    datatype = draw(st.sampled_from([*DTYPES, "BYTES"]))
    shape = draw(st.lists(st.integers(0, 4), min_size=1, max_size=3))
    n = int(np.prod(shape))
    dtype: np.dtype[Any] = np.dtype(DTYPES.get(datatype, object))
    if datatype == "BYTES":
        elements: Any = st.binary(max_size=6)
    elif dtype.kind == "f":
        # No NaN: a signalling one changes payload through the generated class's Python floats.
        elements = st.floats(width=WIDTHS[dtype.itemsize], allow_nan=False)
    elif dtype.kind == "b":
        elements = st.booleans()
    else:
        info = np.iinfo(dtype)
        elements = st.integers(int(info.min), int(info.max))
    values = draw(st.lists(elements, min_size=n, max_size=n))
    data = np.empty(n, dtype)
    data[:] = values
    return datatype, shape, data, draw(params)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.lists(tensors(), max_size=3),
    params,
    st.text(max_size=6),
    st.booleans(),
)
def test_random_messages(
    specs: list[tuple[str, list[int], Any, dict[str, Any]]],
    parameters: dict[str, Any],
    request_id: str,
    raw: bool,
) -> None:
    inputs = [
        RequestInput(name=f"in{i}", shape=s, datatype=d, data=x, parameters=p or None)
        for i, (d, s, x, p) in enumerate(specs)
    ]
    request = InferenceRequest(id=request_id or None, parameters=parameters or None, inputs=inputs)
    generated, read = both(bytes(proto_convert.request_to_proto(request, "m", raw=raw)))
    assert_same(generated, read)

    outputs = [
        ResponseOutput(
            name=t.name, shape=t.shape, datatype=t.datatype, data=t.data, parameters=t.parameters
        )
        for t in inputs
    ]
    response = InferenceResponse(
        model_name="m", id=request_id or None, parameters=parameters or None, outputs=outputs
    )
    assert _wire.write_infer_response(response, raw=raw) == bytes(
        proto_convert.response_to_proto(response, raw=raw)
    )


def test_stream_responses() -> None:
    reply = _wire.write_infer_response(InferenceResponse(model_name="m", outputs=[]))
    for error, response in [("boom", None), ("", reply), ("", b"")]:
        expected = pb.ModelStreamInferResponse(error_message=error)
        if response is not None:
            expected.infer_response = pb.ModelInferResponse.parse(response)
        assert _wire.write_stream_response(error, response) == bytes(expected)

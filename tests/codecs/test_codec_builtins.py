"""The built-in input and request codecs, against what MLServer sends and expects."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import msgspec
import numpy as np
import pytest

from inferkit.codecs import (
    Base64Codec,
    DatetimeCodec,
    InputCodec,
    NumpyCodec,
    NumpyRequestCodec,
    StringCodec,
    StringRequestCodec,
)
from inferkit.errors import InvalidRequest
from inferkit.types import InferenceRequest, InferenceResponse, RequestInput, encode_json


def request_input(body: bytes) -> RequestInput:
    return msgspec.json.decode(body, type=RequestInput)


# (codec, payload, use_bytes, exact JSON of the encoded input).
ENCODED = [
    (
        StringCodec,
        ["a b", "a c"],
        False,
        b'{"name":"x","shape":[2,1],"datatype":"BYTES","parameters":{"content_type":"str"},'
        b'"data":["a b","a c"]}',
    ),
    (
        StringCodec,
        ["é"],
        True,
        '{"name":"x","shape":[1,1],"datatype":"BYTES","parameters":{"content_type":"str"},'
        '"data":["é"]}'.encode(),
    ),
    (
        Base64Codec,
        [b"\x00\xff", b"hi"],
        True,
        b'{"name":"x","shape":[2,1],"datatype":"BYTES","parameters":{"content_type":"base64"},'
        b'"data":["AP8=","aGk="]}',
    ),
    (
        DatetimeCodec,
        [datetime(2024, 1, 2, 3, 4, 5), "2020-01-01T00:00:00"],
        True,
        b'{"name":"x","shape":[2,1],"datatype":"BYTES","parameters":{"content_type":"datetime"},'
        b'"data":["2024-01-02T03:04:05","2020-01-01T00:00:00"]}',
    ),
    (
        NumpyCodec,
        np.array([1, 2, 3], np.int32),
        True,
        b'{"name":"x","shape":[3,1],"datatype":"INT32","parameters":{"content_type":"np"},'
        b'"data":[1,2,3]}',
    ),
    (
        NumpyCodec,
        np.array([[1.5], [2.5]], np.float32),
        True,
        b'{"name":"x","shape":[2,1],"datatype":"FP32","parameters":{"content_type":"np"},'
        b'"data":[1.5,2.5]}',
    ),
]


@pytest.mark.parametrize(("codec", "payload", "use_bytes", "json"), ENCODED)
def test_encode_input_json(
    codec: type[InputCodec], payload: Any, use_bytes: bool, json: bytes
) -> None:
    encoded = codec.encode_input("x", payload, use_bytes=use_bytes)
    assert encode_json(encoded) == json
    # encode_output writes the same tensor (as a response output).
    assert encode_json(codec.encode_output("x", payload, use_bytes=use_bytes)) == json


def test_string_codec_without_bytes_is_plain_strings() -> None:
    # The MLServer quickstart builds its request this way and prints it.
    encoded = StringCodec.encode_input("docs", ["a b", "a c"], use_bytes=False)
    assert encoded == RequestInput(
        name="docs",
        shape=[2, 1],
        datatype="BYTES",
        parameters={"content_type": "str"},
        data=["a b", "a c"],
    )


# (codec, input JSON, decoded value).
DECODED = [
    (StringCodec, b'{"name":"x","shape":[2],"datatype":"BYTES","data":["a","b"]}', ["a", "b"]),
    (
        StringCodec,
        b'{"name":"x","shape":[2,1],"datatype":"BYTES","data":[["a"],["b"]]}',
        ["a", "b"],
    ),
    (StringCodec, b'{"name":"x","shape":[1],"datatype":"BYTES","data":[null]}', [None]),
    (Base64Codec, b'{"name":"x","shape":[1],"datatype":"BYTES","data":["aGk="]}', [b"hi"]),
    # Not base64: taken as the bytes themselves, as MLServer does.
    (Base64Codec, b'{"name":"x","shape":[1],"datatype":"BYTES","data":["hi!"]}', [b"hi!"]),
    (
        DatetimeCodec,
        b'{"name":"x","shape":[1],"datatype":"BYTES","data":["2024-01-02T03:04:05"]}',
        [datetime(2024, 1, 2, 3, 4, 5)],
    ),
]


@pytest.mark.parametrize(("codec", "body", "expected"), DECODED)
def test_decode_input(codec: type[InputCodec], body: bytes, expected: Any) -> None:
    assert codec.decode_input(request_input(body)) == expected


@pytest.mark.parametrize("codec", [StringCodec, Base64Codec, DatetimeCodec])
def test_bytes_codecs_decode_raw_and_array_data(codec: type[InputCodec]) -> None:
    payload: Any = (
        [datetime(2001, 2, 3)]
        if codec is DatetimeCodec
        else [b"ab", b"c"]
        if codec is Base64Codec
        else ["ab", "c"]
    )
    encoded = codec.encode_input("x", payload)
    assert isinstance(encoded.data, np.ndarray)
    assert codec.decode_input(encoded) == payload


# (codec, input JSON, exact error message).
DECODE_ERRORS = [
    (StringCodec, b'{"name":"x","shape":[2],"datatype":"BYTES","data":["a",3]}',
     "Expected a string, got `3` - at `$.data[1]`"),
    (DatetimeCodec, b'{"name":"x","shape":[1],"datatype":"BYTES","data":["yesterday"]}',
     'Expected an ISO 8601 datetime, got `"yesterday"` - at `$.data[0]`'),
    (Base64Codec, b'{"name":"x","shape":[1],"datatype":"BYTES","data":[7]}',
     "Expected bytes or a string, got `7` - at `$.data[0]`"),
    (NumpyCodec, b'{"name":"x","shape":[3],"datatype":"FP32","data":[1,2]}',
     "Expected 3 elements for shape [3], got 2 - at `$.data`"),
]  # fmt: skip


@pytest.mark.parametrize(("codec", "body", "message"), DECODE_ERRORS)
def test_decode_input_errors(codec: type[InputCodec], body: bytes, message: str) -> None:
    with pytest.raises(InvalidRequest) as info:
        codec.decode_input(request_input(body))
    assert str(info.value) == message


def test_string_codec_refuses_invalid_utf8() -> None:
    tensor = RequestInput(name="x", shape=[1], datatype="BYTES", data=[b"\xff"])
    with pytest.raises(InvalidRequest) as info:
        StringCodec.decode_input(tensor)
    assert str(info.value) == "Expected UTF-8 text, got invalid bytes - at `$.data[0]`"


# (codec, payload, can it encode?).
CAN_ENCODE = [
    (NumpyCodec, np.zeros(2), True),
    (NumpyCodec, [1.0], False),
    (StringCodec, ["a"], True),
    (StringCodec, [], True),
    (StringCodec, ["a", b"b"], False),
    (StringCodec, "a", False),
    (Base64Codec, [b"a"], True),
    (Base64Codec, ["a"], False),
    (DatetimeCodec, [datetime(2020, 1, 1)], True),
    (DatetimeCodec, ["2020-01-01"], False),
]


@pytest.mark.parametrize(("codec", "payload", "expected"), CAN_ENCODE)
def test_can_encode(codec: type[InputCodec], payload: Any, expected: bool) -> None:
    assert codec.can_encode(payload) is expected


def test_numpy_request_codec() -> None:
    request = NumpyRequestCodec.encode_request(np.array([[1, 2]], np.int64))
    assert [inp.name for inp in request.inputs] == ["input-1"]
    np.testing.assert_array_equal(NumpyRequestCodec.decode_request(request), [[1, 2]])
    response = NumpyRequestCodec.encode_response("m", np.array([0.5]), "v1")
    assert encode_json(response) == (
        b'{"model_name":"m","model_version":"v1","outputs":[{"name":"output-1","shape":[1,1],'
        b'"datatype":"FP64","parameters":{"content_type":"np"},"data":[0.5]}]}'
    )
    np.testing.assert_array_equal(NumpyRequestCodec.decode_response(response), [[0.5]])


def test_string_request_codec() -> None:
    request = StringRequestCodec.encode_request(["a", "b"], use_bytes=False)
    assert request.inputs[0].data == ["a", "b"]
    assert StringRequestCodec.decode_request(request) == ["a", "b"]
    response = StringRequestCodec.encode_response("m", ["x"])
    assert StringRequestCodec.decode_response(response) == ["x"]


def test_single_input_request_codecs_refuse_several_tensors() -> None:
    two = InferenceRequest(
        inputs=[
            RequestInput(name="a", shape=[1], datatype="FP32", data=[1]),
            RequestInput(name="b", shape=[1], datatype="FP32", data=[1]),
        ]
    )
    with pytest.raises(InvalidRequest) as info:
        NumpyRequestCodec.decode_request(two)
    assert str(info.value) == (
        "The 'np' codec only supports a single input tensor (2 were received) - at `$.inputs`"
    )
    with pytest.raises(InvalidRequest) as info:
        StringRequestCodec.decode_response(InferenceResponse(model_name="m", outputs=[]))
    assert str(info.value) == (
        "The 'str' codec only supports a single output tensor (0 were received) - at `$.outputs`"
    )


def test_request_codec_locates_errors_in_the_request() -> None:
    request = msgspec.json.decode(
        b'{"inputs":[{"name":"a","shape":[2],"datatype":"FP32","data":[1,"x"]}]}',
        type=InferenceRequest,
    )
    with pytest.raises(InvalidRequest) as info:
        NumpyRequestCodec.decode_request(request)
    assert str(info.value) == 'Expected `FP32`, got `"x"` - at `$.inputs[0].data[1]`'

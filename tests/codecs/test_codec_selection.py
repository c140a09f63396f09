"""decode_input / decode_request / encode_output / encode_response: content type precedence."""

from __future__ import annotations

from typing import Any

import msgspec
import numpy as np
import pandas as pd
import pytest

from inferkit.codecs import (
    NumpyCodec,
    NumpyRequestCodec,
    StringCodec,
    decode_input,
    decode_request,
    default_codecs,
    encode_output,
    encode_response,
)
from inferkit.errors import InvalidRequest
from inferkit.types import (
    InferenceRequest,
    MetadataTensor,
    RequestInput,
    RequestOutput,
    encode_json,
)


def tensor(content_type: str | None = None) -> RequestInput:
    parameters = {"content_type": content_type} if content_type else None
    return RequestInput(
        name="x", shape=[2], datatype="BYTES", parameters=parameters, data=["1", "2"]
    )


def declared(content_type: str | None) -> list[MetadataTensor]:
    parameters = {"content_type": content_type} if content_type else None
    return [
        MetadataTensor(
            name="other", datatype="FP32", shape=[-1], parameters={"content_type": "np"}
        ),
        MetadataTensor(name="x", datatype="BYTES", shape=[-1], parameters=parameters),
    ]


STRINGS = ["1", "2"]
BYTES = np.array([b"1", b"2"], dtype=object)

# (tensor's content type, metadata's content type, default codec, decoded value)
DECODE_INPUT = [
    ("str", "np", NumpyCodec, STRINGS),  # the tensor's own wins
    (None, "str", NumpyCodec, STRINGS),  # then the model's metadata
    (None, None, StringCodec, STRINGS),  # then the default codec
    ("unknown", None, StringCodec, STRINGS),  # an unknown content type is skipped
    (None, None, None, ["1", "2"]),  # else the raw data
    ("np", "str", None, BYTES),
]


@pytest.mark.parametrize(("own", "meta", "default", "expected"), DECODE_INPUT)
def test_decode_input_precedence(own: Any, meta: Any, default: Any, expected: Any) -> None:
    decoded = decode_input(default_codecs(), tensor(own), declared(meta), default)
    if isinstance(expected, np.ndarray):
        assert decoded.tolist() == expected.tolist()
    else:
        assert decoded == expected


def test_decode_input_locates_errors() -> None:
    bad = RequestInput(
        name="x", shape=[2], datatype="FP32", parameters={"content_type": "np"}, data=[1, "a"]
    )
    with pytest.raises(InvalidRequest) as info:
        decode_input(default_codecs(), bad, where="$.inputs[3]")
    assert str(info.value) == 'Expected `FP32`, got `"a"` - at `$.inputs[3].data[1]`'


def test_decode_request_precedence() -> None:
    registry = default_codecs()
    body = b'{"inputs":[{"name":"x","shape":[1],"datatype":"FP32","data":[1.5]}]}'
    plain = msgspec.json.decode(body, type=InferenceRequest)
    assert decode_request(registry, plain) is plain  # no content type anywhere
    assert decode_request(registry, plain, content_type="np").tolist() == [1.5]
    assert decode_request(registry, plain, default_codec=NumpyRequestCodec).tolist() == [1.5]
    frame = decode_request(registry, plain, content_type="pd")
    assert isinstance(frame, pd.DataFrame)
    # The request's own content type beats the model's.
    tagged = msgspec.json.decode(
        body.replace(b'{"inputs"', b'{"parameters":{"content_type":"pd"},"inputs"'),
        type=InferenceRequest,
    )
    assert isinstance(decode_request(registry, tagged, content_type="np"), pd.DataFrame)


def test_decode_request_applies_declared_input_content_types() -> None:
    request = msgspec.json.decode(
        b'{"parameters":{"content_type":"pd"},"inputs":['
        b'{"name":"x","shape":[1],"datatype":"BYTES","data":["2020-01-01T00:00:00"]}]}',
        type=InferenceRequest,
    )
    frame = decode_request(default_codecs(), request, declared("datetime"))
    assert frame["x"].tolist() == [pd.Timestamp("2020-01-01")]


# (requested output's content type, metadata's content type, payload, default, datatype)
ENCODE_OUTPUT = [
    (None, None, np.array([1.0]), None, "FP64"),  # found by payload
    (None, None, ["a"], None, "BYTES"),
    ("str", "np", ["a"], None, "BYTES"),
    (None, "np", np.array([1], np.int8), StringCodec, "INT8"),
    (None, None, {"a": 1}, NumpyCodec, "BYTES"),  # the default codec for an unknown payload
]


@pytest.mark.parametrize(("own", "meta", "payload", "default", "datatype"), ENCODE_OUTPUT)
def test_encode_output(own: Any, meta: Any, payload: Any, default: Any, datatype: str) -> None:
    parameters = {"content_type": own} if own else None
    requested = RequestOutput(name="x", parameters=parameters)
    out = encode_output(default_codecs(), payload, requested, declared(meta), default)
    assert (out.name, out.datatype) == ("x", datatype)


def test_encode_output_without_codec_is_a_model_bug() -> None:
    with pytest.raises(TypeError, match="Codec not found for output field with name 'x'"):
        encode_output(default_codecs(), {"a": 1}, RequestOutput(name="x"))


def test_encode_response() -> None:
    registry = default_codecs()
    response = encode_response(registry, "m", np.array([[1, 2]], np.int32), "v2")
    assert encode_json(response) == (
        b'{"model_name":"m","model_version":"v2","outputs":[{"name":"output-1","shape":[1,2],'
        b'"datatype":"INT32","parameters":{"content_type":"np"},"data":[1,2]}]}'
    )
    frame = encode_response(registry, "m", pd.DataFrame({"a": [1.5]}))
    assert frame.parameters == {"content_type": "pd"}
    with pytest.raises(TypeError, match="Codec not found for output response with type"):
        encode_response(registry, "m", {1, 2})

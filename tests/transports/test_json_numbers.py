"""The REST fast path for large JSON number arrays gives what the plain path gives, bit for bit.

Property tests decode generated bodies both ways: the plain msgspec decoder (what the REST
endpoint did before) and :class:`NumbersDecoder` (with a small size threshold, so short arrays
take the fast path too). Every input must decode to the same array (bytes, dtype, shape) or the
same error (class, message, location), through ``decode_tensor``, the input codecs (the string
ones too, whose errors name the element) and ``PandasCodec``; and the request (so an input a
model echoes) must encode to the same JSON: the float64 array in ``data`` writes the same numbers
as the list.
"""

from __future__ import annotations

import json
import math
from typing import Any

import msgspec
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from inferkit import errors
from inferkit.codecs import (
    Base64Codec,
    DatetimeCodec,
    NumpyCodec,
    PandasCodec,
    StringCodec,
    check_tensor,
    decode_tensor,
)
from inferkit.transports.json_numbers import NumbersDecoder
from inferkit.types import InferenceRequest, RequestInput, encode_json, to_dict

PLAIN = msgspec.json.Decoder(InferenceRequest).decode
MIN = 1  # byte: every array takes the fast path here


def fast_decoder() -> NumbersDecoder:
    return NumbersDecoder(PLAIN, min_bytes=MIN)


def outcome(tensor: RequestInput, where: str) -> tuple[Any, ...]:
    """What the model gets from a tensor: the checked and decoded array, or the error."""
    try:
        check_tensor(tensor, where)
        array = decode_tensor(tensor, where)
    except errors.InferkitError as exc:
        return ("error", type(exc).__name__, exc.message)
    return ("array", array.dtype.str, array.shape, array.tobytes(), array.flags.writeable)


def exact(value: Any) -> Any:
    """A value's exact form: arrays as dtype, shape and bytes (their repr rounds)."""
    if isinstance(value, np.ndarray):
        if value.dtype == object:
            return ("objects", value.shape, [exact(v) for v in value.tolist()])
        return ("array", value.dtype.str, value.shape, value.tobytes())
    if isinstance(value, list):
        return [exact(v) for v in value]
    if isinstance(value, float):
        return ("float", value.hex())
    return (type(value).__name__, repr(value))


def codec_outcome(codec: Any, tensor: RequestInput) -> tuple[Any, ...]:
    """What a model gets from an input codec (also the wrong one for numbers: its error)."""
    try:
        return ("value", exact(codec.decode_input(tensor)))
    except errors.InferkitError as exc:
        return ("error", type(exc).__name__, exc.message)


def frame_outcome(request: InferenceRequest) -> tuple[Any, ...]:
    try:
        frame = PandasCodec.decode_request(request)
    except errors.InferkitError as exc:
        return ("error", type(exc).__name__, exc.message)
    return tuple((name, str(frame[name].dtype), exact(list(frame[name]))) for name in frame)


CODECS = [NumpyCodec, StringCodec, Base64Codec, DatetimeCodec]


def outcomes(body: bytes, decode: Any) -> tuple[Any, ...]:
    try:
        request = decode(body)
    except (msgspec.ValidationError, msgspec.DecodeError) as exc:
        return ("request error", type(exc).__name__, str(exc))
    found = [outcome(t, f"$.inputs[{i}]") for i, t in enumerate(request.inputs)]
    for codec in CODECS:  # each on a request of its own (check_tensor may store arrays)
        found += [codec_outcome(codec, t) for t in decode(body).inputs]
    return (*found, frame_outcome(decode(body)))


def encoded(body: bytes, decode: Any) -> list[bytes]:
    """The request and every input as JSON again (what a model echoing ``data`` answers), and
    ``data`` in the plain builtin form (``to_dict``, MLServer's ``.dict()``)."""
    request = decode(body)
    inputs = [encode_json(t) for t in request.inputs]
    return [encode_json(request), *inputs, msgspec.json.encode(to_dict(request))]


def compare(body: bytes) -> bool:
    """Assert both paths agree on ``body``; whether the fast path answered."""
    fast = fast_decoder()
    taken = fast.decode(body) is not None
    fast_decode = lambda b: fast.decode(b) or PLAIN(b)  # noqa: E731 - the endpoint's logic
    assert outcomes(body, fast_decode) == outcomes(body, PLAIN)
    if not isinstance(outcomes(body, PLAIN)[0], str):
        assert encoded(body, fast_decode) == encoded(body, PLAIN)
    return taken


def number_texts() -> st.SearchStrategy[str]:
    """JSON numbers as clients write them: shortest repr, %.17g, exponents, ints, -0."""
    floats = st.floats(allow_nan=False, allow_infinity=False, allow_subnormal=True)
    float32s = st.floats(width=32, allow_nan=False, allow_infinity=False)
    ints = st.one_of(
        st.integers(-(2**70), 2**70),
        st.sampled_from([2**53 + 1, 2**63 - 1, 2**63, 2**64 - 1, 2**64, -(2**63), -(2**63) - 1]),
        st.integers(-1000, 1000),
    )
    return st.one_of(
        floats.map(repr),
        float32s.map(repr),
        floats.map(lambda x: f"{x:.17g}" if "e" in f"{x:.17g}" or "." in f"{x:.17g}" else repr(x)),
        floats.map(lambda x: f"{x:.6E}"),
        ints.map(str),
        st.sampled_from(
            [
                "-0",
                "-0.0",
                "0.0",
                "1e400",
                "-1e400",
                "1e-400",
                "4.9e-324",
                "2.2250738585072011e-308",
                "3.4028235e38",
                "3.4028236e38",
                "65504",
                "65520",
                "1E+2",
                "0.1000000000000000055511151231257827021181583404541015625",
            ]
        ),
    )


def odd_texts() -> st.SearchStrategy[str]:
    """What is not a plain number: the fast path must leave these to the plain path."""
    return st.sampled_from(
        ["true", "false", "null", '"1.5"', "NaN", "Infinity", "01", "1.", ".5", "+1", "[1]", "{}"]
    )


DATATYPES = ["FP16", "FP32", "FP64", "INT8", "INT32", "INT64", "UINT8", "UINT64", "BOOL"]


@st.composite
def bodies(draw: st.DrawFn) -> bytes:
    inputs = []
    for i in range(draw(st.integers(1, 3))):
        texts = draw(st.lists(number_texts(), min_size=0, max_size=40))
        if draw(st.booleans()) and texts:
            texts[draw(st.integers(0, len(texts) - 1))] = draw(odd_texts())
        sep = draw(st.sampled_from([",", ", ", " ,\n", ",\t"]))
        array = "[" + sep.join(texts) + "]"
        if draw(st.integers(0, 9)) == 0 and len(texts) >= 2:  # nested: left to the plain path
            half = len(texts) // 2
            array = "[[" + ",".join(texts[:half]) + "],[" + ",".join(texts[half:]) + "]]"
        count = len(texts) + draw(st.sampled_from([0, 0, 0, 1, -1]))
        shape = draw(st.sampled_from([[max(count, 0)], [1, max(count, 0)]]))
        datatype = draw(st.sampled_from(DATATYPES))
        space = draw(st.sampled_from(["", " ", "\n  "]))
        inputs.append(
            f'{{"name":"in{i}","shape":{json.dumps(shape)},"datatype":"{datatype}",'
            f'"data"{space}:{space}{array}}}'
        )
    return ('{"inputs":[' + ",".join(inputs) + "]}").encode()


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(bodies())
def test_fast_path_gives_the_plain_answers(body: bytes) -> None:
    compare(body)


@settings(max_examples=300, deadline=None)
@given(
    st.lists(st.floats(allow_nan=False, allow_infinity=False), min_size=1, max_size=200),
    st.sampled_from(["FP16", "FP32", "FP64"]),
    st.sampled_from([repr, lambda x: f"{x:.17g}", lambda x: f"{x:.17e}"]),
)
def test_floats_parse_as_python_float_does(numbers: list[float], datatype: str, show: Any) -> None:
    # Correct rounding, subnormals and 17-digit values included; the fast path must answer.
    texts = [show(x) for x in numbers]
    texts = [t if any(c in t for c in ".eEn") else t + ".0" for t in texts]
    body = json.dumps({"inputs": [{"name": "x", "shape": [len(texts)], "datatype": datatype}]})
    body = body[:-3] + ', "data": [' + ",".join(texts) + "]}]}"
    assert compare(body.encode())
    request = fast_decoder().decode(body.encode())
    assert request is not None and type(request.inputs[0].data) is np.ndarray


@settings(max_examples=100, deadline=None)
@given(
    st.lists(st.tuples(st.integers(0, 800), number_texts()), min_size=1, max_size=4),
    st.sampled_from(["FP16", "FP32", "FP64"]),
    st.sampled_from([",", ", "]),
)
def test_long_arrays_with_a_few_odd_numbers(
    inserts: list[tuple[int, str]], datatype: str, sep: str
) -> None:
    # Longer than the start looked at before parsing (4 KiB), with integers, -0, 1e400... here
    # and there among floats: before, across or after that boundary.
    texts = [repr((i + 0.5) / 7) for i in range(800)]
    for position, text in inserts:
        texts.insert(position, text)
    tensor = f'"name":"x","shape":[{len(texts)}],"datatype":"{datatype}"'
    body = ('{"inputs":[{' + tensor + ',"data":[' + sep.join(texts) + "]}]}").encode()
    compare(body)


def large_body(values: list[float], datatype: str = "FP32", extra: str = "") -> bytes:
    data = json.dumps(values, separators=(",", ":"))
    tensor = f'{{"name":"x","shape":[{len(values)}],"datatype":"{datatype}","data":{data}}}'
    return f'{{"inputs":[{tensor}]{extra}}}'.encode()


def test_the_endpoint_threshold_applies() -> None:
    big = [float(i) / 7 for i in range(10_000)]  # about 190 kB of JSON
    decoder = NumbersDecoder(PLAIN)
    assert decoder.decode(large_body(big)) is not None
    assert decoder.decode(large_body(big[:100])) is None  # small bodies: plain, no cost


def test_an_array_outside_the_inputs_data_is_left_alone() -> None:
    big = [float(i) / 7 for i in range(50)]
    # A "data" key in the request's parameters: the marker would land there, not in an input.
    extra = ', "parameters": {"data": ' + json.dumps(big) + "}"
    body = large_body(big, extra=extra)
    assert fast_decoder().decode(body) is None  # its marker is not an input's data: plain path
    compare(body)
    only_params = ('{"inputs":[], "parameters": {"data": ' + json.dumps(big) + "}}").encode()
    assert fast_decoder().decode(only_params) is None


def test_duplicate_data_keys_keep_the_plain_meaning() -> None:
    body = (
        b'{"inputs":[{"name":"x","shape":[3],"datatype":"FP32",'
        b'"data":[1.5,2.5,3.5],"data":[4.5,5.5,6.5]}]}'
    )
    compare(body)


def test_invalid_json_in_an_array_is_the_plain_error() -> None:
    body = b'{"inputs":[{"name":"x","shape":[3],"datatype":"FP32","data":[1.5,NaN,3.5]}]}'
    assert fast_decoder().decode(body) is None
    with pytest.raises(msgspec.DecodeError):
        PLAIN(body)


def test_data_is_the_float64_array_of_the_plain_floats() -> None:
    values = [0.1, -0.0, 1e-310, 3.0, 1e16, 0.30000000000000004]
    body = large_body(values, "FP32")
    request = fast_decoder().decode(body)
    assert request is not None
    data = request.inputs[0].data
    # Not cast to FP32: the very floats msgspec gives, so they write back as the same text.
    assert type(data) is np.ndarray and data.dtype == np.float64 and data.flags.writeable
    assert data.tolist() == PLAIN(body).inputs[0].data == values
    assert math.copysign(1, data[1]) == -1
    assert encode_json(request) == encode_json(PLAIN(body))
    assert b'"data":[0.1,-0.0,1e-310,3.0,1e16,0.30000000000000004]' in encode_json(request)
    array = decode_tensor(request.inputs[0])
    assert array.dtype == np.float32 and array.tobytes() == np.float32(values).tobytes()


def test_integers_keep_the_plain_list() -> None:
    # msgspec decodes 2 as the int 2; an array would give 2.0 back to a model echoing `data`.
    for texts in (["1.5", "2", "3.5"], ["-0", "1.5"], ["7"], ["1.5", "2E3", "-4"]):
        tensor = f'"name":"x","shape":[{len(texts)}],"datatype":"FP32","data":[{", ".join(texts)}]'
        body = ('{"inputs":[{' + tensor + "}]}").encode()
        request = fast_decoder().decode(body)
        assert request is not None
        assert type(request.inputs[0].data) is list
        assert encode_json(request) == encode_json(PLAIN(body))
    # Exponents and dots, with or without a sign: floats all.
    body = b'{"inputs":[{"name":"x","shape":[4],"datatype":"FP64","data":[1e3,-2.5,1E-2,-0.0]}]}'
    request = fast_decoder().decode(body)
    assert request is not None and type(request.inputs[0].data) is np.ndarray


def test_the_model_gets_its_own_arrays() -> None:
    request = fast_decoder().decode(large_body([1.5, 2.5, 3.5]))
    assert request is not None
    tensor = request.inputs[0]
    first = decode_tensor(tensor)
    first[0] = 99  # FP32: a cast copy, the model's own; data and a second decode unchanged
    assert decode_tensor(tensor).tolist() == [1.5, 2.5, 3.5]
    assert tensor.data.tolist() == [1.5, 2.5, 3.5]

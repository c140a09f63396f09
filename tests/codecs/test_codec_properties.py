"""Property tests: every datatype, random shapes, round trips in process, via JSON and raw bytes."""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Any, Literal

import msgspec
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from inferkit.codecs import (
    DATATYPES,
    Base64Codec,
    DatetimeCodec,
    NumpyCodec,
    StringCodec,
    check_tensor,
    decode_tensor,
    encode_raw,
    encode_tensor,
    inject_batch_dimension,
    to_dtype,
)
from inferkit.errors import InvalidShape
from inferkit.types import RequestInput, encode_json

FEW = settings(max_examples=10, deadline=None)
ALL = pytest.mark.parametrize("datatype", list(DATATYPES))
SHAPES = hnp.array_shapes(min_dims=0, max_dims=3, min_side=0, max_side=4)
NUMERIC = [name for name in DATATYPES if name != "BYTES"]


def arrays(datatype: str, *, text_only: bool = False) -> st.SearchStrategy[Any]:
    """Arrays of ``datatype``; ``text_only`` keeps what JSON can carry (no inf, UTF-8 bytes)."""
    if datatype == "BYTES":
        element = st.text(max_size=5).map(str.encode) if text_only else st.binary(max_size=5)
        return SHAPES.flatmap(
            lambda shape: st.lists(
                element, min_size=int(np.prod(shape)), max_size=int(np.prod(shape))
            ).map(lambda items: _objects(items, shape))
        )
    # JSON has no infinities (msgspec writes them as null, which reads back as NaN).
    size = to_dtype(datatype).itemsize
    width: Literal[16, 32, 64] = 16 if size == 2 else 32 if size == 4 else 64
    elements = st.floats(allow_infinity=False, width=width)
    return hnp.arrays(
        to_dtype(datatype),
        SHAPES,
        elements=elements if text_only and datatype.startswith("FP") else None,
    )


def _objects(items: list[bytes], shape: tuple[int, ...]) -> Any:
    array = np.empty(len(items), dtype=object)
    array[:] = items
    return array.reshape(shape)


def assert_same(decoded: Any, original: Any) -> None:
    expected = original.reshape(decoded.shape)
    assert decoded.dtype == original.dtype
    if original.dtype.kind == "O":
        assert decoded.tolist() == expected.tolist()
        assert all(type(item) is bytes for item in decoded.reshape(-1))
    else:
        np.testing.assert_array_equal(decoded, expected)  # NaN == NaN here


def via_json(obj: Any) -> RequestInput:
    """What a server receives: the encoded output, as JSON, decoded into a request input."""
    return msgspec.json.decode(encode_json(obj), type=RequestInput)


@ALL
@FEW
@given(data=st.data())
def test_encode_decode_in_process(datatype: str, data: st.DataObject) -> None:
    array = data.draw(arrays(datatype))
    out = encode_tensor("t", array)
    assert out.shape == (list(array.shape) or [1])
    assert_same(decode_tensor(out), array)


@ALL
@FEW
@given(data=st.data())
def test_round_trip_through_json(datatype: str, data: st.DataObject) -> None:
    array = data.draw(arrays(datatype, text_only=True))
    received = via_json(encode_tensor("t", array))
    check_tensor(received, "$.inputs[0]")
    assert_same(decode_tensor(received, "$.inputs[0]"), array)


@ALL
@FEW
@given(data=st.data())
def test_round_trip_through_raw_bytes(datatype: str, data: st.DataObject) -> None:
    array = data.draw(arrays(datatype))
    out = encode_tensor("t", array)
    raw = RequestInput(name="t", shape=out.shape, datatype=out.datatype, data=encode_raw(array))
    check_tensor(raw)
    assert_same(decode_tensor(raw), array)


@pytest.mark.parametrize("datatype", NUMERIC)
@FEW
@given(data=st.data())
def test_raw_bytes_of_the_wrong_length_are_refused(datatype: str, data: st.DataObject) -> None:
    array = data.draw(arrays(datatype))
    out = encode_tensor("t", array)
    raw = RequestInput(
        name="t", shape=out.shape, datatype=out.datatype, data=encode_raw(array) + b"\x00"
    )
    size = array.size * array.dtype.itemsize
    message = f"Expected {size} bytes for shape {out.shape} of `{out.datatype}`, got {size + 1}"
    with pytest.raises(InvalidShape) as checked:
        check_tensor(raw)
    with pytest.raises(InvalidShape) as decoded:
        decode_tensor(raw)
    assert str(checked.value) == str(decoded.value) == message + " - at `$.data`"


@ALL
@FEW
@given(data=st.data())
def test_numpy_codec_round_trip(datatype: str, data: st.DataObject) -> None:
    array = data.draw(arrays(datatype, text_only=True))
    encoded = NumpyCodec.encode_input("t", array)
    assert encoded.parameters == {"content_type": "np"}
    # MLServer's batch dimension: [N] is sent as [N, 1], a 0-d array as [1].
    assert encoded.shape == inject_batch_dimension(list(array.shape))
    assert_same(NumpyCodec.decode_input(via_json(encoded)), array)
    assert_same(NumpyCodec.decode_output(NumpyCodec.encode_output("t", array)), array)


@FEW
@given(st.lists(st.text(max_size=8), max_size=6), st.booleans())
def test_string_codec_round_trip(payload: list[str], use_bytes: bool) -> None:
    encoded = StringCodec.encode_input("t", payload, use_bytes=use_bytes)
    assert StringCodec.decode_input(encoded) == payload
    assert StringCodec.decode_input(via_json(encoded)) == payload


@FEW
@given(st.lists(st.binary(max_size=8), max_size=6), st.booleans())
def test_base64_codec_round_trip(payload: list[bytes], use_bytes: bool) -> None:
    encoded = Base64Codec.encode_input("t", payload, use_bytes=use_bytes)
    assert Base64Codec.decode_input(encoded) == payload
    assert Base64Codec.decode_input(via_json(encoded)) == payload


@FEW
@given(
    st.lists(
        st.datetimes(timezones=st.sampled_from([None, timezone.utc])).filter(
            lambda d: d.year >= 1000  # isoformat pads, fromisoformat needs four-digit years
        ),
        max_size=5,
    ),
    st.booleans(),
)
def test_datetime_codec_round_trip(payload: list[datetime], use_bytes: bool) -> None:
    encoded = DatetimeCodec.encode_input("t", payload, use_bytes=use_bytes)
    assert DatetimeCodec.decode_input(encoded) == payload
    assert DatetimeCodec.decode_input(via_json(encoded)) == payload


@FEW
@given(SHAPES, st.integers(0, 70), st.sampled_from(list(DATATYPES)))
def test_element_count_must_match_the_shape(
    shape: tuple[int, ...], length: int, datatype: str
) -> None:
    expected = int(np.prod(shape))
    value: Any = "a" if datatype == "BYTES" else 1
    tensor = RequestInput(name="t", shape=list(shape), datatype=datatype, data=[value] * length)
    if length == expected:
        check_tensor(tensor, "$.inputs[2]")
        assert decode_tensor(tensor, "$.inputs[2]").shape == shape
        return
    message = (
        f"Expected {expected} elements for shape {list(shape)}, got {length} "
        "- at `$.inputs[2].data`"
    )
    with pytest.raises(InvalidShape) as checked:
        check_tensor(tensor, "$.inputs[2]")
    with pytest.raises(InvalidShape) as decoded:
        decode_tensor(tensor, "$.inputs[2]")
    assert str(checked.value) == str(decoded.value) == message

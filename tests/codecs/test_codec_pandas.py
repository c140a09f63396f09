"""The ``pd`` request codec: one column per tensor, pandas imported only when used."""

from __future__ import annotations

import subprocess
import sys
from typing import Any

import msgspec
import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from inferkit.codecs import PandasCodec
from inferkit.errors import InvalidRequest
from inferkit.types import InferenceRequest, encode_json


def request(body: bytes) -> InferenceRequest:
    return msgspec.json.decode(body, type=InferenceRequest)


def test_importing_the_codecs_does_not_import_pandas() -> None:
    code = (
        "import sys, inferkit.codecs as c\n"
        "assert not c.PandasCodec.can_encode([1])\n"
        "c.default_codecs().find_request_codec(type_hint=list)\n"
        "assert 'pandas' not in sys.modules, 'pandas imported'\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_decode_request_as_in_mlserver() -> None:
    frame = PandasCodec.decode_request(
        request(
            b'{"parameters":{"content_type":"pd"},"inputs":['
            b'{"name":"a","shape":[2,1],"datatype":"INT32","data":[1,2]},'
            b'{"name":"b","shape":[2],"datatype":"FP64","data":[0.5,null]},'
            b'{"name":"c","shape":[2,1],"datatype":"BYTES","data":["x","y"]},'
            b'{"name":"d","shape":[2],"datatype":"BYTES","parameters":{"content_type":"str"},'
            b'"data":["p","q"]},'
            b'{"name":"e","shape":[2],"datatype":"BYTES","parameters":{"content_type":"datetime"},'
            b'"data":["2020-01-01T00:00:00","2021-01-01T00:00:00"]},'
            b'{"name":"f","shape":[2],"datatype":"BYTES","parameters":{"content_type":"pd_json"},'
            b'"data":["{\\"k\\":1}","[1,2]"]}'
            b"]}"
        )
    )
    assert list(frame.columns) == ["a", "b", "c", "d", "e", "f"]
    assert frame["a"].dtype == np.int32
    assert frame["a"].tolist() == [1, 2]
    assert frame["b"].iloc[0] == 0.5
    assert np.isnan(frame["b"].iloc[1])
    assert frame["c"].tolist() == ["x", "y"]  # JSON strings stay strings
    assert frame["d"].tolist() == ["p", "q"]
    assert list(frame["e"]) == [pd.Timestamp("2020-01-01"), pd.Timestamp("2021-01-01")]
    assert frame["f"].tolist() == [{"k": 1}, [1, 2]]


def test_rows_of_several_values_become_arrays() -> None:
    frame = PandasCodec.decode_request(
        request(b'{"inputs":[{"name":"a","shape":[2,2],"datatype":"FP32","data":[1,2,3,4]}]}')
    )
    assert [row.tolist() for row in frame["a"]] == [[1, 2], [3, 4]]


def test_encode_response_json() -> None:
    frame = pd.DataFrame({"n": np.array([1, 2], np.int64), "s": ["a", "é"], "o": [{"k": 1}, None]})
    response = PandasCodec.encode_response("m", frame, "1")
    assert (
        encode_json(response)
        == (
            '{"model_name":"m","model_version":"1","parameters":{"content_type":"pd"},"outputs":['
            '{"name":"n","shape":[2,1],"datatype":"INT64","data":[1,2]},'
            '{"name":"s","shape":[2,1],"datatype":"BYTES","parameters":{"content_type":"str"},'
            '"data":["a","é"]},'
            '{"name":"o","shape":[2,1],"datatype":"BYTES","parameters":{"content_type":"pd_json"},'
            '"data":["{\\"k\\":1}","null"]}]}'
        ).encode()
    )


def test_errors_name_the_column() -> None:
    body = (
        b'{"inputs":[{"name":"a","shape":[1],"datatype":"FP32","data":[1]},'
        b'{"name":"b","shape":[2],"datatype":"FP32","data":[1,"x"]}]}'
    )
    with pytest.raises(InvalidRequest) as info:
        PandasCodec.decode_request(request(body))
    assert str(info.value) == 'Expected `FP32`, got `"x"` - at `$.inputs[1].data[1]`'


def test_can_encode() -> None:
    assert PandasCodec.can_encode(pd.DataFrame({"a": [1]}))
    assert not PandasCodec.can_encode(np.zeros(1))


COLUMNS = st.one_of(
    st.lists(st.integers(-(2**63), 2**63 - 1), min_size=3, max_size=3),
    st.lists(st.floats(allow_infinity=False, allow_nan=False), min_size=3, max_size=3),
    st.lists(st.text(max_size=4), min_size=3, max_size=3),
    st.lists(st.booleans(), min_size=3, max_size=3),
)


@settings(max_examples=15, deadline=None)
@given(st.dictionaries(st.from_regex(r"[a-z]{1,4}", fullmatch=True), COLUMNS, max_size=3),
       st.booleans())  # fmt: skip
def test_round_trip_through_json(columns: dict[str, list[Any]], use_bytes: bool) -> None:
    frame = pd.DataFrame(columns, index=range(3))
    encoded = PandasCodec.encode_request(frame, use_bytes=use_bytes)
    received = msgspec.json.decode(encode_json(encoded), type=InferenceRequest)
    decoded = PandasCodec.decode_request(received)
    assert list(decoded.columns) == list(frame.columns)
    for name in frame.columns:
        assert decoded[name].tolist() == frame[name].tolist()

"""CodecRegistry: lookups by content type, value and annotation; registries are independent."""

from __future__ import annotations

from datetime import datetime
from typing import Any, ClassVar, List, Optional, Union  # noqa: UP035

import numpy as np
import numpy.typing as npt
import pandas as pd
import pytest

from inferkit.codecs import (
    BUILTIN_INPUT_CODECS,
    Base64Codec,
    CodecRegistry,
    DatetimeCodec,
    InputCodec,
    NumpyCodec,
    NumpyRequestCodec,
    PandasCodec,
    StringCodec,
    StringRequestCodec,
    default_codecs,
)


class Point:
    pass


class PointCodec(InputCodec):
    ContentType: ClassVar[str] = "point"
    TypeHint: ClassVar[Any] = Point

    @classmethod
    def can_encode(cls, payload: Any) -> bool:
        return isinstance(payload, Point)


# (content type, input codec, request codec)
BY_CONTENT_TYPE = [
    ("np", NumpyCodec, NumpyRequestCodec),
    ("str", StringCodec, StringRequestCodec),
    ("base64", Base64Codec, None),
    ("datetime", DatetimeCodec, None),
    ("pd", None, PandasCodec),
    ("nope", None, None),
]


@pytest.mark.parametrize(("content_type", "input_codec", "request_codec"), BY_CONTENT_TYPE)
def test_find_by_content_type(content_type: str, input_codec: Any, request_codec: Any) -> None:
    registry = default_codecs()
    assert registry.find_input_codec(content_type) is input_codec
    assert registry.find_request_codec(content_type) is request_codec


# (payload, input codec, request codec)
BY_PAYLOAD = [
    (np.zeros(3), NumpyCodec, NumpyRequestCodec),
    (["a"], StringCodec, StringRequestCodec),
    ([b"a"], Base64Codec, None),
    ([datetime(2020, 1, 1)], DatetimeCodec, None),
    (pd.DataFrame({"a": [1]}), None, PandasCodec),
    ({"a": 1}, None, None),
]


@pytest.mark.parametrize(("payload", "input_codec", "request_codec"), BY_PAYLOAD)
def test_find_by_payload(payload: Any, input_codec: Any, request_codec: Any) -> None:
    registry = default_codecs()
    assert registry.find_input_codec(payload=payload) is input_codec
    assert registry.find_request_codec(payload=payload) is request_codec


# (annotation, input codec, request codec)
BY_HINT = [
    (np.ndarray, NumpyCodec, None),
    (npt.NDArray[np.float64], NumpyCodec, None),  # a parametrised class falls back to the class
    (list[str], StringCodec, StringRequestCodec),
    (List[str], StringCodec, StringRequestCodec),  # noqa: UP006 - the typing spelling on purpose
    (list[bytes], Base64Codec, None),
    (list[Union[str, datetime]], DatetimeCodec, None),  # noqa: UP007
    (list[datetime | str], DatetimeCodec, None),  # union order does not matter
    (pd.DataFrame, None, PandasCodec),
    (list[int], None, None),
    (Optional[str], None, None),  # noqa: UP045
    (dict, None, None),
]


@pytest.mark.parametrize(("hint", "input_codec", "request_codec"), BY_HINT)
def test_find_by_type_hint(hint: Any, input_codec: Any, request_codec: Any) -> None:
    registry = default_codecs()
    assert registry.find_input_codec(type_hint=hint) is input_codec
    assert registry.find_request_codec(type_hint=hint) is request_codec


def test_nothing_to_look_up_finds_nothing() -> None:
    assert default_codecs().find_input_codec() is None
    assert default_codecs().find_request_codec() is None


def test_first_registered_codec_wins() -> None:
    # An empty list is a list of str, of bytes and of datetimes: the first registered wins.
    assert default_codecs().find_input_codec(payload=[]) is StringCodec
    registry = CodecRegistry([DatetimeCodec, StringCodec])
    assert registry.find_input_codec(payload=[]) is DatetimeCodec


def test_default_codecs_are_independent() -> None:
    one, two = default_codecs(), default_codecs()
    assert one is not two
    assert one.register_input_codec(PointCodec) is PointCodec
    assert one.find_input_codec("point") is PointCodec
    assert one.find_input_codec(payload=Point()) is PointCodec
    assert one.find_input_codec(type_hint=Point) is PointCodec
    assert two.find_input_codec("point") is None
    assert default_codecs().find_input_codec("point") is None
    assert default_codecs().input_codecs == BUILTIN_INPUT_CODECS


def test_register_replaces_by_content_type_and_bumps_revision() -> None:
    registry = CodecRegistry()
    start = registry.revision

    class MyNumpy(NumpyCodec):
        pass

    registry.register_input_codec(NumpyCodec)
    registry.register_input_codec(MyNumpy)
    assert registry.find_input_codec("np") is MyNumpy
    assert registry.input_codecs == (MyNumpy,)
    assert registry.revision == start + 2
    copy = registry.copy()
    copy.register_request_codec(PandasCodec)
    assert registry.request_codecs == ()
    assert copy.request_codecs == (PandasCodec,)


def test_codec_without_content_type_is_refused() -> None:
    with pytest.raises(ValueError, match="has no ContentType"):
        CodecRegistry().register_input_codec(InputCodec)

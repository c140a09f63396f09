"""Content types carried as ``BYTES`` lists: ``str``, ``base64`` and ``datetime`` (as in MLServer).

Each encodes a Python list of N values as a ``BYTES`` tensor of shape ``[N, 1]``. With
``use_bytes=True`` (the default) the elements are :class:`bytes`, held in an ``object`` array so
that the JSON encoder writes them as text (msgspec would write a bare ``bytes`` as base64); with
``use_bytes=False`` they are a plain list of :class:`str`, exactly as MLServer builds them.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Sequence
from datetime import datetime
from typing import Any, ClassVar

import numpy as np

from ..errors import InvalidRequest
from ..types import RequestInput, ResponseOutput
from .base import InputCodec, SingleInputRequestCodec
from .tensor import Tensor, decode_tensor, show_value

__all__ = ["Base64Codec", "DatetimeCodec", "StringCodec", "StringRequestCodec"]


def _elements(tensor: Tensor) -> tuple[list[Any], bool]:
    """The tensor's elements, flat, and whether they are the client's own (indexable) list."""
    data = tensor.data
    if type(data) is list and (not data or type(data[0]) is not list):
        return data, True
    if type(data) is np.ndarray and data.ndim == 1 and data.dtype == np.float64:
        # How the REST transport stores a large flat JSON array of floats (FP16 and FP32 too,
        # see inferkit.transports.json_numbers): the client's list, and errors name its items.
        return data.tolist(), True
    return decode_tensor(tensor).reshape(-1).tolist(), False


def _at(i: int, flat: bool) -> str:
    return f"$.data[{i}]" if flat else "$.data"


def _is_list_of(payload: Any, kind: type | tuple[type, ...]) -> bool:
    return isinstance(payload, list) and all(isinstance(item, kind) for item in payload)


def _output(
    cls: type[InputCodec], name: str, items: list[bytes] | list[str], use_bytes: bool
) -> ResponseOutput:
    data: Any = items
    if use_bytes:
        data = np.empty((len(items), 1), dtype=object)
        data[:, 0] = items
    return ResponseOutput(
        name=name,
        shape=[len(items), 1],
        datatype="BYTES",
        parameters={"content_type": cls.ContentType},
        data=data,
    )


def _as_input(output: ResponseOutput) -> RequestInput:
    return RequestInput(
        name=output.name,
        shape=output.shape,
        datatype=output.datatype,
        parameters=output.parameters,
        data=output.data,
    )


def _to_str(item: Any, where: str) -> Any:
    if isinstance(item, str) or item is None:  # JSON null passes through, as in MLServer
        return item
    if isinstance(item, (bytes, bytearray, memoryview)):
        try:
            return bytes(item).decode()
        except UnicodeDecodeError:
            raise InvalidRequest("Expected UTF-8 text, got invalid bytes", where=where) from None
    raise InvalidRequest(f"Expected a string, got `{show_value(item)}`", where=where)


def _to_bytes(item: Any, where: str) -> bytes:
    if isinstance(item, str):
        return item.encode()
    if isinstance(item, (bytes, bytearray, memoryview)):
        return bytes(item)
    raise InvalidRequest(f"Expected bytes or a string, got `{show_value(item)}`", where=where)


class _ListCodec(InputCodec):
    """A list of N values as a ``BYTES`` tensor of shape ``[N, 1]``.

    Subclasses give ``encode_output`` and ``_decode``; inputs are encoded like outputs and
    both are decoded alike, so the four MLServer methods live here once.
    """

    @classmethod
    def decode_output(cls, response_output: ResponseOutput) -> list[Any]:
        return cls._decode(response_output)

    @classmethod
    def encode_input(
        cls, name: str, payload: Sequence[Any], use_bytes: bool = True, **kwargs: Any
    ) -> RequestInput:
        return _as_input(cls.encode_output(name, payload, use_bytes=use_bytes))

    @classmethod
    def decode_input(cls, request_input: RequestInput) -> list[Any]:
        return cls._decode(request_input)

    @classmethod
    def _decode(cls, tensor: Tensor) -> list[Any]:
        raise NotImplementedError


class StringCodec(_ListCodec):
    """A list of Python strings as a ``BYTES`` tensor of UTF-8 text."""

    ContentType: ClassVar[str] = "str"
    TypeHint: ClassVar[Any] = list[str]

    @classmethod
    def can_encode(cls, payload: Any) -> bool:
        return _is_list_of(payload, str)

    @classmethod
    def encode_output(
        cls, name: str, payload: Sequence[str], use_bytes: bool = True, **kwargs: Any
    ) -> ResponseOutput:
        items = [item.encode() for item in payload] if use_bytes else list(payload)
        return _output(cls, name, items, use_bytes)

    @classmethod
    def _decode(cls, tensor: Tensor) -> list[str]:
        items, flat = _elements(tensor)
        if flat and all(type(item) is str for item in items):
            return list(items)  # the common JSON case: nothing to convert
        return [_to_str(item, _at(i, flat)) for i, item in enumerate(items)]


class StringRequestCodec(SingleInputRequestCodec):
    """Decodes a request of a single ``str`` tensor as a list of strings."""

    InputCodec: ClassVar[type[InputCodec]] = StringCodec
    ContentType: ClassVar[str] = StringCodec.ContentType
    TypeHint: ClassVar[Any] = list[str]


class Base64Codec(_ListCodec):
    """A list of binary blobs, each sent base64-encoded in a ``BYTES`` tensor."""

    ContentType: ClassVar[str] = "base64"
    TypeHint: ClassVar[Any] = list[bytes]

    @classmethod
    def can_encode(cls, payload: Any) -> bool:
        return _is_list_of(payload, bytes)

    @classmethod
    def encode_output(
        cls, name: str, payload: Sequence[bytes], use_bytes: bool = True, **kwargs: Any
    ) -> ResponseOutput:
        encoded = [base64.b64encode(_to_bytes(item, "$")) for item in payload]
        items = encoded if use_bytes else [item.decode("ascii") for item in encoded]
        return _output(cls, name, items, use_bytes)

    @classmethod
    def _decode(cls, tensor: Tensor) -> list[bytes]:
        items, flat = _elements(tensor)
        return [_from_base64(_to_bytes(item, _at(i, flat))) for i, item in enumerate(items)]


def _from_base64(item: bytes) -> bytes:
    # As MLServer: an element that is not valid base64 is taken to be the raw bytes themselves.
    try:
        return base64.b64decode(item, validate=True)
    except binascii.Error:
        return item


_Datetime = str | datetime


class DatetimeCodec(_ListCodec):
    """A list of datetimes, each sent as ISO 8601 text in a ``BYTES`` tensor."""

    ContentType: ClassVar[str] = "datetime"
    TypeHint: ClassVar[Any] = list[_Datetime]

    @classmethod
    def can_encode(cls, payload: Any) -> bool:
        return _is_list_of(payload, datetime)

    @classmethod
    def encode_output(
        cls, name: str, payload: Sequence[_Datetime], use_bytes: bool = True, **kwargs: Any
    ) -> ResponseOutput:
        # Strings are taken to be ISO dates already, as in MLServer.
        iso = [item if isinstance(item, str) else item.isoformat() for item in payload]
        items = [text.encode() for text in iso] if use_bytes else iso
        return _output(cls, name, items, use_bytes)

    @classmethod
    def _decode(cls, tensor: Tensor) -> list[datetime]:
        items, flat = _elements(tensor)
        return [_from_iso(item, _at(i, flat)) for i, item in enumerate(items)]


def _from_iso(item: Any, where: str) -> datetime:
    text = _to_str(item, where)
    try:
        return datetime.fromisoformat(text)
    except (TypeError, ValueError):
        raise InvalidRequest(
            f"Expected an ISO 8601 datetime, got `{show_value(item)}`", where=where
        ) from None

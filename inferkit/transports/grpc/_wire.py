"""ModelInfer on the wire: ``ModelInferRequest`` read, ``ModelInferResponse`` written, directly.

betterproto2 is pure Python and generic: it reads a packed ``fp32_contents`` one float at a time
through ``struct``, copies each bytes field twice, and writes a message by comparing every field
with its default under ``warnings.catch_warnings``. On a small request that was about a third
of the server's CPU time (``benchmarks/profile_grpc.py``). These are the messages of every
inference, so they are read and written here, straight from and to the protobuf encoding
(https://protobuf.dev/programming-guides/encoding/):

- packed numeric fields become numpy arrays in a few calls (``np.frombuffer`` for fixed-width
  elements, a vectorised decoder for varints), and go out through ``tobytes()``;
- bytes fields (``raw_input_contents``) are memoryview slices of the received message, not
  copies;
- as in every protobuf parser, fields may come in any order and repeated scalars packed or not;
  unknown fields, and known ones of an unexpected wire type, are skipped; malformed input
  raises ``ValueError`` (or ``IndexError``), which the service answers as an invalid request.

What is read is what the service uses, as plain attributes named as in the generated classes,
so :func:`._tensors.decode_tensors` takes either. Responses are written byte for byte as
betterproto2 writes them (tests compare the two). Every other message keeps the generated
classes.
"""

from __future__ import annotations

import struct
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from inferkit.types import (
    InferenceRequest,
    InferenceResponse,
    Parameters,
    RequestInput,
    RequestOutput,
    encode_json,
)

from ._tensors import (
    TYPED_FIELDS,
    bytes_items,
    decode_tensors,
    encode_arrays,
    needs_raw,
    raw_bytes,
)

__all__ = [
    "Encoded",
    "InputTensor",
    "ModelInferRequest",
    "TensorContents",
    "request_of",
    "write_infer_response",
    "write_stream_response",
]

_VARINT, _FIXED64, _LEN, _FIXED32 = 0, 1, 2, 5
_U64 = (1 << 64) - 1
_DOUBLE = struct.Struct("<d")
_INT64_MIN, _INT64_MAX = -(1 << 63), (1 << 63) - 1

# -- reading ------------------------------------------------------------------------------------


def _varint(data: bytes, pos: int) -> tuple[int, int]:
    """The varint at ``pos`` and the position after it (IndexError if the data ends first)."""
    byte = data[pos]
    if byte < 0x80:
        return byte, pos + 1
    value, shift = byte & 0x7F, 7
    while True:
        pos += 1
        byte = data[pos]
        value |= (byte & 0x7F) << shift
        if byte < 0x80:
            return value & _U64, pos + 1
        shift += 7
        if shift > 63:
            raise ValueError("varint longer than 10 bytes")


def _skip(data: bytes, pos: int, wire_type: int, end: int) -> int:
    """The position after a field's value of ``wire_type`` starting at ``pos``."""
    if wire_type == _VARINT:
        _, pos = _varint(data, pos)
    elif wire_type == _FIXED64:
        pos += 8
    elif wire_type == _LEN:
        size, pos = _varint(data, pos)
        pos += size
    elif wire_type == _FIXED32:
        pos += 4
    else:  # groups (3, 4) are deprecated and unused by these messages; 6, 7 do not exist
        raise ValueError(f"unsupported wire type {wire_type}")
    if pos > end:
        raise ValueError("field runs past the end of its message")
    return pos


def _fields(data: bytes, pos: int, end: int) -> Any:
    """``(field number, wire type, value start, value end)`` of each field in ``[pos, end)``.

    The value of a varint field is returned decoded in place of its start (and ``end`` -1).
    """
    while pos < end:
        tag, pos = _varint(data, pos)
        number, wire_type = tag >> 3, tag & 7
        if not number:
            raise ValueError("field number 0")
        if wire_type == _LEN:
            size, pos = _varint(data, pos)
            start, pos = pos, pos + size
            if pos > end:
                raise ValueError("field runs past the end of its message")
            yield number, wire_type, start, pos
        elif wire_type == _VARINT:
            value, pos = _varint(data, pos)
            yield number, wire_type, value, -1
        else:
            start, pos = pos, _skip(data, pos, wire_type, end)
            yield number, wire_type, start, pos
    if pos != end:
        raise ValueError("field runs past the end of its message")


def _text(data: bytes, start: int, end: int) -> str:
    return data[start:end].decode("utf-8")


def _signed(value: int) -> int:
    return value - (1 << 64) if value > _INT64_MAX else value


def _varints(chunk: memoryview) -> np.ndarray[Any, np.dtype[np.uint64]]:
    """The packed varints of ``chunk`` as uint64, without a Python loop."""
    raw = np.frombuffer(chunk, np.uint8)
    last = raw < 0x80
    if last.all():  # every value below 128: one byte each, the common case for small ints
        return raw.astype(np.uint64)
    if not last[-1]:
        raise ValueError("packed varints end inside a value")
    ends = np.flatnonzero(last)
    starts = np.empty_like(ends)
    starts[0] = 0
    starts[1:] = ends[:-1] + 1
    lengths = ends - starts + 1
    if lengths.max() > 10:
        raise ValueError("varint longer than 10 bytes")
    # Each byte's 7 bits shifted by its place in its varint, then summed per varint (the
    # shifted groups do not overlap, so the sum is their bitwise or; bits past 64 drop).
    place = np.arange(raw.size) - np.repeat(starts, lengths)
    groups = (raw & 0x7F).astype(np.uint64) << (place * 7).astype(np.uint64)
    values: np.ndarray[Any, np.dtype[np.uint64]] = np.add.reduceat(groups, starts)
    return values


# Varints read as uint64 -> the field's element type, with protobuf's truncation rules.
_FROM_U64: dict[str, Callable[[np.ndarray[Any, Any]], np.ndarray[Any, Any]]] = {
    "bool_contents": lambda u: u != 0,
    "int_contents": lambda u: u.astype(np.uint32).view(np.int32),
    "int64_contents": lambda u: u.view(np.int64),
    "uint_contents": lambda u: u.astype(np.uint32),
    "uint64_contents": lambda u: u,
}

# InferTensorContents field number -> (attribute, wire type of one element, dtype if fixed).
_CONTENTS: dict[int, tuple[str, int, str]] = {
    1: ("bool_contents", _VARINT, ""),
    2: ("int_contents", _VARINT, ""),
    3: ("int64_contents", _VARINT, ""),
    4: ("uint_contents", _VARINT, ""),
    5: ("uint64_contents", _VARINT, ""),
    6: ("fp32_contents", _FIXED32, "<f4"),
    7: ("fp64_contents", _FIXED64, "<f8"),
    8: ("bytes_contents", _LEN, ""),
}


class TensorContents:
    """``InferTensorContents`` as read: each numeric field an array of its element type."""

    __slots__ = tuple(name for name, _, _ in _CONTENTS.values())

    bool_contents: Sequence[Any]
    int_contents: Sequence[Any]
    int64_contents: Sequence[Any]
    uint_contents: Sequence[Any]
    uint64_contents: Sequence[Any]
    fp32_contents: Sequence[Any]
    fp64_contents: Sequence[Any]
    bytes_contents: Sequence[Any]

    def __init__(self) -> None:
        for name in self.__slots__:
            setattr(self, name, ())

    @classmethod
    def read(cls, data: bytes, view: memoryview, pos: int, end: int) -> TensorContents:
        # Elements of a field may come in several packed runs and one by one, in any mix.
        parts: dict[str, list[Any]] = {}
        for number, wire_type, start, stop in _fields(data, pos, end):
            known = _CONTENTS.get(number)
            if known is None:
                continue
            name, element_type, dtype = known
            if wire_type == _LEN and element_type != _LEN:  # a packed run
                run = view[start:stop]
                array = np.frombuffer(run, dtype) if dtype else _FROM_U64[name](_varints(run))
                parts.setdefault(name, []).append(array)
            elif wire_type == element_type == _LEN:
                parts.setdefault(name, []).append(data[start:stop])
            elif wire_type == element_type == _VARINT:
                array = _FROM_U64[name](np.array([start], np.uint64))
                parts.setdefault(name, []).append(array)
            elif wire_type == element_type:
                parts.setdefault(name, []).append(np.frombuffer(view[start:stop], dtype))
        contents = cls()
        for name, values in parts.items():
            if name == "bytes_contents":
                contents.bytes_contents = values
            else:
                setattr(contents, name, values[0] if len(values) == 1 else np.concatenate(values))
        return contents


def _parameter(data: bytes, pos: int, end: int) -> Any:
    # InferParameter's oneof; should a message set several, the first in field order wins, as
    # with the generated class.
    found: dict[int, Any] = {}
    for number, wire_type, start, stop in _fields(data, pos, end):
        if number == 1 and wire_type == _VARINT:
            found[1] = start != 0
        elif number == 2 and wire_type == _VARINT:
            found[2] = _signed(start)
        elif number == 3 and wire_type == _LEN:
            found[3] = _text(data, start, stop)
        elif number == 4 and wire_type == _FIXED64:
            (found[4],) = _DOUBLE.unpack_from(data, start)
        elif number == 5 and wire_type == _VARINT:
            found[5] = start
    return found[min(found)] if found else None


def _map_entry(data: bytes, pos: int, end: int, into: dict[str, Any]) -> None:
    key, value = "", None
    for number, wire_type, start, stop in _fields(data, pos, end):
        if number == 1 and wire_type == _LEN:
            key = _text(data, start, stop)
        elif number == 2 and wire_type == _LEN:
            value = _parameter(data, start, stop)
    into[key] = value


class InputTensor:
    """``ModelInferRequest.InferInputTensor`` as read; ``parameters`` are Python values."""

    __slots__ = ("contents", "datatype", "name", "parameters", "shape")

    def __init__(self) -> None:
        self.name = ""
        self.datatype = ""
        self.shape: list[int] = []
        self.parameters: dict[str, Any] = {}
        self.contents: TensorContents | None = None

    @classmethod
    def read(cls, data: bytes, view: memoryview, pos: int, end: int) -> InputTensor:
        tensor = cls()
        for number, wire_type, start, stop in _fields(data, pos, end):
            if number == 3 and wire_type == _LEN:
                tensor.shape += _packed_ints(data, start, stop)
            elif number == 3 and wire_type == _VARINT:
                tensor.shape.append(_signed(start))
            elif wire_type != _LEN:
                continue
            elif number == 1:
                tensor.name = _text(data, start, stop)
            elif number == 2:
                tensor.datatype = _text(data, start, stop)
            elif number == 4:
                _map_entry(data, start, stop, tensor.parameters)
            elif number == 5:
                tensor.contents = TensorContents.read(data, view, start, stop)
        return tensor


def _packed_ints(data: bytes, pos: int, end: int) -> list[int]:
    values = []
    while pos < end:
        value, pos = _varint(data, pos)
        values.append(_signed(value))
    if pos != end:
        raise ValueError("packed varints end inside a value")
    return values


def _output(data: bytes, pos: int, end: int) -> RequestOutput:
    name = ""
    parameters: dict[str, Any] = {}
    for number, wire_type, start, stop in _fields(data, pos, end):
        if number == 1 and wire_type == _LEN:
            name = _text(data, start, stop)
        elif number == 2 and wire_type == _LEN:
            _map_entry(data, start, stop, parameters)
    return RequestOutput(name=name, parameters=parameters or None)


class ModelInferRequest:
    """The fields of a ``ModelInferRequest``, read by :meth:`FromString` (grpclib's codec calls
    it with the received message); see :func:`request_of` for the core request."""

    __slots__ = (
        "id",
        "inputs",
        "model_name",
        "model_version",
        "outputs",
        "parameters",
        "raw_input_contents",
    )

    def __init__(self) -> None:
        self.model_name = ""
        self.model_version = ""
        self.id = ""
        self.parameters: dict[str, Any] = {}
        self.inputs: list[InputTensor] = []
        self.outputs: list[RequestOutput] = []
        self.raw_input_contents: list[memoryview] = []

    @classmethod
    def FromString(cls, data: bytes) -> ModelInferRequest:  # the protobuf API's name
        message = cls()
        view = memoryview(data)
        for number, wire_type, start, stop in _fields(data, 0, len(data)):
            if wire_type != _LEN:
                continue
            if number == 5:
                message.inputs.append(InputTensor.read(data, view, start, stop))
            elif number == 7:
                message.raw_input_contents.append(view[start:stop])
            elif number == 1:
                message.model_name = _text(data, start, stop)
            elif number == 2:
                message.model_version = _text(data, start, stop)
            elif number == 3:
                message.id = _text(data, start, stop)
            elif number == 4:
                _map_entry(data, start, stop, message.parameters)
            elif number == 6:
                message.outputs.append(_output(data, start, stop))
        return message


def request_of(message: ModelInferRequest) -> InferenceRequest:
    """The core request of a read ``ModelInferRequest``, as ``convert.request_from_proto``
    makes it of a generated one: tensors as numpy arrays, errors naming the field at fault."""
    decoded = decode_tensors(
        message.inputs, message.raw_input_contents, "$.inputs", "raw_input_contents"
    )
    return InferenceRequest(
        id=message.id or None,
        parameters=message.parameters or None,
        inputs=[
            RequestInput(
                name=t.name,
                shape=t.shape,
                datatype=t.datatype,
                parameters=t.parameters or None,
                data=data,
            )
            for t, data in decoded
        ],
        outputs=message.outputs or None,
    )


# -- writing ------------------------------------------------------------------------------------


class Encoded:
    """A message already serialized, for grpclib's codec (which calls ``SerializeToString``)."""

    __slots__ = ("data",)

    def __init__(self, data: bytes) -> None:
        self.data = data

    def SerializeToString(self) -> bytes:  # the protobuf API's name
        return self.data


def _varint_bytes(value: int) -> bytes:
    value &= _U64  # negative int64 values take 10 bytes, two's complement
    if value < 0x80:
        return _BYTE[value]
    out = bytearray()
    while value > 0x7F:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


_BYTE = [bytes([i]) for i in range(0x80)]


def _packed_varints(values: np.ndarray[Any, Any]) -> bytes:
    """Integers (any int or bool dtype) as packed varints; int64 negatives take 10 bytes."""
    if values.dtype.kind == "b" or (values.size and 0 <= values.min() and values.max() < 0x80):
        return values.astype(np.uint8).tobytes()
    if values.size <= 64:
        return b"".join([_varint_bytes(v) for v in values.tolist()])
    u = values.astype(np.int64).view(np.uint64) if values.dtype.kind == "i" else values
    u = u.astype(np.uint64, copy=False)
    sizes = np.ones(u.size, np.int64)
    for k in range(1, 10):
        sizes += u >= np.uint64(1 << (7 * k))
    starts = np.cumsum(sizes) - sizes
    out = np.empty(int(sizes.sum()), np.uint8)
    for k in range(int(sizes.max())):
        has = sizes > k
        more = (sizes[has] > k + 1).astype(np.uint8) << 7
        out[starts[has] + k] = ((u[has] >> np.uint64(7 * k)) & np.uint64(0x7F)).astype(
            np.uint8
        ) | more
    return out.tobytes()


def _key(number: int, wire_type: int) -> bytes:
    return _varint_bytes(number << 3 | wire_type)


def _len_field(parts: list[bytes], key: bytes, value: bytes) -> None:
    parts += (key, _varint_bytes(len(value)), value)


# InferTensorContents field -> (key of the field, how its elements are written).
_TYPED: dict[str, tuple[bytes, Callable[[np.ndarray[Any, Any]], bytes]]] = {
    name: (_key(number, _LEN), _packed_varints)
    for number, (name, wire_type, _) in _CONTENTS.items()
    if wire_type == _VARINT
}
_TYPED["fp32_contents"] = (_key(6, _LEN), lambda a: a.astype("<f4", copy=False).tobytes())
_TYPED["fp64_contents"] = (_key(7, _LEN), lambda a: a.astype("<f8", copy=False).tobytes())
_BYTES_CONTENTS = _key(8, _LEN)


def _typed_contents(datatype: str, array: np.ndarray[Any, Any]) -> bytes:
    field = TYPED_FIELDS[datatype]
    parts: list[bytes] = []
    if field == "bytes_contents":
        for item in bytes_items(array):
            _len_field(parts, _BYTES_CONTENTS, item)
    elif array.size:
        key, write = _TYPED[field]
        _len_field(parts, key, write(array.reshape(-1)))
    return b"".join(parts)


def _parameter_bytes(value: Any) -> bytes:
    # As convert.parameters_to_proto: bool, int64, uint64, double, string, else JSON text.
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, bool):
        return b"\x08\x01" if value else b"\x08\x00"
    if isinstance(value, int) and _INT64_MIN <= value <= _INT64_MAX:
        return b"\x10" + _varint_bytes(value)
    if isinstance(value, int) and 0 <= value <= _U64:
        return b"\x28" + _varint_bytes(value)
    if isinstance(value, float):
        return b"\x21" + _DOUBLE.pack(value)
    text = value if isinstance(value, str) else encode_json(value).decode()
    encoded = text.encode("utf-8")
    return b"\x1a" + _varint_bytes(len(encoded)) + encoded


def _parameters(parts: list[bytes], key: bytes, params: Parameters | None) -> None:
    # A map is a repeated message of (key = 1, value = 2); None values have no protobuf form.
    for name, value in (params or {}).items():
        if value is None:
            continue
        entry: list[bytes] = []
        _len_field(entry, b"\x0a", name.encode("utf-8"))
        _len_field(entry, b"\x12", _parameter_bytes(value))
        _len_field(parts, key, b"".join(entry))


def _text_field(parts: list[bytes], key: bytes, value: str | None) -> None:
    if value:
        _len_field(parts, key, value.encode("utf-8"))


def write_infer_response(response: InferenceResponse, *, raw: bool = False) -> bytes:
    """The serialized ``ModelInferResponse`` of a core response (see
    ``convert.response_to_proto``, which builds the same message as a generated class)."""
    raw = raw or needs_raw(response.outputs)
    arrays = encode_arrays(response.outputs, "$.outputs")
    parts: list[bytes] = []
    _text_field(parts, b"\x0a", response.model_name)
    _text_field(parts, b"\x12", response.model_version)
    _text_field(parts, b"\x1a", response.id)
    _parameters(parts, b"\x22", response.parameters)
    for tensor, array in zip(response.outputs, arrays, strict=True):
        body: list[bytes] = []
        _text_field(body, b"\x0a", tensor.name)
        _text_field(body, b"\x12", tensor.datatype)
        if tensor.shape:
            _len_field(body, b"\x1a", b"".join([_varint_bytes(int(d)) for d in tensor.shape]))
        _parameters(body, b"\x22", tensor.parameters)
        if not raw:
            _len_field(body, b"\x2a", _typed_contents(tensor.datatype, array))
        _len_field(parts, b"\x2a", b"".join(body))
    if raw:
        for tensor, array in zip(response.outputs, arrays, strict=True):
            _len_field(parts, b"\x32", raw_bytes(tensor.datatype, array))
    return b"".join(parts)


def write_stream_response(error_message: str = "", infer_response: bytes | None = None) -> bytes:
    """The serialized ``ModelStreamInferResponse``: an error, or a serialized response."""
    parts: list[bytes] = []
    _text_field(parts, b"\x0a", error_message)
    if infer_response is not None:
        _len_field(parts, b"\x12", infer_response)
    return b"".join(parts)

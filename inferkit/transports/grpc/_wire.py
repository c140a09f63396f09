"""ModelInfer on the wire: ``ModelInferRequest`` read, ``ModelInferResponse`` written, directly.

betterproto2 is pure Python and generic: it reads a packed ``fp32_contents`` one float at a time
through ``struct``, copies each bytes field twice, and writes a message by comparing every field
with its default under ``warnings.catch_warnings``. Serving the [1, 16] sum, the server executed
2.6 M instructions per call with betterproto2 and 1.4 M with this module, of which grpclib and h2
alone take 1.0 M (``benchmarks/profile_grpc.py --mode callgrind``). These are the messages of
every inference, so they are read and written here, straight from and to the protobuf encoding
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

# A field's tag is its number shifted past the 3 bits of its wire type.
_VARINT, _FIXED64, _LEN, _FIXED32 = 0, 1, 2, 5
_TYPE_BITS = 3
_TYPE_MASK = (1 << _TYPE_BITS) - 1
_U64 = (1 << 64) - 1
_DOUBLE = struct.Struct("<d")
_INT64_MIN, _INT64_MAX = -(1 << 63), (1 << 63) - 1

# -- field numbers ------------------------------------------------------------------------------

# As numbered in proto/dataplane.proto (tests/grpc/test_grpc_wire.py checks them against the
# generated classes). Module constants, not class attributes: the readers compare each field's
# number against them, and a global is one lookup where an attribute is two.

# ModelInferRequest
REQUEST_MODEL_NAME = 1
REQUEST_MODEL_VERSION = 2
REQUEST_ID = 3
REQUEST_PARAMETERS = 4
REQUEST_INPUTS = 5
REQUEST_OUTPUTS = 6
REQUEST_RAW_INPUT_CONTENTS = 7

# ModelInferRequest.InferInputTensor
INPUT_NAME = 1
INPUT_DATATYPE = 2
INPUT_SHAPE = 3
INPUT_PARAMETERS = 4
INPUT_CONTENTS = 5

# ModelInferRequest.InferRequestedOutputTensor
REQUESTED_OUTPUT_NAME = 1
REQUESTED_OUTPUT_PARAMETERS = 2

# ModelInferResponse
RESPONSE_MODEL_NAME = 1
RESPONSE_MODEL_VERSION = 2
RESPONSE_ID = 3
RESPONSE_PARAMETERS = 4
RESPONSE_OUTPUTS = 5
RESPONSE_RAW_OUTPUT_CONTENTS = 6

# ModelInferResponse.InferOutputTensor
OUTPUT_NAME = 1
OUTPUT_DATATYPE = 2
OUTPUT_SHAPE = 3
OUTPUT_PARAMETERS = 4
OUTPUT_CONTENTS = 5

# ModelStreamInferResponse
STREAM_ERROR_MESSAGE = 1
STREAM_INFER_RESPONSE = 2

# InferParameter (a oneof)
PARAMETER_BOOL = 1
PARAMETER_INT64 = 2
PARAMETER_STRING = 3
PARAMETER_DOUBLE = 4
PARAMETER_UINT64 = 5

# InferTensorContents
CONTENTS_BOOL = 1
CONTENTS_INT = 2
CONTENTS_INT64 = 3
CONTENTS_UINT = 4
CONTENTS_UINT64 = 5
CONTENTS_FP32 = 6
CONTENTS_FP64 = 7
CONTENTS_BYTES = 8

# An entry of a map<string, InferParameter>: protobuf writes a map as a repeated message of
# key = 1 and value = 2 (https://protobuf.dev/programming-guides/encoding/#maps).
MAP_KEY = 1
MAP_VALUE = 2

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


def _fields(data: bytes, pos: int, end: int) -> list[tuple[int, int, int, int]]:
    """``(field number, wire type, start, stop)`` of each field of the message in
    ``[pos, end)``; a varint's value is given decoded in place of ``start`` (``stop`` -1).

    The whole message is checked before any field is used: no value runs past its end.
    """
    fields = []
    while pos < end:
        tag = data[pos]
        if tag < 0x80:  # field numbers below 16: one byte
            pos += 1
        else:
            tag, pos = _varint(data, pos)
        wire_type = tag & _TYPE_MASK
        if wire_type == _LEN:
            size = data[pos]
            if size < 0x80:
                pos += 1
            else:
                size, pos = _varint(data, pos)
            fields.append((tag >> _TYPE_BITS, _LEN, pos, pos + size))
            pos += size
        elif wire_type == _VARINT:
            value, pos = _varint(data, pos)
            fields.append((tag >> _TYPE_BITS, _VARINT, value, -1))
        elif wire_type == _FIXED64 or wire_type == _FIXED32:
            size = 8 if wire_type == _FIXED64 else 4
            fields.append((tag >> _TYPE_BITS, wire_type, pos, pos + size))
            pos += size
        else:  # groups (3, 4) are deprecated and unused by these messages; 6, 7 do not exist
            raise ValueError(f"unsupported wire type {wire_type}")
        if tag >> _TYPE_BITS == 0:
            raise ValueError("field number 0")
    if pos != end:
        raise ValueError("a field runs past the end of its message")
    return fields


def _string(data: bytes, start: int, end: int) -> str:
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
# (protobuf's float and double are little-endian IEEE 754, whatever the host.)
_CONTENTS: dict[int, tuple[str, int, str]] = {
    CONTENTS_BOOL: ("bool_contents", _VARINT, ""),
    CONTENTS_INT: ("int_contents", _VARINT, ""),
    CONTENTS_INT64: ("int64_contents", _VARINT, ""),
    CONTENTS_UINT: ("uint_contents", _VARINT, ""),
    CONTENTS_UINT64: ("uint64_contents", _VARINT, ""),
    CONTENTS_FP32: ("fp32_contents", _FIXED32, "<f4"),
    CONTENTS_FP64: ("fp64_contents", _FIXED64, "<f8"),
    CONTENTS_BYTES: ("bytes_contents", _LEN, ""),
}


class TensorContents:
    """``InferTensorContents`` as read: each numeric field an array of its element type.

    Fields not in the message keep the class's empty default (no per-message set-up).
    """

    bool_contents: Sequence[Any] = ()
    int_contents: Sequence[Any] = ()
    int64_contents: Sequence[Any] = ()
    uint_contents: Sequence[Any] = ()
    uint64_contents: Sequence[Any] = ()
    fp32_contents: Sequence[Any] = ()
    fp64_contents: Sequence[Any] = ()
    bytes_contents: Sequence[Any] = ()

    @classmethod
    def read(cls, data: bytes, view: memoryview, pos: int, end: int) -> TensorContents:
        contents = cls()
        # Elements of a field may come in several packed runs and one by one, in any mix.
        parts: dict[str, list[Any]] = {}
        for number, wire_type, start, stop in _fields(data, pos, end):
            known = _CONTENTS.get(number)
            if known is None:
                continue
            name, element_type, dtype = known
            array: Any
            if wire_type == _LEN and element_type != _LEN:  # a packed run
                run = view[start:stop]
                array = np.frombuffer(run, dtype) if dtype else _FROM_U64[name](_varints(run))
            elif wire_type == element_type == _LEN:
                array = data[start:stop]  # one BYTES element
            elif wire_type == element_type == _VARINT:
                array = _FROM_U64[name](np.array([start], np.uint64))
            elif wire_type == element_type:
                array = np.frombuffer(view[start:stop], dtype)
            else:
                continue
            parts.setdefault(name, []).append(array)
        for name, values in parts.items():
            if name == "bytes_contents":
                contents.bytes_contents = values
            elif len(values) == 1:
                setattr(contents, name, values[0])
            else:
                setattr(contents, name, np.concatenate(values))
        return contents


def _read_parameter(data: bytes, pos: int, end: int) -> Any:
    # InferParameter's oneof; should a message set several, the first in field order wins, as
    # with the generated class.
    found: dict[int, Any] = {}
    for number, wire_type, start, stop in _fields(data, pos, end):
        if number == PARAMETER_BOOL and wire_type == _VARINT:
            found[number] = start != 0
        elif number == PARAMETER_INT64 and wire_type == _VARINT:
            found[number] = _signed(start)
        elif number == PARAMETER_STRING and wire_type == _LEN:
            found[number] = _string(data, start, stop)
        elif number == PARAMETER_DOUBLE and wire_type == _FIXED64:
            (found[number],) = _DOUBLE.unpack_from(data, start)
        elif number == PARAMETER_UINT64 and wire_type == _VARINT:
            found[number] = start
    return found[min(found)] if found else None


def _map_entry(data: bytes, pos: int, end: int, into: dict[str, Any]) -> None:
    key, value = "", None
    for number, wire_type, start, stop in _fields(data, pos, end):
        if number == MAP_KEY and wire_type == _LEN:
            key = _string(data, start, stop)
        elif number == MAP_VALUE and wire_type == _LEN:
            value = _read_parameter(data, start, stop)
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
            if wire_type != _LEN:
                if number == INPUT_SHAPE and wire_type == _VARINT:  # a shape not packed
                    tensor.shape.append(_signed(start))
            elif number == INPUT_NAME:
                tensor.name = _string(data, start, stop)
            elif number == INPUT_DATATYPE:
                tensor.datatype = _string(data, start, stop)
            elif number == INPUT_SHAPE:
                tensor.shape += _packed_ints(data, start, stop)
            elif number == INPUT_PARAMETERS:
                _map_entry(data, start, stop, tensor.parameters)
            elif number == INPUT_CONTENTS:
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
        if number == REQUESTED_OUTPUT_NAME and wire_type == _LEN:
            name = _string(data, start, stop)
        elif number == REQUESTED_OUTPUT_PARAMETERS and wire_type == _LEN:
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
            # The repeated fields first: a request has more tensors than names.
            if number == REQUEST_INPUTS:
                message.inputs.append(InputTensor.read(data, view, start, stop))
            elif number == REQUEST_RAW_INPUT_CONTENTS:
                message.raw_input_contents.append(view[start:stop])
            elif number == REQUEST_MODEL_NAME:
                message.model_name = _string(data, start, stop)
            elif number == REQUEST_MODEL_VERSION:
                message.model_version = _string(data, start, stop)
            elif number == REQUEST_ID:
                message.id = _string(data, start, stop)
            elif number == REQUEST_PARAMETERS:
                _map_entry(data, start, stop, message.parameters)
            elif number == REQUEST_OUTPUTS:
                message.outputs.append(_output(data, start, stop))
        return message


def request_of(message: ModelInferRequest) -> InferenceRequest:
    """The core request of a read ``ModelInferRequest``, as tests/grpc/proto_convert.py's
    ``request_from_proto`` makes it of a generated one: tensors as numpy arrays, errors naming
    the field at fault."""
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


_BYTE = [bytes([i]) for i in range(0x80)]


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


def _field(key: bytes, value: bytes) -> bytes:
    """A length-delimited field: key, length, value (for small values: it copies them)."""
    size = len(value)
    return key + (_BYTE[size] if size < 0x80 else _varint_bytes(size)) + value


def _text(key: bytes, value: str | None) -> bytes:
    """A string field, or nothing for an empty one (proto3 leaves defaults out)."""
    return _field(key, value.encode("utf-8")) if value else b""


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
        low = (u[has] >> np.uint64(7 * k)) & np.uint64(0x7F)
        out[starts[has] + k] = low.astype(np.uint8) | more
    return out.tobytes()


def _key(number: int, wire_type: int) -> bytes:
    return _varint_bytes(number << _TYPE_BITS | wire_type)


# The key of every field written, encoded once, here.
_KEY_RESPONSE_MODEL_NAME = _key(RESPONSE_MODEL_NAME, _LEN)
_KEY_RESPONSE_MODEL_VERSION = _key(RESPONSE_MODEL_VERSION, _LEN)
_KEY_RESPONSE_ID = _key(RESPONSE_ID, _LEN)
_KEY_RESPONSE_PARAMETERS = _key(RESPONSE_PARAMETERS, _LEN)
_KEY_RESPONSE_OUTPUTS = _key(RESPONSE_OUTPUTS, _LEN)
_KEY_RESPONSE_RAW_OUTPUT_CONTENTS = _key(RESPONSE_RAW_OUTPUT_CONTENTS, _LEN)
_KEY_OUTPUT_NAME = _key(OUTPUT_NAME, _LEN)
_KEY_OUTPUT_DATATYPE = _key(OUTPUT_DATATYPE, _LEN)
_KEY_OUTPUT_SHAPE = _key(OUTPUT_SHAPE, _LEN)  # packed
_KEY_OUTPUT_PARAMETERS = _key(OUTPUT_PARAMETERS, _LEN)
_KEY_OUTPUT_CONTENTS = _key(OUTPUT_CONTENTS, _LEN)
_KEY_STREAM_ERROR_MESSAGE = _key(STREAM_ERROR_MESSAGE, _LEN)
_KEY_STREAM_INFER_RESPONSE = _key(STREAM_INFER_RESPONSE, _LEN)
_KEY_MAP_KEY = _key(MAP_KEY, _LEN)
_KEY_MAP_VALUE = _key(MAP_VALUE, _LEN)
# A whole bool_param field, true or false; then the keys of the other parameter fields.
_TRUE_PARAMETER = _key(PARAMETER_BOOL, _VARINT) + _varint_bytes(1)
_FALSE_PARAMETER = _key(PARAMETER_BOOL, _VARINT) + _varint_bytes(0)
_KEY_PARAMETER_INT64 = _key(PARAMETER_INT64, _VARINT)
_KEY_PARAMETER_STRING = _key(PARAMETER_STRING, _LEN)
_KEY_PARAMETER_DOUBLE = _key(PARAMETER_DOUBLE, _FIXED64)
_KEY_PARAMETER_UINT64 = _key(PARAMETER_UINT64, _VARINT)
_KEY_CONTENTS_BYTES = _key(CONTENTS_BYTES, _LEN)  # one element per field, never packed

# InferTensorContents field -> (key of the field, writer of its elements, packed).
_TYPED: dict[str, tuple[bytes, Callable[[np.ndarray[Any, Any]], bytes]]] = {
    name: (_key(number, _LEN), _packed_varints)
    for number, (name, wire_type, _) in _CONTENTS.items()
    if wire_type == _VARINT
}
_TYPED["fp32_contents"] = (
    _key(CONTENTS_FP32, _LEN),
    lambda a: a.astype("<f4", copy=False).tobytes(),
)
_TYPED["fp64_contents"] = (
    _key(CONTENTS_FP64, _LEN),
    lambda a: a.astype("<f8", copy=False).tobytes(),
)


def _typed_contents(datatype: str, array: np.ndarray[Any, Any]) -> bytes:
    field = TYPED_FIELDS[datatype]
    if field == "bytes_contents":
        return b"".join([_field(_KEY_CONTENTS_BYTES, item) for item in bytes_items(array)])
    if not array.size:
        return b""
    key, write = _TYPED[field]
    return _field(key, write(array.reshape(-1)))


def _parameter_value(value: Any) -> bytes:
    # As convert.parameters_to_proto: bool, int64, uint64, double, string, else JSON text.
    if isinstance(value, str):
        return _field(_KEY_PARAMETER_STRING, value.encode("utf-8"))
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, bool):
        return _TRUE_PARAMETER if value else _FALSE_PARAMETER
    if isinstance(value, int) and _INT64_MIN <= value <= _INT64_MAX:
        return _KEY_PARAMETER_INT64 + _varint_bytes(value)
    if isinstance(value, int) and 0 <= value <= _U64:
        return _KEY_PARAMETER_UINT64 + _varint_bytes(value)
    if isinstance(value, float):
        return _KEY_PARAMETER_DOUBLE + _DOUBLE.pack(value)
    return _field(_KEY_PARAMETER_STRING, encode_json(value))  # JSON text is UTF-8


def _parameters(key: bytes, params: Parameters | None) -> bytes:
    # A map is a repeated entry message (see MAP_KEY); None values have no protobuf form.
    if not params:
        return b""
    return b"".join(
        [
            _field(
                key,
                _field(_KEY_MAP_KEY, name.encode("utf-8"))
                + _field(_KEY_MAP_VALUE, _parameter_value(v)),
            )
            for name, v in params.items()
            if v is not None
        ]
    )


def write_infer_response(response: InferenceResponse, *, raw: bool = False) -> bytes:
    """The serialized ``ModelInferResponse`` of a core response (tests compare it with
    ``response_to_proto`` of tests/grpc/proto_convert.py, which builds it as a generated
    class)."""
    outputs = response.outputs
    raw = raw or needs_raw(outputs)
    arrays = encode_arrays(outputs, "$.outputs")
    parts = [
        _text(_KEY_RESPONSE_MODEL_NAME, response.model_name),
        _text(_KEY_RESPONSE_MODEL_VERSION, response.model_version),
        _text(_KEY_RESPONSE_ID, response.id),
        _parameters(_KEY_RESPONSE_PARAMETERS, response.parameters),
    ]
    for tensor, array in zip(outputs, arrays, strict=True):
        shape = tensor.shape
        tensor_parts = [
            _text(_KEY_OUTPUT_NAME, tensor.name),
            _text(_KEY_OUTPUT_DATATYPE, tensor.datatype),
            _field(_KEY_OUTPUT_SHAPE, b"".join([_varint_bytes(int(d)) for d in shape]))
            if shape
            else b"",
            _parameters(_KEY_OUTPUT_PARAMETERS, tensor.parameters),
            b"" if raw else _field(_KEY_OUTPUT_CONTENTS, _typed_contents(tensor.datatype, array)),
        ]
        parts.append(_field(_KEY_RESPONSE_OUTPUTS, b"".join(tensor_parts)))
    if raw:
        for tensor, array in zip(outputs, arrays, strict=True):
            data = raw_bytes(tensor.datatype, array)
            # Large: not copied into a field here, but joined once, below.
            parts += (_KEY_RESPONSE_RAW_OUTPUT_CONTENTS, _varint_bytes(len(data)), data)
    return b"".join(parts)


def write_stream_response(error_message: str = "", infer_response: bytes | None = None) -> bytes:
    """The serialized ``ModelStreamInferResponse``: an error, or a serialized response."""
    error = _text(_KEY_STREAM_ERROR_MESSAGE, error_message)
    if infer_response is None:
        return error
    return b"".join(
        [error, _KEY_STREAM_INFER_RESPONSE, _varint_bytes(len(infer_response)), infer_response]
    )

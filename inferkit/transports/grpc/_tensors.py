"""V2 tensors on the wire: typed ``InferTensorContents`` and raw bytes, to numpy and back.

Typed elements sit in the ``InferTensorContents`` field of the datatype's family
(``int_contents`` for INT8/16/32, ...). Raw contents hold each tensor's flattened, row-major,
little-endian bytes, one entry per tensor in order; a BYTES element is a 4-byte little-endian
length followed by its bytes. FP16 has no typed field and travels raw only.

Raw bytes become arrays through ``np.frombuffer`` and arrays become bytes through ``tobytes()``;
only BYTES elements are visited one by one in Python.
"""

from __future__ import annotations

import struct
from collections.abc import Iterable, Sequence
from math import prod
from typing import Any, Protocol

import numpy as np

from inferkit.codecs.datatypes import DATATYPES, to_dtype
from inferkit.errors import InvalidRequest, InvalidShape, UnsupportedDatatype
from inferkit.types import RequestInput, ResponseOutput

from ._generated import inference as pb

__all__ = ["WireTensor", "decode_tensors", "encode_tensors", "needs_raw"]

# -- datatypes ----------------------------------------------------------------------------------

# V2 datatype -> numpy dtype as on the wire: codecs' one table, made explicitly little-endian.
_DTYPES: dict[str, np.dtype[Any]] = {
    name: dtype.newbyteorder("<") for name, dtype in DATATYPES.items()
}

# V2 datatype -> the InferTensorContents field holding its typed elements. FP16 has none: the
# spec sends 16-bit floats raw only.
_FIELDS: dict[str, str] = {
    "BOOL": "bool_contents",
    "UINT8": "uint_contents",
    "UINT16": "uint_contents",
    "UINT32": "uint_contents",
    "UINT64": "uint64_contents",
    "INT8": "int_contents",
    "INT16": "int_contents",
    "INT32": "int_contents",
    "INT64": "int64_contents",
    "FP32": "fp32_contents",
    "FP64": "fp64_contents",
    "BYTES": "bytes_contents",
}
_ALL_FIELDS = tuple(dict.fromkeys(_FIELDS.values()))

# Length prefix of one BYTES element in raw contents.
_LENGTH = struct.Struct("<I")


def _dtype(datatype: str, where: str) -> np.dtype[Any]:
    try:
        to_dtype(datatype)
    except UnsupportedDatatype as err:
        raise err.at(f"{where}.datatype") from None
    return _DTYPES[datatype]


def _size(shape: Sequence[int], where: str) -> int:
    for i, dim in enumerate(shape):
        if dim < 0:
            raise InvalidShape(f"Expected `int` >= 0, got `{dim}`", where=f"{where}.shape[{i}]")
    return prod(shape)


# -- tensors: wire -> numpy ---------------------------------------------------------------------


class WireTensor(Protocol):
    """What ``InferInputTensor`` and ``InferOutputTensor`` have in common."""

    name: str
    datatype: str
    shape: list[int]
    parameters: dict[str, pb.InferParameter]
    contents: pb.InferTensorContents | None


def _has_elements(contents: pb.InferTensorContents | None) -> bool:
    return contents is not None and any(getattr(contents, f) for f in _ALL_FIELDS)


def _from_contents(tensor: WireTensor, where: str) -> np.ndarray[Any, Any]:
    datatype = tensor.datatype
    dtype = _dtype(datatype, where)
    n = _size(tensor.shape, where)
    contents = tensor.contents or pb.InferTensorContents()
    given = [f for f in _ALL_FIELDS if getattr(contents, f)]
    field = _FIELDS.get(datatype)
    if field is None:
        if given or n:
            raise InvalidRequest(
                f"Expected raw contents for `{datatype}`, which has no typed contents field",
                where=f"{where}.contents",
            )
        return np.empty(tensor.shape, dtype=dtype)
    if given and given != [field]:
        raise InvalidRequest(
            f"Expected `{field}` for datatype `{datatype}`, got `{'`, `'.join(given)}`",
            where=f"{where}.contents",
        )
    values = getattr(contents, field)
    if len(values) != n:
        raise InvalidShape(
            f"Expected {n} elements for shape {tensor.shape}, got {len(values)}",
            where=f"{where}.contents.{field}",
        )
    if datatype == "BYTES":
        return _object_array(values).reshape(tensor.shape)
    try:
        return np.array(values, dtype=dtype).reshape(tensor.shape)
    except OverflowError:
        # int_contents is int32 for INT8 and INT16 too, so a value may not fit the datatype.
        info = np.iinfo(dtype)
        i = next(i for i, v in enumerate(values) if not info.min <= v <= info.max)
        raise InvalidRequest(
            f"Expected `{datatype}` values, got `{values[i]}`",
            where=f"{where}.contents.{field}[{i}]",
        ) from None


def _from_raw(tensor: WireTensor, raw: bytes, where: str, raw_where: str) -> np.ndarray[Any, Any]:
    dtype = _dtype(tensor.datatype, where)
    n = _size(tensor.shape, where)
    if tensor.datatype == "BYTES":
        items = _unpack_bytes(raw, raw_where)
        if len(items) != n:
            raise InvalidShape(
                f"Expected {n} elements for shape {tensor.shape}, got {len(items)}",
                where=raw_where,
            )
        return _object_array(items).reshape(tensor.shape)
    if len(raw) != n * dtype.itemsize:
        raise InvalidShape(
            f"Expected {n * dtype.itemsize} bytes for shape {tensor.shape} of "
            f"`{tensor.datatype}`, got {len(raw)}",
            where=raw_where,
        )
    if tensor.datatype == "BOOL":
        # Any non-zero byte is true; a numpy bool holding 2 would compare unequal to True.
        return np.not_equal(np.frombuffer(raw, dtype=np.uint8), 0).reshape(tensor.shape)
    # frombuffer reads the bytes in place; the copy makes the array writable, as the arrays a
    # model gets from JSON are (torch.from_numpy warns on read-only ones). One memcpy, no loop.
    return np.array(np.frombuffer(raw, dtype=dtype).reshape(tensor.shape))


def _unpack_bytes(raw: bytes, where: str) -> list[bytes]:
    items: list[bytes] = []
    offset, end = 0, len(raw)
    while offset < end:
        if offset + _LENGTH.size > end:
            raise InvalidRequest(
                f"Expected a 4-byte length prefix at byte {offset} of raw `BYTES` data, "
                f"got {end - offset} bytes",
                where=where,
            )
        (length,) = _LENGTH.unpack_from(raw, offset)
        offset += _LENGTH.size
        if offset + length > end:
            raise InvalidRequest(
                f"Expected {length} bytes for element {len(items)} of raw `BYTES` data, "
                f"got {end - offset}",
                where=where,
            )
        items.append(raw[offset : offset + length])
        offset += length
    return items


def _object_array(items: Sequence[Any]) -> np.ndarray[Any, Any]:
    # np.array(list_of_bytes) would make a fixed-width "S" array and strip trailing NULs.
    array = np.empty(len(items), dtype=object)
    array[:] = items
    return array


def decode_tensors(
    tensors: Sequence[WireTensor], raw: Sequence[bytes], prefix: str, raw_name: str
) -> list[tuple[WireTensor, np.ndarray[Any, Any]]]:
    """Each tensor with its elements as an array of its shape, from typed or raw contents.

    ``prefix`` (``$.inputs``) and ``raw_name`` (``raw_input_contents``) locate errors. Raises
    :class:`~inferkit.errors.InvalidRequest` or a subclass.
    """
    # As MLServer does, a tensor without typed elements takes the next raw entry, so requests
    # mixing both forms work; Triton's clients send every tensor raw.
    decoded = []
    used = 0
    for i, tensor in enumerate(tensors):
        where = f"{prefix}[{i}]"
        if raw and not _has_elements(tensor.contents):
            if used == len(raw):
                raise InvalidRequest(
                    f"Expected a {raw_name} entry for '{tensor.name}', got {len(raw)} entries",
                    where=f"$.{raw_name}",
                )
            data = _from_raw(tensor, raw[used], where, f"$.{raw_name}[{used}]")
            used += 1
        else:
            data = _from_contents(tensor, where)
        decoded.append((tensor, data))
    if used != len(raw):
        raise InvalidRequest(
            f"Expected {used} {raw_name} entries, one per tensor without contents, got {len(raw)}",
            where=f"$.{raw_name}",
        )
    return decoded


# -- tensors: numpy -> wire ---------------------------------------------------------------------


def _to_array(
    name: str, datatype: str, shape: Sequence[int], data: Any, where: str
) -> np.ndarray[Any, Any]:
    dtype = _dtype(datatype, where)
    if data is None:
        data = []
    if datatype == "BYTES":
        if isinstance(data, (bytes, bytearray, memoryview, str)):
            array = _object_array([data])  # one element, as the JSON encoder reads it
        else:
            array = np.asarray(data, dtype=object).reshape(-1)
    elif isinstance(data, (bytes, bytearray, memoryview)):
        array = np.frombuffer(data, dtype=dtype)  # raw little-endian bytes, held in process
    else:
        array = np.asarray(data, dtype=dtype)
    n = _size(shape, where)
    if array.size != n:
        # The model's answer does not fit its own shape: a server-side bug, reported as such.
        raise ValueError(
            f"Tensor '{name}' has {array.size} elements; shape {list(shape)} needs {n}"
        )
    return array


def _as_bytes(item: Any) -> bytes:
    if isinstance(item, bytes):
        return item
    if isinstance(item, str):
        return item.encode("utf-8")
    if isinstance(item, (bytearray, memoryview)):
        return bytes(item)
    raise TypeError(f"Expected bytes or str elements for BYTES, got {type(item).__name__}")


def _raw_bytes(datatype: str, array: np.ndarray[Any, Any]) -> bytes:
    if datatype == "BYTES":
        chunks: list[bytes] = []
        for item in array.reshape(-1).tolist():
            data = _as_bytes(item)
            chunks += (_LENGTH.pack(len(data)), data)
        return b"".join(chunks)
    # tobytes walks the array in C order, so non-contiguous views come out row-major too.
    return array.astype(_DTYPES[datatype], copy=False).tobytes()


def _typed_contents(datatype: str, array: np.ndarray[Any, Any]) -> pb.InferTensorContents:
    flat = array.reshape(-1).tolist()  # numpy's C loop builds the Python values
    if datatype == "BYTES":
        flat = [_as_bytes(item) for item in flat]
    return pb.InferTensorContents(**{_FIELDS[datatype]: flat})


def encode_tensors(
    tensors: Sequence[RequestInput | ResponseOutput], raw: bool, prefix: str
) -> tuple[list[pb.InferTensorContents | None], list[bytes]]:
    """Typed contents per tensor (``raw=False``), or ``None`` each and the raw entries.

    ``data`` may be a (nested) list, an array of any dtype (cast to the datatype's), raw
    little-endian bytes, or for BYTES one ``bytes``/``str`` element. Data that does not fit its
    shape raises ``ValueError``: it comes from the model, so it is a server error.
    """
    contents: list[pb.InferTensorContents | None] = []
    raw_contents: list[bytes] = []
    for i, tensor in enumerate(tensors):
        where = f"{prefix}[{i}]"
        array = _to_array(tensor.name, tensor.datatype, tensor.shape, tensor.data, where)
        if raw:
            contents.append(None)
            raw_contents.append(_raw_bytes(tensor.datatype, array))
        else:
            contents.append(_typed_contents(tensor.datatype, array))
    return contents, raw_contents


def needs_raw(tensors: Iterable[RequestInput | ResponseOutput]) -> bool:
    """Whether a tensor has no typed field (FP16), so the whole message must go raw."""
    return any(t.datatype in _DTYPES and t.datatype not in _FIELDS for t in tensors)

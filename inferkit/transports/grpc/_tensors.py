"""V2 tensors on the wire: typed ``InferTensorContents`` and raw bytes, to numpy and back.

Typed elements sit in the ``InferTensorContents`` field of the datatype's family
(``int_contents`` for INT8/16/32, ...); that table and its reading and writing are gRPC's own,
and live here. Raw contents hold each tensor's flattened, row-major, little-endian bytes, one
entry per tensor in order; a BYTES element is a 4-byte little-endian length followed by its
bytes. FP16 has no typed field and travels raw only.

Raw bytes follow the codecs' rules, the ones the REST binary extension uses too
(:func:`inferkit.codecs.tensor.decode_raw`, ``encode_raw``, ``pack_bytes``): they become
read-only views of the received message, through ``np.frombuffer``. Typed elements become new,
writable arrays, as JSON lists do. Arrays become bytes through ``tobytes()``; only BYTES
elements are visited one by one in Python.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any, Protocol, TypeVar

import numpy as np

from inferkit.codecs.datatypes import DATATYPES, RAW_DTYPES
from inferkit.codecs.tensor import (
    decode_raw,
    dtype_and_count,
    encode_raw,
    object_array,
    pack_bytes,
)
from inferkit.errors import InvalidRequest, InvalidShape
from inferkit.types import RequestInput, ResponseOutput

__all__ = [
    "TYPED_FIELDS",
    "WireTensor",
    "bytes_items",
    "decode_tensors",
    "encode_arrays",
    "needs_raw",
    "raw_bytes",
]

# -- datatypes ----------------------------------------------------------------------------------

#: V2 datatype -> the InferTensorContents field holding its typed elements. FP16 has none: the
#: spec sends 16-bit floats raw only.
TYPED_FIELDS: dict[str, str] = {
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
_ALL_FIELDS = tuple(dict.fromkeys(TYPED_FIELDS.values()))

# -- tensors: wire -> numpy ---------------------------------------------------------------------


class Contents(Protocol):
    """What decoding reads of ``InferTensorContents``: the generated class's lists, or the
    arrays of :class:`._wire.TensorContents`."""

    @property
    def bool_contents(self) -> Sequence[Any]: ...
    @property
    def int_contents(self) -> Sequence[Any]: ...
    @property
    def int64_contents(self) -> Sequence[Any]: ...
    @property
    def uint_contents(self) -> Sequence[Any]: ...
    @property
    def uint64_contents(self) -> Sequence[Any]: ...
    @property
    def fp32_contents(self) -> Sequence[Any]: ...
    @property
    def fp64_contents(self) -> Sequence[Any]: ...
    @property
    def bytes_contents(self) -> Sequence[Any]: ...


class WireTensor(Protocol):
    """What decoding reads of ``InferInputTensor`` and ``InferOutputTensor`` (generated, or
    :class:`._wire.InputTensor`)."""

    @property
    def name(self) -> str: ...
    @property
    def datatype(self) -> str: ...
    @property
    def shape(self) -> list[int]: ...
    @property
    def contents(self) -> Contents | None: ...


def _given(contents: Contents | None) -> list[str]:
    # len(), not truth: the fields may be numpy arrays.
    return [f for f in _ALL_FIELDS if len(getattr(contents, f))] if contents is not None else []


def _from_contents(tensor: WireTensor, where: str) -> np.ndarray[Any, Any]:
    datatype = tensor.datatype
    dtype, n = dtype_and_count(datatype, tensor.shape, where)
    contents = tensor.contents
    given = _given(contents)
    field = TYPED_FIELDS.get(datatype)
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
    values = getattr(contents, field) if contents is not None else ()
    if len(values) != n:
        raise InvalidShape(
            f"Expected {n} elements for shape {tensor.shape}, got {len(values)}",
            where=f"{where}.contents.{field}",
        )
    if datatype == "BYTES":
        return object_array(list(values)).reshape(tensor.shape)
    if isinstance(values, np.ndarray):
        return _narrowed(values, datatype, dtype, f"{where}.contents.{field}").reshape(tensor.shape)
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


def _narrowed(
    values: np.ndarray[Any, Any], datatype: str, dtype: np.dtype[Any], where: str
) -> np.ndarray[Any, Any]:
    """A writable copy of typed elements read as an array of their field's type (int32 for
    ``int_contents``, ...) as ``dtype``, refusing values the datatype cannot hold."""
    if dtype.kind in "iu" and dtype.itemsize < values.dtype.itemsize and values.size:
        info = np.iinfo(dtype)
        bad = np.flatnonzero((values < info.min) | (values > info.max))
        if bad.size:
            i = int(bad[0])
            raise InvalidRequest(
                f"Expected `{datatype}` values, got `{int(values[i])}`", where=f"{where}[{i}]"
            )
    return values.astype(dtype)


_Tensor = TypeVar("_Tensor", bound=WireTensor)


def decode_tensors(
    tensors: Sequence[_Tensor], raw: Sequence[bytes | memoryview], prefix: str, raw_name: str
) -> list[tuple[_Tensor, np.ndarray[Any, Any]]]:
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
        if raw and not _given(tensor.contents):
            if used == len(raw):
                raise InvalidRequest(
                    f"Expected a {raw_name} entry for '{tensor.name}', got {len(raw)} entries",
                    where=f"$.{raw_name}",
                )
            data = decode_raw(
                raw[used], tensor.datatype, tensor.shape, where, f"$.{raw_name}[{used}]"
            )
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
    name: str, datatype: str, shape: list[int], data: Any, where: str
) -> np.ndarray[Any, Any]:
    dtype, n = dtype_and_count(datatype, shape, where)
    if data is None:
        data = []
    if datatype == "BYTES":
        if isinstance(data, (bytes, bytearray, memoryview, str)):
            array = np.empty(1, dtype=object)  # one element, as the JSON encoder reads it
            array[0] = data
        else:
            array = np.asarray(data, dtype=object).reshape(-1)
    elif isinstance(data, (bytes, bytearray, memoryview)):
        array = np.frombuffer(data, dtype=RAW_DTYPES[datatype])  # raw bytes, held in process
    else:
        array = np.asarray(data, dtype=dtype)
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


def bytes_items(array: np.ndarray[Any, Any]) -> list[bytes]:
    """The elements of a BYTES array (from :func:`encode_arrays`) as ``bytes``."""
    return [_as_bytes(item) for item in array.reshape(-1).tolist()]


def raw_bytes(datatype: str, array: np.ndarray[Any, Any]) -> bytes:
    """An array (from :func:`encode_arrays`) as one raw contents entry."""
    if datatype == "BYTES":
        # bytes_items, not the codecs' reading of a client's elements: an element that is not
        # bytes here is the model's fault (TypeError, a server error), not an invalid request.
        return pack_bytes(bytes_items(array))
    return encode_raw(array, datatype)


def encode_arrays(
    tensors: Sequence[RequestInput | ResponseOutput], prefix: str
) -> list[np.ndarray[Any, Any]]:
    """Each tensor's ``data`` as a flat array of its datatype's dtype (object for BYTES).

    ``data`` may be a (nested) list, an array of any dtype (cast to the datatype's), raw
    little-endian bytes, or for BYTES one ``bytes``/``str`` element. Data that does not fit its
    shape raises ``ValueError``: it comes from the model, so it is a server error.
    """
    return [
        _to_array(t.name, t.datatype, t.shape, t.data, f"{prefix}[{i}]")
        for i, t in enumerate(tensors)
    ]


def needs_raw(tensors: Iterable[RequestInput | ResponseOutput]) -> bool:
    """Whether a tensor has no typed field (FP16), so the whole message must go raw."""
    return any(t.datatype in DATATYPES and t.datatype not in TYPED_FIELDS for t in tensors)

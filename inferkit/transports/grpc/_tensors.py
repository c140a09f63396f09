"""V2 tensors on the wire: typed ``InferTensorContents`` and raw bytes, to numpy and back.

Typed elements sit in the ``InferTensorContents`` field of the datatype's family
(``int_contents`` for INT8/16/32, ...). Raw contents hold each tensor's flattened, row-major,
little-endian bytes, one entry per tensor in order; a BYTES element is a 4-byte little-endian
length followed by its bytes. FP16 has no typed field and travels raw only.

Raw bytes become arrays through ``np.frombuffer``: read-only views of the received message, as
the REST binary extension's raw data are (both through :mod:`inferkit.codecs` rules; a model
that updates an input in place copies it first). Typed elements become new, writable arrays, as
JSON lists do. Arrays become bytes through ``tobytes()``; only BYTES elements are visited one by
one in Python, with the codecs' helpers for the raw framing.
"""

from __future__ import annotations

import struct
from collections.abc import Iterable, Sequence
from math import prod
from typing import Any, Protocol, TypeVar

import numpy as np

from inferkit.codecs.datatypes import DATATYPES, to_dtype
from inferkit.codecs.tensor import object_array, unpack_bytes
from inferkit.errors import InvalidRequest, InvalidShape, UnsupportedDatatype
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

# V2 datatype -> numpy dtype as on the wire: codecs' one table, made explicitly little-endian.
_DTYPES: dict[str, np.dtype[Any]] = {
    name: dtype.newbyteorder("<") for name, dtype in DATATYPES.items()
}

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
    dtype = _dtype(datatype, where)
    n = _size(tensor.shape, where)
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


def _from_raw(
    tensor: WireTensor, raw: bytes | memoryview, where: str, raw_where: str
) -> np.ndarray[Any, Any]:
    dtype = _dtype(tensor.datatype, where)
    n = _size(tensor.shape, where)
    if tensor.datatype == "BYTES":
        items = unpack_bytes(bytes(raw), raw_where)
        if len(items) != n:
            raise InvalidShape(
                f"Expected {n} elements for shape {tensor.shape}, got {len(items)}",
                where=raw_where,
            )
        return object_array(items).reshape(tensor.shape)
    if len(raw) != n * dtype.itemsize:
        raise InvalidShape(
            f"Expected {n * dtype.itemsize} bytes for shape {tensor.shape} of "
            f"`{tensor.datatype}`, got {len(raw)}",
            where=raw_where,
        )
    if tensor.datatype == "BOOL":
        # Any non-zero byte is true; a numpy bool holding 2 would compare unequal to True.
        return np.not_equal(np.frombuffer(raw, dtype=np.uint8), 0).reshape(tensor.shape)
    # No copy: on a 4 MB tensor a writable copy cost a fifth of the server's CPU time (the
    # fresh pages fault in); REST's raw path and MLServer give read-only views as well.
    array = np.frombuffer(raw, dtype=dtype).reshape(tensor.shape)
    return array if array.dtype.isnative else array.astype(DATATYPES[tensor.datatype])


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
            array = np.empty(1, dtype=object)  # one element, as the JSON encoder reads it
            array[0] = data
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


def bytes_items(array: np.ndarray[Any, Any]) -> list[bytes]:
    """The elements of a BYTES array (from :func:`encode_arrays`) as ``bytes``."""
    return [_as_bytes(item) for item in array.reshape(-1).tolist()]


def raw_bytes(datatype: str, array: np.ndarray[Any, Any]) -> bytes:
    """An array (from :func:`encode_arrays`) as one raw contents entry."""
    if datatype == "BYTES":
        chunks: list[bytes] = []
        for data in bytes_items(array):
            chunks += (_LENGTH.pack(len(data)), data)
        return b"".join(chunks)
    # tobytes walks the array in C order, so non-contiguous views come out row-major too.
    return array.astype(_DTYPES[datatype], copy=False).tobytes()


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
    return any(t.datatype in _DTYPES and t.datatype not in TYPED_FIELDS for t in tensors)

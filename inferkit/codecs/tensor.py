"""Tensors to numpy arrays and back: the pure functions every codec and the server build on.

A tensor's ``data`` arrives in one of four forms (see :mod:`inferkit.types`): a flat JSON list, a
nested JSON list, a numpy array (built in process, e.g. by the gRPC transport), or raw
little-endian ``bytes`` (the REST binary extension). Raw ``BYTES`` tensors use Triton's framing:
each element is a 4-byte little-endian length followed by that many bytes. The raw form's rules
are all here, for both transports: :func:`decode_raw` (gRPC ``raw_input_contents``; REST's
binary inputs through :func:`decode_tensor`), :func:`encode_raw` and :func:`pack_bytes`.

Numeric data is converted by numpy in C; only ``BYTES`` elements (and the error path, which looks
for the first bad element to name it) are visited one by one in Python.

``where`` is the JSON path of the tensor (``$.inputs[1]``); errors name the offending field below
it, msgspec style: ``Expected 6 elements for shape [2, 3], got 5 - at `$.inputs[1].data` ``.
"""

from __future__ import annotations

import contextlib
import math
import struct
from collections.abc import Iterable
from typing import Any

import msgspec
import numpy as np

from ..errors import InvalidRequest, InvalidShape, UnsupportedDatatype
from ..types import Parameters, RequestInput, ResponseOutput
from .datatypes import RAW_DTYPES, to_datatype, to_dtype

__all__ = [
    "Tensor",
    "check_tensor",
    "decode_raw",
    "decode_tensor",
    "dtype_and_count",
    "encode_raw",
    "encode_tensor",
    "object_array",
    "pack_bytes",
    "unpack_bytes",
]

#: Anything with ``name``, ``shape``, ``datatype``, ``parameters`` and ``data``.
Tensor = RequestInput | ResponseOutput

_PREFIX = struct.Struct("<I")
_RAW = (bytes, bytearray, memoryview)


def check_tensor(tensor: Tensor, where: str = "$") -> None:
    """Validate datatype, shape and element count without converting flat data.

    This is the cheap check run on every request input before the model sees it. Flat lists
    are only counted; nested lists and raw ``BYTES`` have to be walked to be counted, so the
    converted array is stored back into ``tensor.data`` and the work is not repeated.
    """
    datatype = tensor.datatype
    _, count = dtype_and_count(datatype, tensor.shape, where)
    data = tensor.data
    if type(data) is list:
        if not data or type(data[0]) is not list:
            if len(data) != count:
                raise _count_error(count, tensor.shape, len(data), f"{where}.data")
            return
    elif isinstance(data, np.ndarray):
        if data.size != count:
            raise _count_error(count, tensor.shape, data.size, f"{where}.data")
        if datatype == "BYTES" and data.dtype.kind not in "OSU":
            raise _not_bytes(data, where)
        return
    elif isinstance(data, _RAW) and datatype != "BYTES":
        _check_raw_size(data, datatype, count, tensor.shape, f"{where}.data")
        return
    tensor.data = decode_tensor(tensor, where)


def decode_tensor(tensor: Tensor, where: str = "$") -> np.ndarray[Any, Any]:
    """The tensor's data as a numpy array of its datatype, shaped by ``tensor.shape``.

    ``BYTES`` tensors become ``object`` arrays of :class:`bytes` (strings are UTF-8 encoded).
    Raises :class:`UnsupportedDatatype`, :class:`InvalidShape` or :class:`InvalidRequest`.
    """
    datatype = tensor.datatype
    shape = tensor.shape
    dtype, count = dtype_and_count(datatype, shape, where)
    data = tensor.data
    if isinstance(data, list):
        array = _from_list(data, datatype, dtype, where)
    elif isinstance(data, np.ndarray):
        array = _from_array(data, datatype, dtype, where)
    elif isinstance(data, _RAW):
        array = _from_raw(data, datatype, dtype, count, shape, f"{where}.data")
    elif data is None:
        array = np.empty(0, dtype)
    else:
        raise InvalidRequest(
            f"Expected a list, array or bytes as tensor data, got `{type(data).__name__}`",
            where=f"{where}.data",
        )
    if array.size != count:
        raise _count_error(count, shape, array.size, f"{where}.data")
    return array.reshape(shape)


def decode_raw(
    data: bytes | bytearray | memoryview,
    datatype: str,
    shape: list[int],
    where: str = "$",
    data_where: str | None = None,
) -> np.ndarray[Any, Any]:
    """Raw tensor bytes (little-endian, row-major; BYTES framed) as an array of ``datatype``
    shaped by ``shape``: numbers as a read-only view of ``data``, BYTES as an ``object`` array.

    ``where`` locates the tensor (errors in its datatype and shape), ``data_where`` its bytes
    (default ``{where}.data``; gRPC keeps them apart, in ``$.raw_input_contents[i]``). Raises
    :class:`UnsupportedDatatype`, :class:`InvalidShape` or :class:`InvalidRequest`.
    """
    dtype, count = dtype_and_count(datatype, shape, where)
    at = f"{where}.data" if data_where is None else data_where
    array = _from_raw(data, datatype, dtype, count, shape, at)
    if array.size != count:  # only BYTES: the size of numbers was checked against the shape
        raise _count_error(count, shape, array.size, at)
    return array.reshape(shape)


def dtype_and_count(datatype: str, shape: list[int], where: str = "$") -> tuple[np.dtype[Any], int]:
    """The numpy dtype of a tensor's datatype and the number of elements of its shape: the
    checks every tensor passes first, whatever its data.

    Raises :class:`UnsupportedDatatype` at ``{where}.datatype`` and :class:`InvalidShape` at
    ``{where}.shape[i]`` (a dimension that is not an ``int`` >= 0).
    """
    # One function, no helpers: it runs for every tensor of every request.
    try:
        dtype = to_dtype(datatype)
    except UnsupportedDatatype as err:
        raise err.at(f"{where}.datatype") from None
    for i, dim in enumerate(shape):
        if type(dim) is int and dim >= 0:  # the common case, in one test (bool is not int)
            continue
        if not isinstance(dim, (int, np.integer)) or isinstance(dim, bool) or dim < 0:
            raise InvalidShape(
                f"Expected `int` >= 0, got `{show_value(dim)}`", where=f"{where}.shape[{i}]"
            )
    return dtype, math.prod(shape)


def encode_tensor(name: str, array: Any, parameters: Parameters | None = None) -> ResponseOutput:
    """A response output holding ``array`` itself; datatype and shape come from the array.

    A 0-d array (a numpy scalar result) gets shape ``[1]``, as MLServer clients expect.
    """
    array = np.asarray(array)
    datatype = to_datatype(array.dtype)
    if array.ndim == 0:
        array = array.reshape(1)
    return ResponseOutput(
        name=name, shape=list(array.shape), datatype=datatype, parameters=parameters, data=array
    )


def encode_raw(array: Any, datatype: str | None = None) -> bytes:
    """An array as raw tensor bytes (the binary extension, gRPC ``raw_*_contents``): its
    elements little-endian, row-major; BYTES elements framed as :func:`pack_bytes` does.

    ``datatype`` is the V2 datatype to write the elements as (they are cast to it); by default
    the array's own.
    """
    arr: np.ndarray[Any, Any] = np.asarray(array)
    if datatype is None:
        datatype = to_datatype(arr.dtype)
    elif datatype not in RAW_DTYPES:
        to_dtype(datatype)  # raises UnsupportedDatatype
    if datatype == "BYTES":
        return pack_bytes(_bytes_items(arr.reshape(-1).tolist(), "$"))
    # tobytes walks the array in C order, so non-contiguous views come out row-major too.
    return arr.astype(RAW_DTYPES[datatype], copy=False).tobytes()


def pack_bytes(items: Iterable[bytes]) -> bytes:
    """BYTES elements as raw data: each a 4-byte little-endian length, then the bytes (the
    inverse of :func:`unpack_bytes`)."""
    chunks: list[bytes] = []
    for item in items:
        chunks += (_PREFIX.pack(len(item)), item)  # the items are copied once, by join
    return b"".join(chunks)


def _count_error(count: int, shape: list[int], got: int, at: str) -> InvalidShape:
    # ``at`` is the data's own location (``$.inputs[0].data``, ``$.raw_input_contents[0]``).
    return InvalidShape(f"Expected {count} elements for shape {list(shape)}, got {got}", where=at)


#: Flat lists at least this long are converted with ``np.fromiter``.
_FROMITER_MIN = 1024


def _from_list(
    data: list[Any], datatype: str, dtype: np.dtype[Any], where: str
) -> np.ndarray[Any, Any]:
    if datatype == "BYTES":
        return object_array(_bytes_items(data, f"{where}.data"))
    try:
        if datatype == "BOOL":
            # numpy would turn "abc" and null into True and False; JSON booleans (or 0/1) only.
            array = np.array(data)
            if array.dtype.kind not in "biu" and array.size:
                raise ValueError(array.dtype)
            return array.astype(np.bool_, copy=False)
        with np.errstate(over="ignore"):  # 1e300 as FP16 is inf, as IEEE casts say
            if len(data) >= _FROMITER_MIN and not isinstance(data[0], list):
                # A long flat list (the usual JSON tensor): fromiter skips np.array's pass
                # that discovers the nesting, about 30% of the conversion. Nested after all:
                # it raises and np.array below takes over.
                with contextlib.suppress(ValueError, TypeError):
                    return np.fromiter(data, dtype=dtype, count=len(data))
            return np.array(data, dtype=dtype)
    except (ValueError, TypeError, OverflowError):
        raise _bad_element(data, datatype, dtype, f"{where}.data") from None


def _from_array(
    array: np.ndarray[Any, Any], datatype: str, dtype: np.dtype[Any], where: str
) -> np.ndarray[Any, Any]:
    if datatype == "BYTES":
        if array.dtype.kind not in "OSU":
            raise _not_bytes(array, where)
        return object_array(_bytes_items(array.reshape(-1).tolist(), f"{where}.data"))
    if array.dtype == dtype:
        return array
    try:
        with np.errstate(over="ignore", invalid="ignore"):
            return array.astype(dtype)
    except (ValueError, TypeError, OverflowError):
        raise InvalidRequest(
            f"Expected `{datatype}`, got an array of `{array.dtype}`", where=f"{where}.data"
        ) from None


def _not_bytes(array: np.ndarray[Any, Any], where: str) -> InvalidRequest:
    return InvalidRequest(
        f"Expected `BYTES`, got an array of `{array.dtype}`", where=f"{where}.data"
    )


def _from_raw(
    data: bytes | bytearray | memoryview,
    datatype: str,
    dtype: np.dtype[Any],
    count: int,
    shape: list[int],
    at: str,
) -> np.ndarray[Any, Any]:
    """The flat array of raw bytes; errors located ``at`` the data."""
    if datatype == "BYTES":
        return object_array(unpack_bytes(bytes(data), at))
    _check_raw_size(data, datatype, count, shape, at)
    if datatype == "BOOL":
        # Any non-zero byte is true; a numpy bool holding 2 would compare unequal to True.
        return np.frombuffer(data, np.uint8).astype(np.bool_)
    # Zero-copy (and so read-only) view of the received message, converted only on big-endian
    # hosts. On a 4 MB tensor a writable copy cost a fifth of the server's CPU time (the fresh
    # pages fault in); MLServer gives read-only views as well (a model that updates an input in
    # place copies it first).
    array = np.frombuffer(data, RAW_DTYPES[datatype])
    return array if array.dtype.isnative else array.astype(dtype)


def _check_raw_size(
    data: bytes | bytearray | memoryview, datatype: str, count: int, shape: list[int], at: str
) -> None:
    nbytes = data.nbytes if isinstance(data, memoryview) else len(data)
    expected = count * RAW_DTYPES[datatype].itemsize
    if nbytes != expected:
        raise InvalidShape(
            f"Expected {expected} bytes for shape {list(shape)} of `{datatype}`, got {nbytes}",
            where=at,
        )


def unpack_bytes(buf: bytes, where: str) -> list[bytes]:
    """The elements of raw BYTES data: each a 4-byte little-endian length, then the bytes."""
    items: list[bytes] = []
    offset, end = 0, len(buf)
    while offset < end:
        if offset + 4 > end:
            raise InvalidRequest(
                f"Expected a 4-byte length prefix at byte {offset} of raw `BYTES` data, "
                f"got {end - offset} bytes",
                where=where,
            )
        (size,) = _PREFIX.unpack_from(buf, offset)
        offset += 4
        if offset + size > end:
            raise InvalidRequest(
                f"Expected {size} bytes for element {len(items)} of raw `BYTES` data, "
                f"got {end - offset}",
                where=where,
            )
        items.append(buf[offset : offset + size])
        offset += size
    return items


def _bytes_items(data: list[Any], where: str, out: list[bytes] | None = None) -> list[bytes]:
    """Flatten (nested) BYTES elements into a list of bytes; str elements are UTF-8 encoded."""
    items: list[bytes] = [] if out is None else out
    for i, item in enumerate(data):
        kind = type(item)
        if kind is bytes:
            items.append(item)
        elif kind is str:
            items.append(item.encode())
        elif kind is list:
            _bytes_items(item, f"{where}[{i}]", items)
        elif isinstance(item, (bytes, bytearray, memoryview)):
            items.append(bytes(item))
        elif isinstance(item, str):
            items.append(str(item).encode())
        else:
            raise InvalidRequest(
                f"Expected `BYTES`, got `{show_value(item)}`", where=f"{where}[{i}]"
            )
    return items


def object_array(items: list[bytes]) -> np.ndarray[Any, Any]:
    """A 1-d ``object`` array holding ``items`` as they are (the form of BYTES tensors)."""
    # Slice assignment keeps every element a `bytes` object (numpy never looks inside them).
    array = np.empty(len(items), dtype=object)
    array[:] = items
    return array


def _bad_element(
    data: list[Any], datatype: str, dtype: np.dtype[Any], where: str
) -> InvalidRequest:
    """The error for a list numpy refused: name the first bad element, else call it ragged."""
    found = _find_bad(data, datatype, dtype, where)
    if found is not None:
        return found
    return InvalidRequest(
        f"Expected a flat list or nested lists of equal length of `{datatype}` values",
        where=where,
    )


def _find_bad(
    data: list[Any], datatype: str, dtype: np.dtype[Any], where: str
) -> InvalidRequest | None:
    for i, item in enumerate(data):
        if isinstance(item, list):
            found = _find_bad(item, datatype, dtype, f"{where}[{i}]")
            if found is not None:
                return found
        elif not _converts(item, datatype, dtype):
            return InvalidRequest(
                f"Expected `{datatype}`, got `{show_value(item)}`", where=f"{where}[{i}]"
            )
    return None


def _converts(item: Any, datatype: str, dtype: np.dtype[Any]) -> bool:
    if datatype == "BOOL":
        return isinstance(item, (bool, int, np.bool_, np.integer))
    try:
        with np.errstate(over="ignore"):
            np.array(item, dtype=dtype)
    except (ValueError, TypeError, OverflowError):
        return False
    return True


def show_value(value: Any) -> str:
    """A short JSON-ish rendering of a client's value for an error message."""
    try:
        text = msgspec.json.encode(value).decode()
    except (TypeError, msgspec.EncodeError):
        text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."

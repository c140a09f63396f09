"""decode_tensor / check_tensor / encode_tensor / encode_raw / decode_raw: tables of cases and
exact errors."""

from __future__ import annotations

import struct
from typing import Any

import numpy as np
import pytest

from inferkit.codecs import check_tensor, decode_tensor, encode_raw, encode_tensor, to_dtype
from inferkit.codecs.datatypes import DATATYPES, RAW_DTYPES
from inferkit.codecs.tensor import decode_raw, pack_bytes, unpack_bytes
from inferkit.errors import InvalidRequest, InvalidShape, UnsupportedDatatype
from inferkit.types import RequestInput, ResponseOutput, encode_json


def inp(datatype: str, shape: list[int], data: Any) -> RequestInput:
    return RequestInput(name="x", shape=shape, datatype=datatype, data=data)


def raw_bytes(*items: bytes) -> bytes:
    return b"".join(struct.pack("<I", len(item)) + item for item in items)


# (datatype, shape, data, expected array) — every data form decodes to the same array.
DECODES = [
    ("FP32", [2, 2], [1, 2, 3, 4.5], np.array([[1, 2], [3, 4.5]], np.float32)),
    ("FP32", [2, 2], [[1, 2], [3, 4.5]], np.array([[1, 2], [3, 4.5]], np.float32)),
    (
        "FP32",
        [2, 2],
        np.array([1, 2, 3, 4.5], np.float32),
        np.array([[1, 2], [3, 4.5]], np.float32),
    ),
    ("FP32", [4], np.array([1, 2, 3, 4.5], ">f8"), np.array([1, 2, 3, 4.5], np.float32)),
    ("FP32", [2], struct.pack("<2f", 1.5, -2), np.array([1.5, -2], np.float32)),
    ("FP64", [2], [1.5, None], np.array([1.5, np.nan])),  # JSON null is how NaN is written
    ("INT64", [3], [-(2**63), 0, 2**63 - 1], np.array([-(2**63), 0, 2**63 - 1], np.int64)),
    ("UINT64", [1], [2**64 - 1], np.array([2**64 - 1], np.uint64)),
    ("UINT8", [3], bytes([0, 7, 255]), np.array([0, 7, 255], np.uint8)),
    ("BOOL", [3], [True, False, True], np.array([True, False, True])),
    ("BOOL", [2], [1, 0], np.array([True, False])),
    ("BOOL", [3], bytes([1, 0, 2]), np.array([True, False, True])),
    ("INT32", [], [7], np.array(7, np.int32)),
    ("INT32", [0, 3], [], np.empty((0, 3), np.int32)),
    ("INT32", [0], None, np.empty(0, np.int32)),
    ("BYTES", [2], ["a b", b"\xff"], np.array([b"a b", b"\xff"], object)),
    ("BYTES", [2, 1], [["é"], ["x"]], np.array([["é".encode()], [b"x"]], object)),
    ("BYTES", [2], raw_bytes(b"ab", b""), np.array([b"ab", b""], object)),
    ("BYTES", [2], np.array(["ab", "c"]), np.array([b"ab", b"c"], object)),
    ("BYTES", [2], np.array([b"ab", b"c"]), np.array([b"ab", b"c"], object)),
]


@pytest.mark.parametrize(("datatype", "shape", "data", "expected"), DECODES)
def test_decode(datatype: str, shape: list[int], data: Any, expected: Any) -> None:
    array = decode_tensor(inp(datatype, shape, data))
    assert array.dtype == expected.dtype
    assert array.shape == tuple(shape)
    if datatype == "BYTES":
        assert array.tolist() == expected.tolist()
        assert all(type(item) is bytes for item in array.reshape(-1))
    else:
        np.testing.assert_array_equal(array, expected)


# (datatype, shape, data, error class, exact message) for a tensor at `$.inputs[1]`.
ERRORS = [
    ("FP32", [2, 3], [1, 2, 3, 4, 5], InvalidShape,
     "Expected 6 elements for shape [2, 3], got 5 - at `$.inputs[1].data`"),
    ("FP32", [2, 3], [[1, 2, 3]], InvalidShape,
     "Expected 6 elements for shape [2, 3], got 3 - at `$.inputs[1].data`"),
    ("FP32", [3], np.zeros(2, np.float32), InvalidShape,
     "Expected 3 elements for shape [3], got 2 - at `$.inputs[1].data`"),
    ("FP32", [2, 3], b"\x00" * 20, InvalidShape,
     "Expected 24 bytes for shape [2, 3] of `FP32`, got 20 - at `$.inputs[1].data`"),
    ("FP32", [2, -1], [1, 2], InvalidShape,
     "Expected `int` >= 0, got `-1` - at `$.inputs[1].shape[1]`"),
    ("FP128", [1], [1], UnsupportedDatatype,
     "Unsupported datatype `FP128`; expected one of BOOL, UINT8, UINT16, UINT32, UINT64, INT8, "
     "INT16, INT32, INT64, FP16, FP32, FP64, BYTES - at `$.inputs[1].datatype`"),
    ("FP32", [3], [1, "abc", 3], InvalidRequest,
     'Expected `FP32`, got `"abc"` - at `$.inputs[1].data[1]`'),
    ("FP32", [2, 2], [[1, 2], [3, {}]], InvalidRequest,
     "Expected `FP32`, got `{}` - at `$.inputs[1].data[1][1]`"),
    ("UINT8", [2], [1, 300], InvalidRequest,
     "Expected `UINT8`, got `300` - at `$.inputs[1].data[1]`"),
    ("UINT64", [1], [-1], InvalidRequest,
     "Expected `UINT64`, got `-1` - at `$.inputs[1].data[0]`"),
    ("INT32", [2], [1, None], InvalidRequest,
     "Expected `INT32`, got `null` - at `$.inputs[1].data[1]`"),
    ("BOOL", [2], [True, "yes"], InvalidRequest,
     'Expected `BOOL`, got `"yes"` - at `$.inputs[1].data[1]`'),
    ("BOOL", [1], [None], InvalidRequest,
     "Expected `BOOL`, got `null` - at `$.inputs[1].data[0]`"),
    ("BYTES", [2], ["a", 1], InvalidRequest,
     "Expected `BYTES`, got `1` - at `$.inputs[1].data[1]`"),
    ("BYTES", [2, 1], [["a"], [None]], InvalidRequest,
     "Expected `BYTES`, got `null` - at `$.inputs[1].data[1][0]`"),
    ("INT32", [3], [[1, 2], [3]], InvalidRequest,
     "Expected a flat list or nested lists of equal length of `INT32` values "
     "- at `$.inputs[1].data`"),
    ("FP32", [1], "1.0", InvalidRequest,
     "Expected a list, array or bytes as tensor data, got `str` - at `$.inputs[1].data`"),
    ("BYTES", [1], np.zeros(1), InvalidRequest,
     "Expected `BYTES`, got an array of `float64` - at `$.inputs[1].data`"),
    ("BYTES", [2], raw_bytes(b"ab"), InvalidShape,
     "Expected 2 elements for shape [2], got 1 - at `$.inputs[1].data`"),
    ("BYTES", [1], b"\x05\x00", InvalidRequest,
     "Expected a 4-byte length prefix at byte 0 of raw `BYTES` data, got 2 bytes "
     "- at `$.inputs[1].data`"),
    ("BYTES", [1], b"\x05\x00\x00\x00abc", InvalidRequest,
     "Expected 5 bytes for element 0 of raw `BYTES` data, got 3 - at `$.inputs[1].data`"),
]  # fmt: skip


@pytest.mark.parametrize(("datatype", "shape", "data", "error", "message"), ERRORS)
def test_decode_errors(
    datatype: str, shape: list[int], data: Any, error: type[Exception], message: str
) -> None:
    with pytest.raises(error) as info:
        decode_tensor(inp(datatype, shape, data), "$.inputs[1]")
    assert type(info.value) is error
    assert str(info.value) == message


@pytest.mark.parametrize(("datatype", "shape", "data", "error", "message"), ERRORS)
def test_check_reports_what_decode_reports(
    datatype: str, shape: list[int], data: Any, error: type[Exception], message: str
) -> None:
    tensor = inp(datatype, shape, data)
    flat = type(data) is list and (not data or type(data[0]) is not list)
    if flat and error is InvalidRequest:
        check_tensor(tensor, "$.inputs[1]")  # values of flat lists are left to the decoder
        return
    with pytest.raises(error) as info:
        check_tensor(tensor, "$.inputs[1]")
    assert str(info.value) == message


def test_check_leaves_flat_lists_alone() -> None:
    data = [1.0, 2.0, 3.0]
    tensor = inp("FP32", [3], data)
    check_tensor(tensor, "$.inputs[0]")
    assert tensor.data is data


def test_check_leaves_numeric_raw_bytes_alone() -> None:
    data = struct.pack("<3f", 1, 2, 3)
    tensor = inp("FP32", [3], data)
    check_tensor(tensor)
    assert tensor.data is data


@pytest.mark.parametrize(
    ("datatype", "shape", "data"),
    [
        ("INT32", [2, 2], [[1, 2], [3, 4]]),
        ("BYTES", [2], raw_bytes(b"ab", b"c")),
        ("BYTES", [2, 1], [["a"], ["b"]]),
    ],
)
def test_check_stores_the_converted_array(datatype: str, shape: list[int], data: Any) -> None:
    tensor = inp(datatype, shape, data)
    check_tensor(tensor)
    assert isinstance(tensor.data, np.ndarray)
    assert tensor.data.shape == tuple(shape)
    expected = decode_tensor(inp(datatype, shape, data))
    assert tensor.data.tolist() == expected.tolist()
    # ...and decoding it again is a plain view.
    assert decode_tensor(tensor).tolist() == expected.tolist()


RAW = (bytes, bytearray, memoryview)


@pytest.mark.parametrize(
    ("datatype", "shape", "data", "expected"), [row for row in DECODES if isinstance(row[2], RAW)]
)
def test_decode_raw_is_decode_tensor_of_raw_bytes(
    datatype: str, shape: list[int], data: bytes, expected: Any
) -> None:
    array = decode_raw(data, datatype, shape)
    assert array.dtype == expected.dtype
    assert array.tolist() == decode_tensor(inp(datatype, shape, data)).tolist()


@pytest.mark.parametrize(
    ("datatype", "shape", "data", "error", "message"),
    [row for row in ERRORS if isinstance(row[2], RAW)]
    # The datatype and shape are checked before the data, whatever they are.
    + [(d, s, b"", e, m) for d, s, _, e, m in ERRORS if e is UnsupportedDatatype or ".shape[" in m],
)
def test_decode_raw_errors_locate_the_data_apart(
    datatype: str, shape: list[int], data: bytes, error: type[Exception], message: str
) -> None:
    # gRPC's raw contents are not in the tensor: errors in the bytes name where they are,
    # errors in the datatype and shape still name the tensor.
    with pytest.raises(error) as info:
        decode_raw(data, datatype, shape, "$.inputs[1]")
    assert str(info.value) == message
    with pytest.raises(error) as info:
        decode_raw(data, datatype, shape, "$.inputs[1]", "$.raw_input_contents[0]")
    assert str(info.value) == message.replace("`$.inputs[1].data`", "`$.raw_input_contents[0]`")


def test_raw_numeric_decode_is_zero_copy() -> None:
    data = struct.pack("<4i", 1, 2, 3, 4)
    array = decode_tensor(inp("INT32", [2, 2], data))
    assert not array.flags.writeable  # a view of the request body
    assert array.tolist() == [[1, 2], [3, 4]]


@pytest.mark.parametrize(
    ("array", "datatype", "shape", "json"),
    [
        (np.array([[1, 2]], np.int32), "INT32", [1, 2], b"[1,2]"),
        (np.array(0.5), "FP64", [1], b"[0.5]"),  # a 0-d result is a shape-[1] tensor
        (np.array([True, False]), "BOOL", [2], b"[true,false]"),
        (np.array(["a", "é"]), "BYTES", [2], '["a","é"]'.encode()),
        (np.array([b"a", b"b"], dtype=object), "BYTES", [2], b'["a","b"]'),
        (np.array([np.nan, 1.0], np.float32), "FP32", [2], b"[null,1.0]"),
    ],
)
def test_encode_tensor(array: Any, datatype: str, shape: list[int], json: bytes) -> None:
    out = encode_tensor("y", array, {"content_type": "np"})
    assert isinstance(out, ResponseOutput)
    assert (out.name, out.datatype, out.shape) == ("y", datatype, shape)
    assert out.parameters == {"content_type": "np"}
    assert isinstance(out.data, np.ndarray)  # the array itself: encoded in C later
    prefix = f'{{"name":"y","shape":{encode_json(shape).decode()},"datatype":"{datatype}",'
    assert encode_json(out) == (
        prefix.encode() + b'"parameters":{"content_type":"np"},"data":' + json + b"}"
    )


@pytest.mark.parametrize(
    ("array", "raw"),
    [
        (np.array([1, 2], np.int16), b"\x01\x00\x02\x00"),
        (np.array([1, 2], ">i2"), b"\x01\x00\x02\x00"),  # always little-endian on the wire
        (np.array([True, False]), b"\x01\x00"),
        (np.array([b"ab", b""], object), raw_bytes(b"ab", b"")),
        (np.array(["é"]), raw_bytes("é".encode())),
    ],
)
def test_encode_raw(array: Any, raw: bytes) -> None:
    assert encode_raw(array) == raw


def test_encode_raw_casts_to_the_datatype_asked_for() -> None:
    assert encode_raw(np.array([1, 2], np.int64), "INT16") == b"\x01\x00\x02\x00"
    assert encode_raw(np.array([1.0, 0.0]), "BOOL") == b"\x01\x00"
    assert encode_raw(np.array(["ab"]), "BYTES") == raw_bytes(b"ab")
    with pytest.raises(UnsupportedDatatype):
        encode_raw(np.array([1]), "FP128")


@pytest.mark.parametrize("items", [[], [b""], [b"ab", b"", b"\x00" * 300]])
def test_pack_bytes_is_the_inverse_of_unpack_bytes(items: list[bytes]) -> None:
    assert pack_bytes(items) == raw_bytes(*items)
    assert unpack_bytes(pack_bytes(items), "$") == items


def test_raw_dtypes_are_the_datatypes_little_endian() -> None:
    assert RAW_DTYPES.keys() == DATATYPES.keys()
    for name, dtype in RAW_DTYPES.items():
        assert (dtype.kind, dtype.itemsize) == (DATATYPES[name].kind, DATATYPES[name].itemsize)
        assert dtype.byteorder in "<|" or (dtype.byteorder == "=" and np.little_endian)


@pytest.mark.parametrize("datatype", ["FP16", "FP32", "FP64", "INT8", "INT32", "UINT64"])
def test_long_flat_lists_decode_as_short_ones_do(datatype: str) -> None:
    # Lists from 1024 elements take the np.fromiter path; values, errors and locations must
    # be those of the np.array path that shorter lists take.
    values: list[Any] = [1.5, -2.0, True, 3, 2**40, 1e300, None]
    long = values * 200
    dtype = to_dtype(datatype)
    for data in (long, [*long, "x"], [*long, [1]]):
        tensor = RequestInput(name="x", shape=[len(data)], datatype=datatype, data=data)
        try:
            with np.errstate(over="ignore", invalid="ignore"):
                expected: Any = np.array(data, dtype=dtype)
        except (ValueError, TypeError, OverflowError):
            expected = None
        if expected is None:
            with pytest.raises(InvalidRequest):
                decode_tensor(tensor)
        else:
            np.testing.assert_array_equal(decode_tensor(tensor), expected)

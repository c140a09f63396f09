"""The datatype table and its inverse, checked in both directions."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from inferkit.codecs import DATATYPES, to_datatype, to_dtype
from inferkit.errors import UnsupportedDatatype

# (V2 datatype, numpy dtype) rows: to_dtype maps left to right, to_datatype right to left.
CASES = [
    ("BOOL", np.bool_),
    ("UINT8", np.uint8),
    ("UINT16", np.uint16),
    ("UINT32", np.uint32),
    ("UINT64", np.uint64),
    ("INT8", np.int8),
    ("INT16", np.int16),
    ("INT32", np.int32),
    ("INT64", np.int64),
    ("FP16", np.float16),
    ("FP32", np.float32),
    ("FP64", np.float64),
    ("BYTES", object),
]


def test_table_lists_every_v2_datatype_in_spec_order() -> None:
    assert list(DATATYPES) == [name for name, _ in CASES]


@pytest.mark.parametrize(("datatype", "dtype"), CASES)
def test_to_dtype(datatype: str, dtype: Any) -> None:
    assert to_dtype(datatype) == np.dtype(dtype)


@pytest.mark.parametrize(("datatype", "dtype"), CASES)
def test_to_datatype(datatype: str, dtype: Any) -> None:
    assert to_datatype(np.dtype(dtype)) == datatype


@pytest.mark.parametrize(
    ("dtype", "datatype"),
    [
        ("<U5", "BYTES"),
        ("S3", "BYTES"),
        (">f4", "FP32"),  # byte order does not change the datatype
        (">i8", "INT64"),
        (str, "BYTES"),
        (bytes, "BYTES"),
        (float, "FP64"),
        (bool, "BOOL"),
    ],
)
def test_to_datatype_other_spellings(dtype: Any, datatype: str) -> None:
    assert to_datatype(dtype) == datatype


@pytest.mark.parametrize("datatype", ["FP128", "fp32", "", "STRING"])
def test_unknown_datatype(datatype: str) -> None:
    with pytest.raises(UnsupportedDatatype) as info:
        to_dtype(datatype)
    assert str(info.value) == (
        f"Unsupported datatype `{datatype}`; expected one of BOOL, UINT8, UINT16, UINT32, "
        "UINT64, INT8, INT16, INT32, INT64, FP16, FP32, FP64, BYTES"
    )
    assert info.value.code == "UNSUPPORTED_DATATYPE"


@pytest.mark.parametrize("dtype", ["complex64", "datetime64[ns]", "timedelta64[s]"])
def test_dtype_without_datatype(dtype: str) -> None:
    with pytest.raises(UnsupportedDatatype) as info:
        to_datatype(np.dtype(dtype))
    assert str(info.value) == f"Unsupported numpy dtype `{dtype}`; V2 has no datatype for it"

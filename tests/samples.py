"""Test data shared by the REST, gRPC and conformance suites (pytest puts tests/ on the path)."""

from __future__ import annotations

from typing import Any

import numpy as np

#: The numpy type of every numeric V2 datatype (BYTES, the one left, is ``object``).
NUMERIC_DTYPES: dict[str, Any] = {
    "BOOL": np.bool_,
    "UINT8": np.uint8,
    "UINT16": np.uint16,
    "UINT32": np.uint32,
    "UINT64": np.uint64,
    "INT8": np.int8,
    "INT16": np.int16,
    "INT32": np.int32,
    "INT64": np.int64,
    "FP16": np.float16,
    "FP32": np.float32,
    "FP64": np.float64,
}

#: One tensor per V2 datatype, with the values at the edges of each type's range.
ARRAYS: dict[str, np.ndarray[Any, Any]] = {
    "BOOL": np.array([[True, False, True]]),
    "UINT8": np.array([[0, 255]], dtype=np.uint8),
    "UINT16": np.array([[0, 65535]], dtype=np.uint16),
    "UINT32": np.array([[0, 2**32 - 1]], dtype=np.uint32),
    "UINT64": np.array([[2**63 + 5]], dtype=np.uint64),
    "INT8": np.array([[-128, 127]], dtype=np.int8),
    "INT16": np.array([[-32768, 32767]], dtype=np.int16),
    "INT32": np.array([[1, -2, 3]], dtype=np.int32),
    "INT64": np.array([[2**40, -(2**40)]], dtype=np.int64),
    "FP16": np.array([[0.5, -1.5]], dtype=np.float16),
    "FP32": np.arange(6, dtype=np.float32).reshape(2, 3) / 7,
    "FP64": np.linspace(-1, 1, 4).reshape(1, 4),
    "BYTES": np.array([[b"hello", "wörld".encode()]], dtype=np.object_),
}

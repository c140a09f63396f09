"""The V2 datatypes and their numpy dtypes: one table and its derived inverse.

V2 (KServe Open Inference Protocol, "Tensor Data Types") names thirteen datatypes. Twelve are
fixed-size numbers with an exact numpy twin; ``BYTES`` is a variable-length byte string, held in
numpy as an ``object`` array of :class:`bytes` (numpy's ``S`` dtype pads and strips trailing NULs,
so it cannot carry arbitrary binary elements).
"""

from __future__ import annotations

from types import MappingProxyType
from typing import Any

import numpy as np

from ..errors import UnsupportedDatatype

__all__ = ["DATATYPES", "RAW_DTYPES", "to_datatype", "to_dtype"]

#: V2 datatype -> numpy dtype, in the order the spec lists them. The single source of truth.
DATATYPES: MappingProxyType[str, np.dtype[Any]] = MappingProxyType(
    {
        "BOOL": np.dtype(np.bool_),
        "UINT8": np.dtype(np.uint8),
        "UINT16": np.dtype(np.uint16),
        "UINT32": np.dtype(np.uint32),
        "UINT64": np.dtype(np.uint64),
        "INT8": np.dtype(np.int8),
        "INT16": np.dtype(np.int16),
        "INT32": np.dtype(np.int32),
        "INT64": np.dtype(np.int64),
        "FP16": np.dtype(np.float16),
        "FP32": np.dtype(np.float32),
        "FP64": np.dtype(np.float64),
        "BYTES": np.dtype(object),
    }
)

#: V2 datatype -> numpy dtype of its raw bytes (the binary extension, gRPC raw contents): V2
#: sends tensors little-endian, whatever the host. Derived from DATATYPES.
RAW_DTYPES: MappingProxyType[str, np.dtype[Any]] = MappingProxyType(
    {name: dtype.newbyteorder("<") for name, dtype in DATATYPES.items()}
)

# The inverse is keyed by (kind, itemsize) rather than by dtype so that byte order does not matter
# (``>f4`` is FP32 too). Strings of any width and object arrays are all BYTES.
_BY_KIND: MappingProxyType[tuple[str, int], str] = MappingProxyType(
    {(dt.kind, dt.itemsize): name for name, dt in DATATYPES.items() if name != "BYTES"}
)
_BYTES_KINDS = frozenset("OSU")

_EXPECTED = ", ".join(DATATYPES)


def to_dtype(datatype: str) -> np.dtype[Any]:
    """The numpy dtype of a V2 datatype; raises :class:`UnsupportedDatatype` for unknown names."""
    try:
        return DATATYPES[datatype]
    except (KeyError, TypeError):
        raise UnsupportedDatatype(
            f"Unsupported datatype `{datatype}`; expected one of {_EXPECTED}"
        ) from None


def to_datatype(dtype: np.dtype[Any] | type[Any] | str) -> str:
    """The V2 datatype of a numpy dtype (str, bytes and object arrays are ``BYTES``)."""
    dt = np.dtype(dtype)
    if dt.kind in _BYTES_KINDS:
        return "BYTES"
    try:
        return _BY_KIND[(dt.kind, dt.itemsize)]
    except KeyError:
        raise UnsupportedDatatype(
            f"Unsupported numpy dtype `{dt}`; V2 has no datatype for it"
        ) from None

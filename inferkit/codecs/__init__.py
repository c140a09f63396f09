"""Content types: converting V2 tensors and requests to Python values and back.

The same content types as MLServer (``np``, ``str``, ``base64``, ``datetime``, ``pd``), with the
same codec class names and methods, built on pure tensor functions (:func:`decode_tensor`,
:func:`encode_tensor`) and one datatype table. Codecs live in a :class:`CodecRegistry` instance
(see :func:`default_codecs`); nothing is registered globally. pandas is imported only when the
``pd`` codec decodes something.
"""

from __future__ import annotations

from .arrays import NumpyCodec, NumpyRequestCodec, inject_batch_dimension
from .base import (
    DEFAULT_INPUT_PREFIX,
    DEFAULT_OUTPUT_PREFIX,
    InputCodec,
    RequestCodec,
    SingleInputRequestCodec,
    content_type_of,
    relocate,
)
from .datatypes import DATATYPES, to_datatype, to_dtype
from .frames import PandasCodec
from .registry import (
    BUILTIN_INPUT_CODECS,
    BUILTIN_REQUEST_CODECS,
    CodecRegistry,
    InputCodecLike,
    RequestCodecLike,
    as_registry,
    declare_codec,
    declared_codecs,
    default_codecs,
    with_declared,
)
from .selection import decode_input, decode_request, encode_output, encode_response
from .signature import PredictFunc, SignatureCodec, decode_args
from .strings import Base64Codec, DatetimeCodec, StringCodec, StringRequestCodec
from .tensor import Tensor, check_tensor, decode_raw, decode_tensor, encode_raw, encode_tensor

__all__ = [
    "BUILTIN_INPUT_CODECS",
    "BUILTIN_REQUEST_CODECS",
    "DATATYPES",
    "DEFAULT_INPUT_PREFIX",
    "DEFAULT_OUTPUT_PREFIX",
    "Base64Codec",
    "CodecRegistry",
    "DatetimeCodec",
    "InputCodec",
    "InputCodecLike",
    "NumpyCodec",
    "NumpyRequestCodec",
    "PandasCodec",
    "PredictFunc",
    "RequestCodec",
    "RequestCodecLike",
    "SignatureCodec",
    "SingleInputRequestCodec",
    "StringCodec",
    "StringRequestCodec",
    "Tensor",
    "as_registry",
    "check_tensor",
    "content_type_of",
    "declare_codec",
    "declared_codecs",
    "decode_args",
    "decode_input",
    "decode_raw",
    "decode_request",
    "decode_tensor",
    "default_codecs",
    "encode_output",
    "encode_raw",
    "encode_response",
    "encode_tensor",
    "inject_batch_dimension",
    "relocate",
    "to_datatype",
    "to_dtype",
    "with_declared",
]

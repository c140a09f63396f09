"""The binary tensor data extension of the V2 REST protocol (Triton's ``binary_data``).

A request body is a JSON header of ``Inference-Header-Content-Length`` bytes followed by the raw
bytes of every input whose ``parameters.binary_data_size`` is set, in input order; a response is
built the same way for the outputs the client asked to get binary (``binary_data: true`` on a
requested output, or ``binary_data_output: true`` on the request). ``tritonclient.http`` uses
this by default, so a V2 server without it is not a drop-in for Triton clients.

Raw tensor bytes are little-endian; BYTES elements are each a 4-byte little-endian length
followed by the bytes. Inputs keep their raw bytes in ``RequestInput.data`` as a ``memoryview``
of the request body (the codecs turn it into a read-only array with ``np.frombuffer``), so the
data is neither copied nor turned into a Python list.
"""

from __future__ import annotations

from typing import Any

from .. import codecs
from ..errors import InvalidRequest
from ..types import InferenceRequest, InferenceResponse, ResponseOutput, encode_json

__all__ = ["HEADER_LENGTH", "decode_binary_request", "encode_binary_response", "header_length"]

#: The HTTP header that says where the JSON part of a body ends.
HEADER_LENGTH = "inference-header-content-length"


def header_length(value: str) -> int:
    """The ``Inference-Header-Content-Length`` header's value as a number of bytes.

    Only ASCII digits: ``str.isdigit`` also takes "²" and other scripts' digits, which are no
    length, and ``int`` refuses strings of more than 4300 digits; neither may become a 500.
    """
    # More than 20 digits is past any body's size (and int() would refuse 4300).
    if not (value.isascii() and value.isdigit()) or len(value) > 20:
        raise InvalidRequest(
            f"Inference-Header-Content-Length must be a non-negative integer, got {_shown(value)}"
        )
    return int(value)


def _shown(value: str) -> str:
    # A header may be kilobytes long: the message quotes its start.
    if len(value) <= 20:
        return repr(value)
    return f"{value[:20] + '...'!r} ({len(value)} characters)"


def decode_binary_request(body: bytes, header_length: int, decode: Any) -> InferenceRequest:
    """Split a binary-extension body into the request, moving raw bytes into ``data``."""
    if not 0 <= header_length <= len(body):
        raise InvalidRequest(
            f"Inference-Header-Content-Length is {header_length}, but the body has "
            f"{len(body)} bytes"
        )
    request: InferenceRequest = decode(body[:header_length])
    view = memoryview(body)
    offset = header_length
    for i, tensor in enumerate(request.inputs):
        params = tensor.parameters
        if not params or "binary_data_size" not in params:
            continue
        size = params.pop("binary_data_size")
        where = f"$.inputs[{i}].parameters.binary_data_size"
        if not isinstance(size, int) or isinstance(size, bool) or size < 0:
            raise InvalidRequest(f"Expected a non-negative integer, got {size!r}", where=where)
        if offset + size > len(body):
            raise InvalidRequest(
                f"Expected {size} bytes of binary data, got {len(body) - offset}", where=where
            )
        # A view, not a copy: the codecs read it with np.frombuffer (read-only, as from bytes).
        tensor.data = view[offset : offset + size]
        tensor.parameters = params or None
        offset += size
    if offset != len(body):
        raise InvalidRequest(f"Unexpected {len(body) - offset} bytes after the binary inputs")
    return request


def encode_binary_response(
    response: InferenceResponse, all_binary: bool
) -> tuple[bytes, int | None]:
    """Encode a response, with the outputs that asked for it as binary data.

    Returns the body and the JSON header's length (None when no output is binary, so the
    body is plain JSON).
    """
    chunks: list[bytes] = []
    for output in response.outputs:
        params = output.parameters
        wanted = params.pop("binary_data", None) if params else None
        if wanted or (wanted is None and all_binary):
            raw = _tensor_bytes(output)
            output.parameters = {**(params or {}), "binary_data_size": len(raw)}
            output.data = None
            chunks.append(raw)
        elif params is not None:
            output.parameters = params or None
    header = encode_json(response)
    if not chunks:
        return header, None
    return b"".join([header, *chunks]), len(header)


def _tensor_bytes(output: ResponseOutput) -> bytes:
    if isinstance(output.data, bytes):
        return output.data
    return codecs.encode_raw(codecs.decode_tensor(output, "$"))

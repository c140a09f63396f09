"""The gRPC messages of the benchmark: the prepared ``ModelInferRequest`` and reading answers.

Messages are built and parsed with Triton's protoc-generated classes
(``tritonclient.grpc.service_pb2``, on the C ``upb`` runtime): code independent of every server
under test, and fast enough to build the 4 MB request. A prepared request is a serialized
``ModelInferRequest``; :func:`frame` adds the 5-byte gRPC message prefix (a compressed flag and
a big-endian length) that h2load must post as the HTTP/2 body. Real clients (grpcio) add that
prefix themselves and get the unframed message.

The answer check parses the whole response; the *marker* is then the bytes that carry the
first output's values (its serialized ``contents``, or its ``raw_output_contents`` entry), which
must appear verbatim in every correct response, as the REST marker does in a JSON body.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from tritonclient.grpc import service_pb2

from .answers import AnswerError, check_values
from .scenarios import INPUT_DATATYPE, INPUT_NAME, Request

__all__ = [
    "MODEL_INFER",
    "answer_marker",
    "check_grpc_answer",
    "frame",
    "infer_request",
    "output_values",
    "unframe",
]

#: The RPC every gRPC scenario calls (KServe V2 / Triton).
MODEL_INFER = "/inference.GRPCInferenceService/ModelInfer"

#: V2 datatype -> (the typed ``contents`` field, numpy dtype of the raw little-endian bytes).
_DATATYPES: dict[str, tuple[str, str]] = {
    "BOOL": ("bool_contents", "?"),
    "INT8": ("int_contents", "<i1"),
    "INT16": ("int_contents", "<i2"),
    "INT32": ("int_contents", "<i4"),
    "INT64": ("int64_contents", "<i8"),
    "UINT8": ("uint_contents", "<u1"),
    "UINT16": ("uint_contents", "<u2"),
    "UINT32": ("uint_contents", "<u4"),
    "UINT64": ("uint64_contents", "<u8"),
    "FP32": ("fp32_contents", "<f4"),
    "FP64": ("fp64_contents", "<f8"),
}


def infer_request(model: str, request: Request, raw: bool) -> bytes:
    """The serialized ``ModelInferRequest`` of ``request`` for ``model``.

    The tensor goes in ``raw_input_contents`` (little-endian) when ``raw``, else in typed
    ``contents``.
    """
    if request.tensor is None:
        raise ValueError(f"payload {request.payload.key} has no tensor")
    tensor = request.tensor
    message = service_pb2.ModelInferRequest(model_name=model)
    tensor_input = message.inputs.add(name=INPUT_NAME, datatype=INPUT_DATATYPE)
    tensor_input.shape.extend(tensor.shape)
    field, dtype = _DATATYPES[INPUT_DATATYPE]
    if raw:
        message.raw_input_contents.append(np.ascontiguousarray(tensor, dtype=dtype).tobytes())
    else:
        getattr(tensor_input.contents, field).extend(tensor.ravel().tolist())
    data: bytes = message.SerializeToString()
    return data


def frame(message: bytes) -> bytes:
    """``message`` as one gRPC length-prefixed message: not compressed, 4-byte length."""
    return b"\x00" + len(message).to_bytes(4, "big") + message


def unframe(data: bytes) -> bytes:
    """The message of one uncompressed gRPC length-prefixed message (the inverse of frame)."""
    if len(data) < 5 or data[0] != 0:
        raise ValueError("not an uncompressed gRPC message")
    length = int.from_bytes(data[1:5], "big")
    if len(data) != 5 + length:
        raise ValueError(f"the prefix says {length} bytes, {len(data) - 5} follow")
    return data[5:]


def _parse_response(message: bytes) -> Any:
    try:
        return service_pb2.ModelInferResponse.FromString(message)
    except Exception as exc:  # protobuf's DecodeError, whatever the runtime
        raise AnswerError(f"not a ModelInferResponse ({len(message)} bytes)") from exc


def _first_output(response: Any) -> Any:
    if not response.outputs:
        raise AnswerError(f"a ModelInferResponse without outputs: {str(response)[:200]!r}")
    output = response.outputs[0]
    if output.datatype not in _DATATYPES:
        raise AnswerError(f"output {output.name!r} has datatype {output.datatype!r}")
    return output


def output_values(message: bytes) -> list[Any]:
    """The first output's values, flattened, from a serialized ``ModelInferResponse``."""
    response = _parse_response(message)
    output = _first_output(response)
    field, dtype = _DATATYPES[output.datatype]
    if response.raw_output_contents:
        raw = response.raw_output_contents[0]
        if len(raw) % np.dtype(dtype).itemsize:
            raise AnswerError(f"raw output of {len(raw)} bytes is not {output.datatype}")
        values: list[Any] = np.frombuffer(raw, dtype=dtype).tolist()
        return values
    return list(getattr(output.contents, field))


def answer_marker(message: bytes) -> bytes:
    """The bytes holding the first output's values, found verbatim in ``message``."""
    response = _parse_response(message)
    output = _first_output(response)
    if response.raw_output_contents:
        marker: bytes = response.raw_output_contents[0]
    else:
        marker = output.contents.SerializeToString()
    if not marker or marker not in message:
        raise AnswerError("the output's values are not encoded verbatim in the response")
    return marker


def check_grpc_answer(message: bytes, expected: Sequence[float], rtol: float) -> bytes:
    """Raise :class:`AnswerError` unless the first output holds ``expected``; the marker."""
    check_values(output_values(message), expected, rtol, f"a {len(message)}-byte response")
    return answer_marker(message)

"""The other direction of ``inferkit.transports.grpc.convert``: what a client does with the
generated V2 messages. The service never needs these (it reads requests and writes replies),
the tests do: to build requests, to read replies, and as the reference the service's own
ModelInfer reader and writer (``_wire``) are compared with.

Tensors are read with the transport's own rules (``_tensors.decode_tensors``), and written as
the service writes them (``_tensors.encode_arrays``, ``raw_bytes``), typed or raw; a message
with an FP16 tensor is raw in any case, since FP16 has no typed field.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, get_args

import numpy as np

from inferkit.transports.grpc._generated import inference as pb
from inferkit.transports.grpc._generated.inference import model_repository as mr
from inferkit.transports.grpc._tensors import (
    TYPED_FIELDS,
    bytes_items,
    decode_tensors,
    encode_arrays,
    needs_raw,
    raw_bytes,
)
from inferkit.transports.grpc.convert import parameters_to_proto
from inferkit.types import (
    InferenceRequest,
    InferenceResponse,
    MetadataModelResponse,
    MetadataServerResponse,
    MetadataTensor,
    Parameters,
    RepositoryIndexResponseItem,
    RequestInput,
    RequestOutput,
    ResponseOutput,
    State,
)

__all__ = [
    "encode_tensors",
    "index_from_proto",
    "model_metadata_from_proto",
    "parameters_from_proto",
    "request_from_proto",
    "request_to_proto",
    "response_from_proto",
    "response_to_proto",
    "server_metadata_from_proto",
    "uses_raw",
]

# -- parameters ---------------------------------------------------------------------------------

_PARAM_FIELDS = ("bool_param", "int64_param", "string_param", "double_param", "uint64_param")


def _param_value(param: pb.InferParameter) -> Any:
    for field in _PARAM_FIELDS:
        value = getattr(param, field)
        if value is not None:
            return value
    return None


def parameters_from_proto(params: Mapping[str, pb.InferParameter]) -> Parameters | None:
    """The V2 parameters of a protobuf map; ``None`` for an empty map, as the JSON omits it."""
    if not params:
        return None
    return {key: _param_value(value) for key, value in params.items()}


# -- tensors ------------------------------------------------------------------------------------


def _typed_contents(datatype: str, array: np.ndarray[Any, Any]) -> pb.InferTensorContents:
    if datatype == "BYTES":
        flat: list[Any] = bytes_items(array)
    else:
        flat = array.reshape(-1).tolist()  # numpy's C loop builds the Python values
    return pb.InferTensorContents(**{TYPED_FIELDS[datatype]: flat})


def encode_tensors(
    tensors: Sequence[RequestInput | ResponseOutput], raw: bool, prefix: str
) -> tuple[list[pb.InferTensorContents | None], list[bytes]]:
    """Typed contents per tensor (``raw=False``), or ``None`` each and the raw entries; the
    data as ``_tensors.encode_arrays`` takes them."""
    arrays = encode_arrays(tensors, prefix)
    if raw:
        return [None] * len(arrays), [
            raw_bytes(t.datatype, a) for t, a in zip(tensors, arrays, strict=True)
        ]
    return [_typed_contents(t.datatype, a) for t, a in zip(tensors, arrays, strict=True)], []


# -- inference ----------------------------------------------------------------------------------


def uses_raw(message: pb.ModelInferRequest) -> bool:
    """Whether a request came raw, and so is answered with ``raw_output_contents`` (as Triton
    and MLServer answer; the service asks the same of ``_wire``'s request)."""
    return bool(message.raw_input_contents)


def request_from_proto(message: pb.ModelInferRequest) -> InferenceRequest:
    """The core request of a ``ModelInferRequest``; tensor data become numpy arrays.

    Raises :class:`~inferkit.errors.InvalidRequest` (or a subclass) naming the field at fault.
    The model name and version stay on the message: they select the model, not the input.
    """
    decoded = decode_tensors(
        message.inputs, message.raw_input_contents, "$.inputs", "raw_input_contents"
    )
    return InferenceRequest(
        id=message.id or None,
        parameters=parameters_from_proto(message.parameters),
        inputs=[
            RequestInput(
                name=t.name,
                shape=list(t.shape),
                datatype=t.datatype,
                parameters=parameters_from_proto(t.parameters),
                data=data,
            )
            for t, data in decoded
        ],
        outputs=[
            RequestOutput(name=o.name, parameters=parameters_from_proto(o.parameters))
            for o in message.outputs
        ]
        or None,
    )


def request_to_proto(
    request: InferenceRequest, model_name: str, model_version: str = "", *, raw: bool = False
) -> pb.ModelInferRequest:
    """The ``ModelInferRequest`` of a core request; typed or raw."""
    raw = raw or needs_raw(request.inputs)
    contents, raw_contents = encode_tensors(request.inputs, raw, "$.inputs")
    return pb.ModelInferRequest(
        model_name=model_name,
        model_version=model_version,
        id=request.id or "",
        parameters=parameters_to_proto(request.parameters),
        inputs=[
            pb.ModelInferRequestInferInputTensor(
                name=t.name,
                datatype=t.datatype,
                shape=list(t.shape),
                parameters=parameters_to_proto(t.parameters),
                contents=c,
            )
            for t, c in zip(request.inputs, contents, strict=True)
        ],
        outputs=[
            pb.ModelInferRequestInferRequestedOutputTensor(
                name=o.name, parameters=parameters_to_proto(o.parameters)
            )
            for o in request.outputs or ()
        ],
        raw_input_contents=raw_contents,
    )


def response_to_proto(response: InferenceResponse, *, raw: bool = False) -> pb.ModelInferResponse:
    """The ``ModelInferResponse`` of a core response, as a generated message: the reference
    ``_wire.write_infer_response`` must match byte for byte.

    ``raw`` asks for ``raw_output_contents`` (pass :func:`uses_raw` of the request); a response
    with an FP16 output is raw in any case. Arrays go out through ``tobytes()`` (raw) or
    ``tolist()`` (typed).
    """
    raw = raw or needs_raw(response.outputs)
    contents, raw_contents = encode_tensors(response.outputs, raw, "$.outputs")
    return pb.ModelInferResponse(
        model_name=response.model_name,
        model_version=response.model_version or "",
        id=response.id or "",
        parameters=parameters_to_proto(response.parameters),
        outputs=[
            pb.ModelInferResponseInferOutputTensor(
                name=t.name,
                datatype=t.datatype,
                shape=list(t.shape),
                parameters=parameters_to_proto(t.parameters),
                contents=c,
            )
            for t, c in zip(response.outputs, contents, strict=True)
        ],
        raw_output_contents=raw_contents,
    )


def response_from_proto(message: pb.ModelInferResponse) -> InferenceResponse:
    """The core response of a ``ModelInferResponse``."""
    decoded = decode_tensors(
        message.outputs, message.raw_output_contents, "$.outputs", "raw_output_contents"
    )
    return InferenceResponse(
        model_name=message.model_name,
        model_version=message.model_version or None,
        id=message.id or None,
        parameters=parameters_from_proto(message.parameters),
        outputs=[
            ResponseOutput(
                name=t.name,
                shape=list(t.shape),
                datatype=t.datatype,
                parameters=parameters_from_proto(t.parameters),
                data=data,
            )
            for t, data in decoded
        ],
    )


# -- metadata -----------------------------------------------------------------------------------


def server_metadata_from_proto(message: pb.ServerMetadataResponse) -> MetadataServerResponse:
    """The core server metadata of a ``ServerMetadataResponse``."""
    return MetadataServerResponse(
        name=message.name, version=message.version, extensions=list(message.extensions)
    )


def _tensor_meta_from_proto(t: pb.ModelMetadataResponseTensorMetadata) -> MetadataTensor:
    return MetadataTensor(
        name=t.name,
        datatype=t.datatype,
        shape=list(t.shape),
        parameters=parameters_from_proto(t.parameters),
    )


def model_metadata_from_proto(message: pb.ModelMetadataResponse) -> MetadataModelResponse:
    """The core model metadata of a ``ModelMetadataResponse``; empty lists become ``None``."""
    return MetadataModelResponse(
        name=message.name,
        versions=list(message.versions) or None,
        platform=message.platform,
        inputs=[_tensor_meta_from_proto(t) for t in message.inputs] or None,
        outputs=[_tensor_meta_from_proto(t) for t in message.outputs] or None,
        parameters=parameters_from_proto(message.parameters),
    )


# -- model repository ---------------------------------------------------------------------------

_STATES: frozenset[str] = frozenset(get_args(State))


def index_from_proto(
    message: pb.RepositoryIndexResponse | mr.RepositoryIndexResponse,
) -> list[RepositoryIndexResponseItem]:
    """The core repository index of either service's response; unknown states are UNKNOWN."""
    return [
        RepositoryIndexResponseItem(
            name=m.name,
            version=m.version,
            state=m.state if m.state in _STATES else "UNKNOWN",  # type: ignore[arg-type]
            reason=m.reason,
        )
        for m in message.models
    ]

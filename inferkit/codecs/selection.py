"""Choosing a codec for a tensor or a request: MLServer's ``MLModel.decode`` and friends.

These are functions of a :class:`~inferkit.codecs.registry.CodecRegistry` and the model's declared
metadata (``ModelSettings.inputs`` / ``outputs``), so a model class can offer MLServer's
``self.decode(...)`` / ``self.encode(...)`` methods as one-line calls.

Content type precedence, as in MLServer:

* a tensor: its own ``parameters.content_type``, then the model metadata's for that tensor name,
  then ``default_codec``; with none of them the raw ``data`` is returned (outputs: the codec that
  can encode the payload);
* a request: its own ``parameters.content_type``, then the model's (``content_type``, from
  ``ModelSettings.parameters.content_type``), then ``default_codec``; else the request itself.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from ..errors import InferkitError
from ..types import (
    InferenceRequest,
    InferenceResponse,
    MetadataTensor,
    RequestInput,
    RequestOutput,
    ResponseOutput,
)
from .base import content_type_of, relocate
from .registry import CodecRegistry, InputCodecLike, RequestCodecLike

__all__ = ["decode_input", "decode_request", "encode_output", "encode_response"]


def decode_input(
    registry: CodecRegistry,
    request_input: RequestInput,
    metadata: Sequence[MetadataTensor] | None = None,
    default_codec: InputCodecLike | None = None,
    *,
    where: str = "$",
) -> Any:
    """Decode one request input with the codec its content type (or the model's) names.

    ``where`` is the input's path in the request (``$.inputs[1]``), used to locate errors.
    """
    content_type = content_type_of(request_input) or _declared(metadata, request_input.name)
    codec = registry.find_input_codec(content_type) if content_type else None
    codec = codec or default_codec
    if codec is None:
        return request_input.data
    try:
        return codec.decode_input(request_input)
    except InferkitError as err:
        raise relocate(err, where) from None


def decode_request(
    registry: CodecRegistry,
    request: InferenceRequest,
    metadata: Sequence[MetadataTensor] | None = None,
    default_codec: RequestCodecLike | None = None,
    *,
    content_type: str | None = None,
) -> Any:
    """Decode a whole request with its request codec; without one, return the request itself.

    Inputs without a content type of their own get the one ``metadata`` declares for them (MLServer
    decodes those inputs up front), so a request codec such as ``pd`` decodes them the same way.
    """
    if metadata:
        for request_input in request.inputs:
            declared = _declared(metadata, request_input.name)
            if declared and not content_type_of(request_input):
                request_input.parameters = {
                    **(request_input.parameters or {}),
                    "content_type": declared,
                }
    chosen = content_type_of(request) or content_type
    codec = registry.find_request_codec(chosen) if chosen else None
    codec = codec or default_codec
    if codec is None:
        return request
    return codec.decode_request(request)


def encode_output(
    registry: CodecRegistry,
    payload: Any,
    request_output: RequestOutput,
    metadata: Sequence[MetadataTensor] | None = None,
    default_codec: InputCodecLike | None = None,
) -> ResponseOutput:
    """Encode ``payload`` as the output ``request_output`` asks for.

    The codec is the one named by the requested output's content type, else by the model's
    metadata for that output, else the first that can encode the payload, else ``default_codec``.
    """
    name = request_output.name
    content_type = content_type_of(request_output) or _declared(metadata, name)
    if content_type:
        codec = registry.find_input_codec(content_type)
    else:
        codec = registry.find_input_codec(payload=payload)
    codec = codec or default_codec
    if codec is None:
        # A bug in the model (it returned something no codec handles), not in the request.
        raise TypeError(f"Codec not found for output field with name '{name}'")
    return codec.encode_output(name=name, payload=payload)


def encode_response(
    registry: CodecRegistry,
    model_name: str,
    payload: Any,
    model_version: str | None = None,
    default_codec: RequestCodecLike | None = None,
) -> InferenceResponse:
    """Encode ``payload`` as a whole response with the first request codec that can encode it."""
    codec = registry.find_request_codec(payload=payload) or default_codec
    if codec is None:
        raise TypeError(f"Codec not found for output response with type {type(payload)}")
    return codec.encode_response(model_name, payload, model_version)


def _declared(metadata: Sequence[MetadataTensor] | None, name: str) -> str | None:
    if not metadata:
        return None
    for tensor in metadata:
        if tensor.name == name:
            return content_type_of(tensor)
    return None

"""The Open Inference Protocol (KServe V2) wire schema, as msgspec Structs.

Field names and order follow the V2 REST/JSON form of the spec (and MLServer's JSON output), so a
Struct encodes to exactly the JSON a V2 client expects and a body decodes straight into a Struct:
decoding *is* validation. Optional fields default to ``None`` and are omitted when encoding.

Tensor ``data`` is deliberately loose (``Any``): on the wire it is a flat or nested JSON list, but
inside the process a tensor may also carry a ``numpy.ndarray`` (built by a codec, by the gRPC
transport straight from ``raw_*_contents``, or by the REST transport from a large flat JSON array
of floats, as float64: :mod:`inferkit.transports.json_numbers`) or raw little-endian ``bytes``.
The codecs in :mod:`inferkit.codecs` turn any of these into arrays; :func:`encode_json` turns
arrays back into JSON without a per-element Python loop.
"""

from __future__ import annotations

from typing import Any, Literal, TypeVar

import msgspec
import numpy as np

__all__ = [
    "InferenceRequest",
    "InferenceResponse",
    "MetadataModelResponse",
    "MetadataServerResponse",
    "MetadataTensor",
    "Parameters",
    "RepositoryIndexRequest",
    "RepositoryIndexResponse",
    "RepositoryIndexResponseItem",
    "RequestInput",
    "RequestOutput",
    "ResponseOutput",
    "State",
    "TensorData",
    "decode_json",
    "encode_json",
    "to_dict",
]

#: A V2 ``parameters`` object: string keys, JSON values (``content_type``, ``headers``, ...).
Parameters = dict[str, Any]

#: Tensor contents: a flat or nested list on the wire; a numpy array or raw bytes in process.
TensorData = Any

#: Model states of the repository extension, as MLServer and Triton spell them.
State = Literal["UNKNOWN", "READY", "LOADING", "UNLOADING", "UNAVAILABLE", "FAILED"]


class _Base(msgspec.Struct, kw_only=True, omit_defaults=True):
    """Common options: keyword-only construction, unset fields left out of the JSON."""

    def dict(self) -> dict[str, Any]:
        """The plain-JSON form, as MLServer's pydantic ``.dict()`` gives (for drop-in scripts)."""
        result: dict[str, Any] = to_dict(self)
        return result


class RequestInput(_Base, kw_only=True):
    """One input tensor of an inference request (V2 ``$request_input``)."""

    name: str
    shape: list[int]
    datatype: str
    parameters: Parameters | None = None
    data: TensorData = None


class RequestOutput(_Base, kw_only=True):
    """An output the client asks for, with per-output parameters (V2 ``$request_output``)."""

    name: str
    parameters: Parameters | None = None


class InferenceRequest(_Base, kw_only=True):
    """A V2 inference request."""

    id: str | None = None
    parameters: Parameters | None = None
    inputs: list[RequestInput]
    outputs: list[RequestOutput] | None = None

    def __post_init__(self) -> None:
        # MLServer's pydantic types take dicts for nested messages, and model code (and its
        # tests) build requests that way; transports and decoders pass Structs, which cost
        # one type check each here.
        for item in self.inputs:
            if type(item) is not RequestInput:
                self.inputs = _structs(self.inputs, RequestInput)
                break
        if self.outputs:
            for output in self.outputs:
                if type(output) is not RequestOutput:
                    self.outputs = _structs(self.outputs, RequestOutput)
                    break


class ResponseOutput(_Base, kw_only=True):
    """One output tensor of an inference response (V2 ``$response_output``)."""

    name: str
    shape: list[int]
    datatype: str
    parameters: Parameters | None = None
    data: TensorData = None


class InferenceResponse(_Base, kw_only=True):
    """A V2 inference response."""

    model_name: str
    model_version: str | None = None
    id: str | None = None
    parameters: Parameters | None = None
    outputs: list[ResponseOutput]

    def __post_init__(self) -> None:
        # As InferenceRequest: dicts become ResponseOutputs, as MLServer's pydantic types do.
        for output in self.outputs:
            if type(output) is not ResponseOutput:
                self.outputs = _structs(self.outputs, ResponseOutput)
                break


class MetadataTensor(_Base, kw_only=True):
    """Name, datatype and shape of a model input or output (``-1`` marks a variable dimension)."""

    name: str
    datatype: str
    shape: list[int]
    parameters: Parameters | None = None


class MetadataServerResponse(_Base, kw_only=True):
    """``GET /v2``: server name, version and the protocol extensions it supports."""

    name: str
    version: str
    extensions: list[str] = msgspec.field(default_factory=list)


class MetadataModelResponse(_Base, kw_only=True):
    """``GET /v2/models/{name}``: what a model is and what it takes and returns."""

    name: str
    versions: list[str] | None = None
    #: Required by the spec, so always written, even when empty.
    platform: str
    inputs: list[MetadataTensor] | None = None
    outputs: list[MetadataTensor] | None = None
    parameters: Parameters | None = None


class RepositoryIndexRequest(_Base, kw_only=True):
    """Body of ``POST /v2/repository/index``: ``ready`` keeps only models that are (not) ready."""

    ready: bool | None = None


class RepositoryIndexResponseItem(msgspec.Struct, kw_only=True):
    """One model version in the repository index; every field is always present."""

    name: str
    version: str = ""
    state: State = "UNKNOWN"
    reason: str = ""


#: ``POST /v2/repository/index`` answers a bare JSON list.
RepositoryIndexResponse = list[RepositoryIndexResponseItem]


_S = TypeVar("_S", bound=msgspec.Struct)


def _structs(items: Any, cls: type[_S]) -> list[_S]:
    """``items`` with every dict converted to ``cls``, validated as decoding would be
    (``msgspec.ValidationError`` names the field); tensor data is kept as it is, and anything
    else (a Struct of a similar shape) is left alone, as before."""
    return [msgspec.convert(item, cls) if isinstance(item, dict) else item for item in items]


def _enc_hook(obj: Any) -> Any:
    # numpy does the element work in C (``tolist``); msgspec then writes the floats and ints in C
    # too. No Python-level loop over tensor elements either side.
    if isinstance(obj, np.ndarray):
        if obj.dtype.kind in "SO":  # bytes / object arrays: BYTES tensors
            return [_bytes_to_str(x) for x in obj.reshape(-1).tolist()]
        return obj.reshape(-1).tolist()
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, (bytes, bytearray, memoryview)):
        return _bytes_to_str(bytes(obj))
    raise NotImplementedError(f"Cannot encode objects of type {type(obj).__name__}")


def _bytes_to_str(value: Any) -> Any:
    # V2 JSON carries BYTES elements as strings; undecodable bytes keep msgspec's base64 form.
    if isinstance(value, bytes):
        try:
            return value.decode("utf-8")
        except UnicodeDecodeError:
            return value
    return value


_JSON_ENCODER = msgspec.json.Encoder(enc_hook=_enc_hook)


def encode_json(obj: Any) -> bytes:
    """Encode a Struct (or any JSON-able value) whose tensors may hold numpy arrays."""
    return _JSON_ENCODER.encode(obj)


def decode_json(data: bytes | str, type: type[Any] = Any) -> Any:
    """Decode JSON into ``type``; raises :class:`msgspec.ValidationError` / ``DecodeError``."""
    return msgspec.json.decode(data, type=type)


def to_dict(obj: Any) -> Any:
    """The plain builtin form (dicts, lists, str, numbers) of a Struct holding numpy data."""
    return msgspec.to_builtins(obj, enc_hook=_enc_hook)

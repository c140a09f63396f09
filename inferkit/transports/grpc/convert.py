"""Pure conversions between the generated V2 protobuf messages and inferkit's Structs.

No I/O and no grpclib here: every function takes a message or a Struct and returns the other, so
the gRPC service stays a thin shell and these rules are tested as tables. Only the directions the
service needs live here (requests in, replies out); their inverses, which clients and tests
need, are in tests/grpc/proto_convert.py. ModelInfer's own messages are read and written by
``_wire``, straight from the bytes.

Parameters. ``InferParameter`` carries a bool, an int64, a string, a double or a uint64; they
map to Python ``bool``, ``int``, ``str``, ``float`` and ``int``. Python values of any other
type (lists, dicts) have no protobuf form and travel as their JSON text in ``string_param``.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from typing import Any, Protocol, TypeVar

import numpy as np

from inferkit.errors import InvalidRequest, ModelNotFound
from inferkit.statistics import ModelStatisticsResponse, StatisticDuration
from inferkit.types import (
    InferenceResponse,
    MetadataModelResponse,
    MetadataServerResponse,
    MetadataTensor,
    Parameters,
    RepositoryIndexRequest,
    RepositoryIndexResponseItem,
    encode_json,
)

from ._generated import inference as pb
from ._generated.inference import model_repository as mr

__all__ = [
    "index_request_from_proto",
    "index_to_model_repository_proto",
    "index_to_proto",
    "model_metadata_to_proto",
    "model_name_of",
    "model_ref",
    "parameters_to_proto",
    "response_metadata",
    "server_metadata_to_proto",
    "statistics_to_proto",
]

# -- parameters ---------------------------------------------------------------------------------

_INT64_MIN, _INT64_MAX, _UINT64_MAX = -(2**63), 2**63 - 1, 2**64 - 1


def _param(value: Any) -> pb.InferParameter:
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, bool):  # before int: bool is an int
        return pb.InferParameter(bool_param=value)
    if isinstance(value, int) and _INT64_MIN <= value <= _INT64_MAX:
        return pb.InferParameter(int64_param=value)
    if isinstance(value, int) and 0 <= value <= _UINT64_MAX:
        return pb.InferParameter(uint64_param=value)
    if isinstance(value, float):
        return pb.InferParameter(double_param=value)
    if isinstance(value, str):
        return pb.InferParameter(string_param=value)
    return pb.InferParameter(string_param=encode_json(value).decode())


def parameters_to_proto(params: Parameters | None) -> dict[str, pb.InferParameter]:
    """The protobuf map of V2 parameters; ``None`` values are left out (proto3 has no null)."""
    return {key: _param(value) for key, value in (params or {}).items() if value is not None}


# -- metadata -----------------------------------------------------------------------------------


class _Ref(Protocol):
    # ModelReadyRequest, ModelMetadataRequest, ModelStatisticsRequest.
    name: str
    version: str


def model_ref(message: _Ref) -> tuple[str, str | None]:
    """``(name, version)`` of a model request; an empty version (proto3's unset) is ``None``."""
    return message.name, message.version or None


def server_metadata_to_proto(meta: MetadataServerResponse) -> pb.ServerMetadataResponse:
    """``ServerMetadataResponse`` of the core server metadata."""
    return pb.ServerMetadataResponse(
        name=meta.name, version=meta.version, extensions=list(meta.extensions)
    )


def _tensor_meta_to_proto(t: MetadataTensor) -> pb.ModelMetadataResponseTensorMetadata:
    return pb.ModelMetadataResponseTensorMetadata(
        name=t.name,
        datatype=t.datatype,
        shape=list(t.shape),
        parameters=parameters_to_proto(t.parameters),
    )


def model_metadata_to_proto(meta: MetadataModelResponse) -> pb.ModelMetadataResponse:
    """``ModelMetadataResponse`` of a core model metadata, with MLServer's parameters."""
    return pb.ModelMetadataResponse(
        name=meta.name,
        versions=list(meta.versions or ()),
        platform=meta.platform,
        inputs=[_tensor_meta_to_proto(t) for t in meta.inputs or ()],
        outputs=[_tensor_meta_to_proto(t) for t in meta.outputs or ()],
        parameters=parameters_to_proto(meta.parameters),
    )


# -- model repository ---------------------------------------------------------------------------

_Index = TypeVar("_Index", pb.RepositoryIndexResponse, mr.RepositoryIndexResponse)


def index_request_from_proto(
    message: pb.RepositoryIndexRequest | mr.RepositoryIndexRequest,
) -> RepositoryIndexRequest:
    """The core index request; ``ready=false`` is proto3's unset and lists every model."""
    return RepositoryIndexRequest(ready=True if message.ready else None)


def _index(items: Iterable[RepositoryIndexResponseItem], cls: type[_Index], item: Any) -> _Index:
    return cls(
        models=[item(name=i.name, version=i.version, state=i.state, reason=i.reason) for i in items]
    )


def index_to_proto(items: Iterable[RepositoryIndexResponseItem]) -> pb.RepositoryIndexResponse:
    """``inference.RepositoryIndexResponse`` of the core repository index."""
    return _index(items, pb.RepositoryIndexResponse, pb.RepositoryIndexResponseModelIndex)


def index_to_model_repository_proto(
    items: Iterable[RepositoryIndexResponseItem],
) -> mr.RepositoryIndexResponse:
    """The same index for MLServer's ``inference.model_repository`` service."""
    return _index(items, mr.RepositoryIndexResponse, mr.RepositoryIndexResponseModelIndex)


class _LoadRequest(Protocol):
    # Load/unload requests of both services.
    repository_name: str
    model_name: str


def model_name_of(request: _LoadRequest, known: Callable[[str], bool]) -> str:
    """The model a load or unload request names, under either numbering of its fields.

    Triton, MLServer and Seldon number ``repository_name = 1, model_name = 2``; KServe's Python
    server numbers ``model_name = 1``, which lands in ``repository_name`` here. So when
    ``model_name`` is empty and field 1 is a model ``known`` to the server, field 1 is the
    model. ``known`` should also answer for models the repository can discover on load.
    """
    if request.model_name:
        return request.model_name
    if request.repository_name and known(request.repository_name):
        return request.repository_name
    if request.repository_name:
        name = request.repository_name
        raise ModelNotFound(f"Model '{name}' not found", model=name)
    raise InvalidRequest("Expected a model name, got none", where="$.model_name")


# Metadata keys and values grpclib can send: lowercase token keys, printable ASCII values.
_KEY = re.compile(r"[0-9a-z_.\-]+")
_VALUE = re.compile(r"[ -~]+")


def response_metadata(response: InferenceResponse) -> dict[str, str]:
    """Take the headers a model set in ``parameters.headers`` out of the response (MLServer's
    convention), keeping those that are valid as gRPC metadata."""
    params = response.parameters
    if not params or not isinstance(params.get("headers"), dict):
        return {}
    headers = params.pop("headers")
    response.parameters = params or None
    pairs = ((str(k).lower(), str(v)) for k, v in headers.items())
    return {
        k: v
        for k, v in pairs
        if _KEY.fullmatch(k)
        and _VALUE.fullmatch(v)
        and not k.startswith("grpc-")
        and not k.endswith("-bin")
        and k not in ("te", "content-type", "user-agent")
    }


# -- statistics ---------------------------------------------------------------------------------


def _duration(value: StatisticDuration) -> pb.StatisticDuration:
    return pb.StatisticDuration(count=value.count, ns=value.ns)


def statistics_to_proto(report: ModelStatisticsResponse) -> pb.ModelStatisticsResponse:
    """The ``ModelStatisticsResponse`` of the core's report (the Structs mirror the proto)."""
    return pb.ModelStatisticsResponse(
        model_stats=[
            pb.ModelStatistics(
                name=m.name,
                version=m.version,
                last_inference=m.last_inference,
                inference_count=m.inference_count,
                execution_count=m.execution_count,
                inference_stats=pb.InferStatistics(
                    **{
                        field: _duration(getattr(m.inference_stats, field))
                        for field in m.inference_stats.__struct_fields__
                    }
                ),
                batch_stats=[
                    pb.InferBatchStatistics(
                        batch_size=b.batch_size,
                        compute_input=_duration(b.compute_input),
                        compute_infer=_duration(b.compute_infer),
                        compute_output=_duration(b.compute_output),
                    )
                    for b in m.batch_stats
                ],
                memory_usage=[
                    pb.MemoryUsage(
                        type=str(u.get("type", "")),
                        id=int(u.get("id", 0)),
                        byte_size=int(u.get("byte_size", 0)),
                    )
                    for u in m.memory_usage
                ],
            )
            for m in report.model_stats
        ]
    )

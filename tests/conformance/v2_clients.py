"""One small V2 client interface over REST and gRPC, so the same tests run on both.

``RestClient`` talks to ``create_rest_app`` through ``httpx.ASGITransport`` (JSON, or the
binary tensor extension); ``GrpcClient`` talks to ``create_grpc_service`` through grpclib's
in-memory ``ChannelFor`` (typed contents, or raw). Both return the core's Structs and raise
:class:`V2Error` with the transport's status, the error ``code`` and the message.
"""

from __future__ import annotations

from typing import Any, NamedTuple, Protocol

import httpx
import msgspec
import numpy as np
import proto_convert
from grpclib.client import Channel
from grpclib.const import Cardinality
from grpclib.exceptions import GRPCError

from inferkit import codecs
from inferkit.transports.grpc import CODE_KEY
from inferkit.transports.grpc._generated import inference as pb
from inferkit.types import (
    InferenceRequest,
    InferenceResponse,
    MetadataModelResponse,
    MetadataServerResponse,
    RepositoryIndexResponseItem,
    encode_json,
)


class V2Error(Exception):
    """An error answer: the transport's status (404, "NOT_FOUND"), the code and the message."""

    def __init__(self, status: int | str, code: str | None, message: str) -> None:
        super().__init__(f"{status} {code}: {message}")
        self.status, self.code, self.message = status, code, message


class Reply(NamedTuple):
    """An inference response and the headers (REST) or trailing metadata (gRPC) it came with."""

    response: InferenceResponse
    headers: dict[str, str]


class V2Client(Protocol):
    """What the conformance tests ask of a transport."""

    transport: str

    async def live(self) -> bool: ...
    async def ready(self) -> bool: ...
    async def server_metadata(self) -> MetadataServerResponse: ...
    async def model_ready(self, name: str, version: str | None = None) -> bool: ...
    async def model_metadata(
        self, name: str, version: str | None = None
    ) -> MetadataModelResponse: ...
    async def infer(
        self,
        name: str,
        request: InferenceRequest,
        version: str | None = None,
        *,
        binary: bool = False,
        tamper: dict[str, Any] | None = None,
        headers: dict[str, str] | None = None,
    ) -> Reply: ...
    async def index(self, ready: bool | None = None) -> list[RepositoryIndexResponseItem]: ...
    async def load(self, name: str) -> None: ...
    async def unload(self, name: str) -> None: ...


def as_array(output: Any) -> np.ndarray[Any, Any]:
    """An output's data as an array of its datatype and shape, whatever form it came in."""
    return codecs.decode_tensor(output, "$")


# -- REST ---------------------------------------------------------------------------------------


class RestClient:
    """V2 over REST; ``binary`` uses the binary tensor extension both ways."""

    transport = "rest"

    def __init__(self, http: httpx.AsyncClient) -> None:
        self.http = http

    async def _call(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        response = await self.http.request(method, path, **kwargs)
        if response.status_code >= 400 and response.content:
            body = response.json()
            raise V2Error(response.status_code, body["code"], body["error"])
        return response

    async def _probe(self, path: str) -> bool:
        return (await self._call("GET", path)).status_code == 200

    async def live(self) -> bool:
        return await self._probe("/v2/health/live")

    async def ready(self) -> bool:
        return await self._probe("/v2/health/ready")

    async def server_metadata(self) -> MetadataServerResponse:
        response = await self._call("GET", "/v2")
        return msgspec.json.decode(response.content, type=MetadataServerResponse)

    async def model_ready(self, name: str, version: str | None = None) -> bool:
        return await self._probe(f"{_model_path(name, version)}/ready")

    async def model_metadata(self, name: str, version: str | None = None) -> MetadataModelResponse:
        response = await self._call("GET", _model_path(name, version))
        return msgspec.json.decode(response.content, type=MetadataModelResponse)

    async def infer(
        self,
        name: str,
        request: InferenceRequest,
        version: str | None = None,
        *,
        binary: bool = False,
        tamper: dict[str, Any] | None = None,
        headers: dict[str, str] | None = None,
    ) -> Reply:
        body = msgspec.json.decode(encode_json(request))
        chunks = []
        if binary:
            body["parameters"] = {**body.get("parameters", {}), "binary_data_output": True}
            for tensor, given in zip(body["inputs"], request.inputs, strict=True):
                raw = _raw(given)
                tensor.pop("data")
                tensor["parameters"] = {
                    **tensor.get("parameters", {}),
                    "binary_data_size": len(raw),
                }
                chunks.append(raw)
        body["inputs"][0].update(tamper or {})
        header = msgspec.json.encode(body)
        sent = dict(headers or {})
        if binary:
            sent["Inference-Header-Content-Length"] = str(len(header))
        response = await self._call(
            "POST",
            f"{_model_path(name, version)}/infer",
            content=b"".join([header, *chunks]),
            headers=sent,
        )
        return Reply(_infer_response(response), dict(response.headers))

    async def index(self, ready: bool | None = None) -> list[RepositoryIndexResponseItem]:
        body = {} if ready is None else {"ready": ready}
        response = await self._call("POST", "/v2/repository/index", json=body)
        return msgspec.json.decode(response.content, type=list[RepositoryIndexResponseItem])

    async def load(self, name: str) -> None:
        await self._call("POST", f"/v2/repository/models/{name}/load")

    async def unload(self, name: str) -> None:
        await self._call("POST", f"/v2/repository/models/{name}/unload")


def _model_path(name: str, version: str | None) -> str:
    return f"/v2/models/{name}" + (f"/versions/{version}" if version else "")


def _raw(tensor: Any) -> bytes:
    if tensor.datatype == "BYTES":
        return b"".join(
            len(item).to_bytes(4, "little") + item for item in np.asarray(tensor.data).reshape(-1)
        )
    return codecs.encode_raw(np.asarray(tensor.data, dtype=codecs.to_dtype(tensor.datatype)))


def _infer_response(response: httpx.Response) -> InferenceResponse:
    length = response.headers.get("inference-header-content-length")
    if length is None:
        return msgspec.json.decode(response.content, type=InferenceResponse)
    result = msgspec.json.decode(response.content[: int(length)], type=InferenceResponse)
    offset = int(length)
    for output in result.outputs:
        size = (output.parameters or {}).pop("binary_data_size")
        output.parameters = output.parameters or None
        output.data = response.content[offset : offset + size]
        offset += size
    return result


# -- gRPC ---------------------------------------------------------------------------------------

_SERVICE = "/inference.GRPCInferenceService"


class GrpcClient:
    """V2 over gRPC; ``binary`` sends ``raw_input_contents`` (and so gets raw outputs)."""

    transport = "grpc"

    def __init__(self, channel: Channel) -> None:
        self.channel = channel

    async def _call(
        self,
        method: str,
        message: Any,
        reply_type: type[Any],
        headers: dict[str, str] | None = None,
    ) -> tuple[Any, dict[str, str]]:
        async with self.channel.request(
            f"{_SERVICE}/{method}",
            Cardinality.UNARY_UNARY,
            type(message),
            reply_type,
            metadata=headers,
        ) as stream:
            await stream.send_message(message, end=True)
            try:
                reply = await stream.recv_message()
                await stream.recv_trailing_metadata()
            except GRPCError as exc:
                code = _trailers(stream.trailing_metadata).get(CODE_KEY)
                raise V2Error(exc.status.name, code, exc.message or "") from None
            return reply, _trailers(stream.trailing_metadata)

    async def live(self) -> bool:
        reply, _ = await self._call("ServerLive", pb.ServerLiveRequest(), pb.ServerLiveResponse)
        return bool(reply.live)

    async def ready(self) -> bool:
        reply, _ = await self._call("ServerReady", pb.ServerReadyRequest(), pb.ServerReadyResponse)
        return bool(reply.ready)

    async def server_metadata(self) -> MetadataServerResponse:
        reply, _ = await self._call(
            "ServerMetadata", pb.ServerMetadataRequest(), pb.ServerMetadataResponse
        )
        return proto_convert.server_metadata_from_proto(reply)

    async def model_ready(self, name: str, version: str | None = None) -> bool:
        message = pb.ModelReadyRequest(name=name, version=version or "")
        reply, _ = await self._call("ModelReady", message, pb.ModelReadyResponse)
        return bool(reply.ready)

    async def model_metadata(self, name: str, version: str | None = None) -> MetadataModelResponse:
        message = pb.ModelMetadataRequest(name=name, version=version or "")
        reply, _ = await self._call("ModelMetadata", message, pb.ModelMetadataResponse)
        return proto_convert.model_metadata_from_proto(reply)

    async def infer(
        self,
        name: str,
        request: InferenceRequest,
        version: str | None = None,
        *,
        binary: bool = False,
        tamper: dict[str, Any] | None = None,
        headers: dict[str, str] | None = None,
    ) -> Reply:
        message = proto_convert.request_to_proto(request, name, version or "", raw=binary)
        for field, value in (tamper or {}).items():
            setattr(message.inputs[0], field, value)
        reply, trailers = await self._call("ModelInfer", message, pb.ModelInferResponse, headers)
        return Reply(proto_convert.response_from_proto(reply), trailers)

    async def index(self, ready: bool | None = None) -> list[RepositoryIndexResponseItem]:
        message = pb.RepositoryIndexRequest(ready=bool(ready))
        reply, _ = await self._call("RepositoryIndex", message, pb.RepositoryIndexResponse)
        items = proto_convert.index_from_proto(reply)
        if ready is False:  # proto3 cannot ask for "not ready"; filter as REST does
            items = [item for item in items if item.state != "READY"]
        return items

    async def load(self, name: str) -> None:
        message = pb.RepositoryModelLoadRequest(model_name=name)
        await self._call("RepositoryModelLoad", message, pb.RepositoryModelLoadResponse)

    async def unload(self, name: str) -> None:
        message = pb.RepositoryModelUnloadRequest(model_name=name)
        await self._call("RepositoryModelUnload", message, pb.RepositoryModelUnloadResponse)


def _trailers(metadata: Any) -> dict[str, str]:
    return {str(k): str(v) for k, v in (metadata or {}).items()}

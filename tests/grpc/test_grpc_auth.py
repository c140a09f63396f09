"""Tokens and the read-only repository on gRPC: grpclib on loopback, in process."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any, NamedTuple

import pytest
from grpclib.client import Channel
from grpclib.const import Cardinality, Status
from grpclib.exceptions import GRPCError
from grpclib.health.v1.health_grpc import HealthStub
from grpclib.health.v1.health_pb2 import HealthCheckRequest, HealthCheckResponse
from grpclib.server import Server as GrpcServer
from harness import free_port
from proto_convert import request_to_proto
from toymodels import SumModel, sum_model

from inferkit import (
    InferenceRequest,
    InferenceResponse,
    ModelSettings,
    RequestInput,
    Server,
    Settings,
)
from inferkit.codecs import StringCodec
from inferkit.transports.grpc import CODE_KEY, create_grpc_service, protect
from inferkit.transports.grpc._generated import inference as pb
from inferkit.transports.grpc._generated.inference import model_repository as mr
from inferkit.transports.grpc.auth import action_of

DATA, ADMIN = "data-token-0123456789", "admin-token-0123456789"
V2 = "/inference.GRPCInferenceService"
MR = "/inference.model_repository.ModelRepositoryService"
SUM = InferenceRequest(
    inputs=[RequestInput(name="x", shape=[1, 3], datatype="FP32", data=[1.0, 2.0, 3.0])]
)


class Headers(SumModel):
    """Answers with the names of the request headers the model was shown."""

    async def predict(self, payload: InferenceRequest) -> InferenceResponse:
        headers = (payload.parameters or {}).get("headers", {})
        names = StringCodec.encode_output("headers", sorted(headers))
        return InferenceResponse(model_name=self.name, outputs=[names])


class Call(NamedTuple):
    reply: Any
    status: Status
    code: str | None


@asynccontextmanager
async def serving(**settings: Any) -> AsyncIterator[Channel]:
    server = Server([sum_model(), Headers(ModelSettings(name="headers"))], settings=Settings())
    await server.start()
    grpc = GrpcServer(create_grpc_service(server))
    protect(grpc, Settings(**settings))
    port = free_port()
    await grpc.start("127.0.0.1", port)
    channel = Channel("127.0.0.1", port)
    try:
        yield channel
    finally:
        channel.close()
        grpc.close()
        await grpc.wait_closed()
        await server.stop()


async def call(
    channel: Channel, path: str, message: Any, reply_type: type[Any], **metadata: str
) -> Call:
    async with channel.request(
        path, Cardinality.UNARY_UNARY, type(message), reply_type, metadata=metadata or None
    ) as stream:
        await stream.send_message(message, end=True)
        try:
            reply = await stream.recv_message()
            await stream.recv_trailing_metadata()
        except GRPCError as exc:
            return Call(None, exc.status, dict(stream.trailing_metadata or {}).get(CODE_KEY))
        return Call(reply, Status.OK, None)


def infer(channel: Channel, model: str = "sum", **metadata: str) -> Any:
    message = request_to_proto(SUM, "sum")
    message.model_name = model
    return call(channel, f"{V2}/ModelInfer", message, pb.ModelInferResponse, **metadata)


@pytest.mark.parametrize(
    ("method", "action"),
    [
        (f"{V2}/ModelInfer", "data"),
        (f"{V2}/ModelStreamInfer", "data"),
        (f"{V2}/ServerLive", "data"),
        (f"{V2}/RepositoryIndex", "data"),
        (f"{V2}/RepositoryModelLoad", "admin"),
        (f"{V2}/RepositoryModelUnload", "admin"),
        (f"{MR}/RepositoryModelLoad", "admin"),
        (f"{MR}/RepositoryModelUnload", "admin"),
        (f"{MR}/RepositoryIndex", "data"),
        ("/grpc.health.v1.Health/Check", "open"),
        ("/my.own.Service/RepositoryModelLoad", "open"),  # not inferkit's: left alone
    ],
)
def test_actions(method: str, action: str) -> None:
    assert action_of(method) == action


async def test_tokens() -> None:
    async with serving(auth_tokens=[DATA], admin_tokens=[ADMIN]) as channel:
        assert await infer(channel) == (None, Status.UNAUTHENTICATED, "UNAUTHENTICATED")
        wrong = await infer(channel, authorization="Bearer nope")
        assert wrong == (None, Status.UNAUTHENTICATED, "UNAUTHENTICATED")
        for metadata in ({"authorization": f"Bearer {DATA}"}, {"x-api-key": DATA}):
            ok = await infer(channel, **metadata)
            assert ok.status is Status.OK and ok.reply.model_name == "sum"
        live = await call(
            channel, f"{V2}/ServerLive", pb.ServerLiveRequest(), pb.ServerLiveResponse
        )
        assert live.status is Status.UNAUTHENTICATED
        # Health checking stays open: probes send no token.
        check = await HealthStub(channel).Check(HealthCheckRequest(service=""))
        assert check.status == HealthCheckResponse.SERVING


@pytest.mark.parametrize(
    ("path", "message", "reply"),
    [
        (
            f"{V2}/RepositoryModelUnload",
            pb.RepositoryModelUnloadRequest(model_name="sum"),
            pb.RepositoryModelUnloadResponse,
        ),
        (
            f"{MR}/RepositoryModelUnload",
            mr.RepositoryModelUnloadRequest(model_name="sum"),
            mr.RepositoryModelUnloadResponse,
        ),
    ],
)
async def test_unload_needs_an_admin_token(path: str, message: Any, reply: Any) -> None:
    async with serving(auth_tokens=[DATA], admin_tokens=[ADMIN]) as channel:
        data = {"authorization": f"Bearer {DATA}"}
        assert (await call(channel, path, message, reply)).status is Status.UNAUTHENTICATED
        refused = await call(channel, path, message, reply, **data)
        assert refused == (None, Status.PERMISSION_DENIED, "PERMISSION_DENIED")
        assert (await infer(channel, **data)).status is Status.OK  # still loaded
        done = await call(channel, path, message, reply, authorization=f"Bearer {ADMIN}")
        assert done.status is Status.OK
        assert (await infer(channel, **data)).status is Status.UNAVAILABLE  # unloaded


async def test_read_only_repository() -> None:
    async with serving(repository_read_only=True) as channel:
        for service, module in ((V2, pb), (MR, mr)):
            for action in ("Load", "Unload"):
                path = f"{service}/RepositoryModel{action}"
                message = getattr(module, f"RepositoryModel{action}Request")
                reply = getattr(module, f"RepositoryModel{action}Response")
                refused = await call(channel, path, message(model_name="sum"), reply)
                assert refused == (None, Status.PERMISSION_DENIED, "REPOSITORY_READ_ONLY"), path
        assert (await infer(channel)).status is Status.OK  # no token needed, still loaded


async def test_the_model_never_sees_the_token() -> None:
    async with serving(auth_tokens=[DATA]) as channel:
        metadata = {"authorization": f"Bearer {DATA}", "x-api-key": DATA, "x-trace": "kept"}
        reply = (await infer(channel, "headers", **metadata)).reply
        seen = [name.decode() for name in reply.outputs[0].contents.bytes_contents]
        assert "x-trace" in seen
        assert "authorization" not in seen and "x-api-key" not in seen


async def test_without_tokens_nothing_is_refused() -> None:
    async with serving() as channel:
        assert (await infer(channel)).status is Status.OK
        message = pb.RepositoryModelUnloadRequest(model_name="sum")
        done = await call(
            channel, f"{V2}/RepositoryModelUnload", message, pb.RepositoryModelUnloadResponse
        )
        assert done.status is Status.OK


async def test_streams_need_a_token_too() -> None:
    async with serving(auth_tokens=[DATA]) as channel:
        message = request_to_proto(SUM, "sum")
        with pytest.raises(GRPCError) as raised:
            async with channel.request(
                f"{V2}/ModelStreamInfer",
                Cardinality.STREAM_STREAM,
                pb.ModelInferRequest,
                pb.ModelStreamInferResponse,
            ) as stream:
                await stream.send_message(message)
                await stream.recv_message()
        assert raised.value.status is Status.UNAUTHENTICATED
        async with channel.request(
            f"{V2}/ModelStreamInfer",
            Cardinality.STREAM_STREAM,
            pb.ModelInferRequest,
            pb.ModelStreamInferResponse,
            metadata={"authorization": f"Bearer {DATA}"},
        ) as stream:
            await stream.send_message(message, end=True)
            reply = await stream.recv_message()
            assert reply is not None and reply.infer_response.model_name == "sum"

"""The bare gRPC server the results are compared with: ``python bare_grpc.py --port P``.

grpclib with inferkit's betterproto2-generated V2 service base, run the way ``inferkit.runner``
runs its gRPC listener (uvloop when installed, 127.0.0.1): ``ModelInfer`` receives and parses
the request (grpclib + betterproto2, as every service on this stack must) and returns a fixed
``ModelInferResponse`` built once at start-up, holding the right answer for the request's model
(from ``--replies``, one per payload key, so the harness's answer check passes). Raw inputs get
the answer as ``raw_output_contents``, as in Triton, MLServer and inferkit. No conversion, no
model, nothing else: the ceiling of our gRPC stack. An unknown model is NOT_FOUND.

Importing the generated messages imports ``inferkit.transports.grpc`` (their parent package),
which this server's idle RSS includes.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np
from grpclib.const import Status
from grpclib.exceptions import GRPCError
from grpclib.server import Server
from grpclib.utils import graceful_exit

from inferkit.transports.grpc._generated import inference as pb

__all__ = ["FixedInference", "main", "replies_from_json"]

_RAW_DTYPES = {"FP32": "<f4", "INT64": "<i8"}
_TYPED_FIELDS = {"FP32": "fp32_contents", "INT64": "int64_contents"}


def _reply(model: str, output: Mapping[str, Any], raw: bool) -> pb.ModelInferResponse:
    datatype = output["datatype"]
    tensor = pb.ModelInferResponseInferOutputTensor(
        name=output["name"], datatype=datatype, shape=list(output["shape"])
    )
    if raw:
        data = np.asarray(output["data"], dtype=_RAW_DTYPES[datatype]).tobytes()
        return pb.ModelInferResponse(model_name=model, outputs=[tensor], raw_output_contents=[data])
    tensor.contents = pb.InferTensorContents(**{_TYPED_FIELDS[datatype]: list(output["data"])})
    return pb.ModelInferResponse(model_name=model, outputs=[tensor])


def replies_from_json(
    replies: Mapping[str, Any],
) -> dict[tuple[str, bool], pb.ModelInferResponse]:
    """(model name, raw) -> the fixed reply, from ``lineup.fixed_replies``' JSON."""
    return {
        (name, raw): _reply(name, reply["outputs"][0], raw)
        for name, reply in replies.items()
        for raw in (False, True)
    }


class FixedInference(pb.GrpcInferenceServiceBase):
    """``ModelInfer`` answers a fixed reply; the health RPCs say yes; the rest UNIMPLEMENTED."""

    def __init__(self, replies: Mapping[tuple[str, bool], pb.ModelInferResponse]) -> None:
        self.replies = replies

    async def server_live(self, message: pb.ServerLiveRequest) -> pb.ServerLiveResponse:
        return pb.ServerLiveResponse(live=True)

    async def server_ready(self, message: pb.ServerReadyRequest) -> pb.ServerReadyResponse:
        return pb.ServerReadyResponse(ready=True)

    async def model_infer(self, message: pb.ModelInferRequest) -> pb.ModelInferResponse:
        reply = self.replies.get((message.model_name, bool(message.raw_input_contents)))
        if reply is None:
            raise GRPCError(Status.NOT_FOUND, f"Model '{message.model_name}' not found")
        return reply


async def serve(port: int, replies: Mapping[tuple[str, bool], pb.ModelInferResponse]) -> None:
    """Serve on 127.0.0.1:``port`` until SIGINT or SIGTERM."""
    server = Server([FixedInference(replies)])
    with graceful_exit([server]):
        await server.start("127.0.0.1", port)
        await server.wait_closed()


def _loop_factory() -> Callable[[], asyncio.AbstractEventLoop] | None:
    try:
        import uvloop
    except ImportError:
        return None
    factory: Callable[[], asyncio.AbstractEventLoop] = uvloop.new_event_loop
    return factory


def main(argv: list[str] | None = None) -> None:
    """Parse the arguments and serve."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--replies", required=True, help="JSON: model name -> V2 reply")
    args = parser.parse_args(argv)
    with open(args.replies, encoding="utf-8") as file:
        replies = replies_from_json(json.load(file))
    coro = serve(args.port, replies)
    factory = _loop_factory()
    if factory is not None and sys.version_info >= (3, 11):
        with asyncio.Runner(loop_factory=factory) as runner:
            runner.run(coro)
    else:
        asyncio.run(coro)


if __name__ == "__main__":
    main()

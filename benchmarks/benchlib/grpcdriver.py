"""The gRPC driver: ``ModelInfer`` checked with grpcio, then driven by h2load (or grpcio).

``verify`` sends the prepared ``ModelInferRequest`` once with grpcio (the C-core client that
tritonclient uses; bytes in, bytes out, so it sends exactly the bytes the load generator will)
and checks the whole answer with Triton's generated messages (``grpcwire``). ``load`` runs
h2load (or the grpcio fallback) for the duration; after an h2load run, a sample of requests is
sent again with grpcio and each answer checked whole (status and values): h2load cannot read
``grpc-status``, so a failure it might have missed shows up there and counts in ``bad``.

Imported only when grpcio and tritonclient are installed (``drivers.drivers``).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from pathlib import Path

import grpc  # type: ignore[import-untyped]

from .answers import AnswerError
from .grpcloaders import GrpcTarget, run_grpc_load
from .grpcwire import MODEL_INFER, check_grpc_answer, frame, infer_request
from .loaders import LoadResult
from .scenarios import Request, Scenario
from .servers import RunningServer

__all__ = ["SAMPLE_SIZE", "GrpcDriver", "call", "sample_failures"]

#: Requests re-checked with grpcio after each h2load run, sent at once.
SAMPLE_SIZE = 16
#: Seconds the one checked call may take (the large tensor, on a slow server).
_VERIFY_TIMEOUT_S = 60.0


def call(port: int, message: bytes, timeout: float, host: str = "127.0.0.1") -> bytes:
    """One ``ModelInfer`` call of the serialized ``message``; the serialized answer.

    A status other than OK raises :class:`AnswerError` (``gRPC NOT_FOUND: ...``).
    """
    with grpc.insecure_channel(f"{host}:{port}") as channel:
        try:
            answer: bytes = channel.unary_unary(MODEL_INFER)(message, timeout=timeout)
        except grpc.RpcError as exc:
            raise AnswerError(f"gRPC {exc.code().name}: {exc.details()}") from None
    return answer


def sample_failures(
    port: int, message: bytes, marker: bytes, count: int, timeout: float, host: str = "127.0.0.1"
) -> int:
    """How many of ``count`` concurrent calls failed or answered without ``marker``."""
    failures = 0
    with grpc.insecure_channel(f"{host}:{port}") as channel:
        method = channel.unary_unary(MODEL_INFER)
        futures = [method.future(message, timeout=timeout) for _ in range(count)]
        for future in futures:
            try:
                answer = future.result()
            except grpc.RpcError:
                failures += 1
                continue
            failures += marker not in answer
    return failures


class GrpcDriver:
    """V2 gRPC ``ModelInfer``, typed contents or raw (as the payload says)."""

    def __init__(self, work_dir: Path, use_h2load: bool, loader: str) -> None:
        self.work_dir = work_dir
        self.use_h2load = use_h2load
        self.loader = loader
        #: (model name, payload key) -> the serialized request and its framed body file.
        self._bodies: dict[tuple[str, str], tuple[bytes, Path]] = {}
        #: (server, payload key) -> body bytes of one right answer (prefix included).
        self._answer_sizes: dict[tuple[str, str], int] = {}

    def _prepared(self, server: RunningServer, request: Request) -> tuple[bytes, Path]:
        model = server.spec.model_for(request.payload)
        key = (model, request.payload.key)
        if key not in self._bodies:
            message = infer_request(model, request, raw=request.payload.grpc_raw)
            path = self.work_dir / f"body-{request.payload.key}-{model}.grpc"
            path.write_bytes(frame(message))
            self._bodies[key] = (message, path)
        return self._bodies[key]

    def verify(self, server: RunningServer, request: Request, expected: Sequence[float]) -> bytes:
        """One grpcio call; the whole answer is parsed and compared; its marker."""
        message, _ = self._prepared(server, request)
        answer = call(server.spec.ports.grpc, message, _VERIFY_TIMEOUT_S)
        marker = check_grpc_answer(answer, expected, request.rtol)
        self._answer_sizes[(server.spec.name, request.payload.key)] = len(frame(answer))
        return marker

    def load(
        self,
        server: RunningServer,
        request: Request,
        scenario: Scenario,
        marker: bytes,
        duration_s: int,
        cpu: int | None,
    ) -> LoadResult:
        """h2load (or the grpcio fallback), then the sample check after an h2load run."""
        message, body_file = self._prepared(server, request)
        target = GrpcTarget(
            host="127.0.0.1",
            port=server.spec.ports.grpc,
            path=MODEL_INFER,
            body_file=body_file,
            marker=marker,
            answer_size=self._answer_sizes[(server.spec.name, request.payload.key)],
            concurrency=scenario.concurrency,
            duration_s=duration_s,
            timeout_s=scenario.timeout_s,
        )
        result = run_grpc_load(target, self.work_dir, cpu, self.use_h2load)
        if not self.use_h2load:
            return result  # the fallback checked every answer
        port, timeout = server.spec.ports.grpc, scenario.timeout_s
        failed = sample_failures(port, message, marker, SAMPLE_SIZE, timeout)
        return dataclasses.replace(result, bad=result.bad + failed)

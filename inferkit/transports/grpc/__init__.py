"""The gRPC transport: the V2 ``inference.GRPCInferenceService`` over grpclib.

``create_grpc_service(server)`` returns the services to put in a ``grpclib.server.Server``;
``grpc_service`` is the runner's listener. ``convert`` turns the generated messages
(``_generated/``, built from ``proto/`` by ``scripts/gen_proto.py``; never edited by hand) into
the core's Structs and back; ``_wire`` reads and writes ModelInfer's own messages straight
from and to protobuf bytes, for speed; ``status`` holds the one error -> gRPC status table.
"""

from __future__ import annotations

from .auth import protect
from .health import Readiness, create_health
from .listener import grpc_service, tls_context
from .service import InferenceService, Inflight, RepositoryService, create_grpc_service
from .status import CODE_KEY, STATUS, status_for

__all__ = [
    "CODE_KEY",
    "STATUS",
    "InferenceService",
    "Inflight",
    "Readiness",
    "RepositoryService",
    "create_grpc_service",
    "create_health",
    "grpc_service",
    "protect",
    "status_for",
    "tls_context",
]

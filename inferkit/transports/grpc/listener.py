"""The gRPC listener of the runner: grpclib on ``host:grpc_port``, with TLS when configured.

:func:`grpc_service` is a runner ``Service``: it serves until ``stop`` is set, then waits for
the requests in flight (up to ``graceful_shutdown_timeout``; the core already refuses new
inferences with UNAVAILABLE and health says NOT_SERVING) and closes. grpclib's ``close()``
cancels whatever is still running, so draining has to come first.
"""

from __future__ import annotations

import asyncio
import logging
import ssl

from grpclib.server import Server as GrpcServer

from inferkit.server import Server
from inferkit.settings import Settings
from inferkit.tls import server_context

from .auth import protect
from .service import InferenceService, create_grpc_service

__all__ = ["grpc_service", "tls_context"]

log = logging.getLogger("inferkit.grpc")


async def grpc_service(server: Server, settings: Settings, stop: asyncio.Event) -> None:
    """Serve ``server`` over gRPC until ``stop`` is set, then drain and close."""
    services = create_grpc_service(server, settings)
    context = tls_context(settings)
    grpc = GrpcServer(services)
    protect(grpc, settings)  # tokens and the read-only repository, when configured
    await grpc.start(settings.host, settings.grpc_port, ssl=context)
    tls = " (TLS)" if context is not None else ""
    log.info("gRPC server running on %s:%d%s", settings.host, settings.grpc_port, tls)
    try:
        await stop.wait()
        inflight = next(s.inflight for s in services if isinstance(s, InferenceService))
        try:
            await asyncio.wait_for(inflight.idle(), settings.graceful_shutdown_timeout)
        except asyncio.TimeoutError:
            log.warning("gRPC: %d requests still running after the grace period", inflight.count)
    finally:
        grpc.close()
        await grpc.wait_closed()


def tls_context(settings: Settings) -> ssl.SSLContext | None:
    """The server TLS context of the settings, or ``None`` when no certificate is configured.

    ``grpc_tls_certificate`` and ``grpc_tls_key`` (PEM files) go together; with
    ``grpc_tls_client_ca`` too, clients must present a certificate signed by it (mutual TLS).
    """
    files = (settings.grpc_tls_certificate, settings.grpc_tls_key, settings.grpc_tls_client_ca)
    # gRPC clients insist on negotiating HTTP/2 through ALPN.
    return server_context("grpc", "gRPC", files, alpn=["h2"])

"""Running a ``Server``: hypercorn for REST (and, as they join, gRPC and metrics) in one loop.

This is the only module that binds ports and handles signals. ``serve_async`` loads the models,
starts every listener, and on SIGTERM/SIGINT (or cancellation) stops accepting, lets in-flight
requests finish within ``graceful_shutdown_timeout``, unloads the models and returns.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import importlib.util
import logging
import signal
import socket
import ssl
import sys
from collections.abc import Callable, Coroutine
from typing import TYPE_CHECKING, Any

from .errors import InferkitError
from .server import Server
from .settings import Settings

if TYPE_CHECKING:
    from .transports.tracing import InferenceTracer

__all__ = ["PortInUse", "http_app", "http_tls_context", "serve", "serve_async"]

log = logging.getLogger("inferkit.runner")

#: A listener of the runner: runs until the event is set, then drains and returns.
Service = Callable[[Server, Settings, asyncio.Event], Coroutine[None, None, None]]


class PortInUse(InferkitError):
    """A port the settings ask for cannot be bound."""

    code = "PORT_IN_USE"


def serve(server: Server, settings: Settings | None = None) -> None:
    """Serve until SIGINT/SIGTERM, in a new event loop (uvloop when it is installed)."""
    coro = serve_async(server, settings)
    loop_factory = _uvloop_factory()
    if loop_factory is not None and sys.version_info >= (3, 11):
        with asyncio.Runner(loop_factory=loop_factory) as runner:
            runner.run(coro)
    else:
        asyncio.run(coro)


def _uvloop_factory() -> Callable[[], asyncio.AbstractEventLoop] | None:
    try:
        import uvloop
    except ImportError:
        return None
    factory: Callable[[], asyncio.AbstractEventLoop] = uvloop.new_event_loop
    return factory


async def serve_async(server: Server, settings: Settings | None = None) -> None:
    """Serve in the running loop until signalled or cancelled, then drain and unload."""
    settings = settings if settings is not None else server.settings
    for host, port, what in _ports(settings):
        _check_port(host, port, what)
    _check_security(settings)  # a bad token file or certificate fails before models load
    tracer = _tracer(settings)
    if tracer is not None:
        server.add_hook(tracer)  # every transport's calls are traced by the pipeline
    services = _services(settings)
    stop = asyncio.Event()
    restore = _install_signal_handlers(stop)
    try:
        from .transports.rest import reserve_rest_paths

        # The REST app is made after the models load: refuse V2 paths to custom handlers now.
        reserve_rest_paths(server, settings)
        await server.start()
        await _log_models(server)
        # What is loaded by now (modules, models) lives as long as the server: move it out of
        # the collector's generations, so that full collections, which would otherwise walk
        # all of it, stay short. They were a visible share of small requests' CPU and of their
        # p99. Objects made later are collected as before.
        gc.collect()
        gc.freeze()
        tasks = [asyncio.create_task(service(server, settings, stop)) for service in services]
        waiter = asyncio.create_task(stop.wait())
        try:
            done, _ = await asyncio.wait([*tasks, waiter], return_when=asyncio.FIRST_COMPLETED)
            for task in done - {waiter}:
                task.result()  # a listener that died: surface its error
        finally:
            log.info("Shutting down: draining in-flight requests")
            server.begin_shutdown()
            stop.set()
            await asyncio.gather(*tasks, return_exceptions=True)
            waiter.cancel()
    finally:
        restore()
        await server.stop()
        if tracer is not None:
            server.remove_hook(tracer)
            # Flush the spans still batched (SIGTERM included); exporting blocks, so off-loop.
            await asyncio.to_thread(tracer.shutdown)
        log.info("Stopped")


def _tracer(settings: Settings) -> InferenceTracer | None:
    if not settings.tracing_server:
        return None  # the common case imports nothing more
    from .transports.tracing import tracer_for

    return tracer_for(settings)


def _services(settings: Settings) -> list[Service]:
    services: list[Service] = [_rest_service]
    if _metrics_installed():
        from .transports.metrics import metrics_service

        services.append(metrics_service)
    if _serves_grpc(settings):
        from .transports.grpc import grpc_service

        services.append(grpc_service)
    return services


def _serves_grpc(settings: Settings) -> bool:
    # gRPC is an extra too: without grpclib and betterproto2, REST serves alone.
    installed = all(importlib.util.find_spec(m) for m in ("grpclib", "betterproto2"))
    return bool(settings.grpc_port) and installed


def _metrics_installed() -> bool:
    # The metrics extra is optional: without prometheus-client, REST (and gRPC) still serve.
    return importlib.util.find_spec("prometheus_client") is not None


def _ports(settings: Settings) -> list[tuple[str, int, str]]:
    ports = [(settings.host, settings.http_port, "HTTP")]
    if settings.metrics_endpoint and not settings.metrics_on_http_port and _metrics_installed():
        ports.append((settings.host, settings.metrics_port, "metrics"))
    if _serves_grpc(settings):
        ports.append((settings.host, settings.grpc_port, "gRPC"))
    return [p for p in ports if p[1]]


async def _rest_service(server: Server, settings: Settings, stop: asyncio.Event) -> None:
    from hypercorn.asyncio import serve as hypercorn_serve
    from hypercorn.config import Config

    config = Config()
    config.bind = [_address(settings.host, settings.http_port)]
    config.graceful_timeout = settings.graceful_shutdown_timeout
    config.root_path = settings.root_path
    config.accesslog = None
    config.errorlog = logging.getLogger("inferkit.http")
    config.keep_alive_timeout = 75  # longer than common load balancers' idle timeouts
    scheme = "http"
    if http_tls_context(settings) is not None:  # checks the files; hypercorn makes its own
        scheme = "https"
        config.certfile = settings.http_tls_certificate
        config.keyfile = settings.http_tls_key
        if settings.http_tls_client_ca:
            config.ca_certs = settings.http_tls_client_ca
            config.verify_mode = ssl.CERT_REQUIRED
    asgi = http_app(server, settings)
    log.info("HTTP server running on %s://%s:%d", scheme, settings.host, settings.http_port)
    await hypercorn_serve(asgi, config, shutdown_trigger=stop.wait)


def http_tls_context(settings: Settings) -> ssl.SSLContext | None:
    """The REST server's TLS context, or ``None`` when no certificate is configured.

    ``http_tls_certificate`` and ``http_tls_key`` (PEM files) go together; with
    ``http_tls_client_ca`` too, clients must present a certificate signed by it (mutual TLS).
    Raises :class:`SettingsError` for a missing half or files that do not load.
    """
    from .tls import server_context

    files = (settings.http_tls_certificate, settings.http_tls_key, settings.http_tls_client_ca)
    return server_context("http", "HTTP", files, alpn=["h2", "http/1.1"])


def _check_security(settings: Settings) -> None:
    from .auth import AccessPolicy

    policy = AccessPolicy.from_settings(settings)
    http_tls_context(settings)
    if policy.enabled:
        log.info("Authentication on: REST and gRPC calls need a token (health probes do not)")
    if policy.read_only:
        log.info("Repository read-only: models are not loaded or unloaded through the API")


def http_app(server: Server, settings: Settings | None = None) -> Any:
    """The ASGI app ``inferkit start`` serves on its HTTP port, to mount in your own service.

    The V2 REST API (:func:`~inferkit.transports.rest.create_rest_app`), and when
    prometheus-client is installed, the REST request metrics around it and the metrics route
    on it if ``metrics_on_http_port`` is set. Load the models from the host's lifespan.
    """
    from .transports.rest import create_rest_app

    settings = settings if settings is not None else server.settings
    app = create_rest_app(server, settings)
    if not _metrics_installed():
        return app
    from .transports.metrics import create_metrics_app, instrument_rest_app

    if settings.metrics_endpoint and settings.metrics_on_http_port:
        app.routes.extend(create_metrics_app(server, settings=settings).routes)
    return instrument_rest_app(app, server)


def _address(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def _check_port(host: str, port: int, what: str) -> None:
    # Fail before loading any model, with one clear line, rather than a traceback later.
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError as exc:
            raise PortInUse(
                f"Cannot listen for {what} on {host}:{port}: {exc.strerror or exc}"
            ) from None


def _install_signal_handlers(stop: asyncio.Event) -> Callable[[], None]:
    loop = asyncio.get_running_loop()
    installed: list[int] = []
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
            loop.add_signal_handler(sig, stop.set)
            installed.append(sig)

    def restore() -> None:
        for sig in installed:
            loop.remove_signal_handler(sig)

    return restore


async def _log_models(server: Server) -> None:
    for item in await server.index():
        label = f"'{item.name}'" + (f" version '{item.version}'" if item.version else "")
        if item.state == "FAILED":
            log.error("Model %s FAILED: %s", label, item.reason)
        else:
            log.info("Model %s %s", label, item.state)

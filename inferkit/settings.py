"""Server and model settings, with MLServer's field names.

``Settings`` mirrors MLServer's ``settings.json`` and ``ModelSettings`` its ``model-settings.json``
so an MLServer model repository serves unchanged. The Structs are plain data: nothing here reads
the environment or a file on construction (MLServer's pydantic settings do, which is why its
server cannot be embedded). Loading from files and env vars is done by
:mod:`inferkit.settings_loader`, which the CLI calls with an explicit ``environ`` mapping.

Where MLServer's defaults are unsafe or slow we differ, and say so on the field:
``parallel_workers`` defaults to 0 (in-process) and errors never carry tracebacks.
"""

from __future__ import annotations

from typing import Any, Literal

import msgspec

from .types import MetadataTensor

__all__ = [
    "CORSSettings",
    "ModelParameters",
    "ModelSettings",
    "Settings",
]


class CORSSettings(msgspec.Struct, kw_only=True, omit_defaults=True):
    """CORS for the REST app (MLServer's ``cors_settings``); off unless ``allow_origins`` is set."""

    allow_origins: list[str] = msgspec.field(default_factory=list)
    allow_origin_regex: str | None = None
    allow_credentials: bool = False
    allow_methods: list[str] = msgspec.field(default_factory=lambda: ["GET"])
    allow_headers: list[str] = msgspec.field(default_factory=list)
    expose_headers: list[str] = msgspec.field(default_factory=list)
    max_age: int = 600


class Settings(msgspec.Struct, kw_only=True, omit_defaults=True):
    """Server-wide settings (``settings.json``)."""

    debug: bool = False
    #: Tell clients why a model failed to load (the index ``reason``, the load answer). Off,
    #: they get the error's class and code and the text goes to the server log only: it may
    #: hold secrets and absolute paths. For development.
    expose_load_errors: bool = False
    #: Worker processes per model. 0 (our default; MLServer's is 1) predicts in-process, which
    #: is the fast path for small models.
    parallel_workers: int = 0
    parallel_workers_timeout: float = 5.0
    #: Where models' ``environment_tarball`` files are unpacked (one folder per tarball's
    #: SHA-256, reused on reload and restart). None: ``inferkit-environments`` in the temp dir.
    environments_dir: str | None = None
    model_repository_root: str = "."
    load_models_at_startup: bool = True
    server_name: str = "inferkit"
    server_version: str = ""
    extensions: list[str] = msgspec.field(default_factory=list)
    host: str = "0.0.0.0"
    http_port: int = 8080
    #: PEM files; with both, REST is served over HTTPS (HTTP/1.1 and HTTP/2 by ALPN).
    http_tls_certificate: str | None = None
    http_tls_key: str | None = None
    #: With it, REST clients must present a certificate signed by this CA (mutual TLS).
    http_tls_client_ca: str | None = None
    root_path: str = ""
    grpc_port: int = 8081
    #: Largest gRPC request message in bytes (MLServer's name). None: ``max_request_size``.
    grpc_max_message_length: int | None = None
    grpc_tls_certificate: str | None = None
    grpc_tls_key: str | None = None
    grpc_tls_client_ca: str | None = None
    #: Bearer tokens (or ``X-API-Key`` values) that may call the REST and gRPC APIs. Set, any
    #: token here or in ``admin_tokens`` turns authentication on; health and metrics stay
    #: open (``docs/security.md``). Prefer ``auth_tokens_file`` for secrets.
    auth_tokens: list[str] = msgspec.field(default_factory=list)
    #: A file of tokens, one per line (``#`` comments and blank lines skipped), read at start.
    auth_tokens_file: str | None = None
    #: Tokens that may also load and unload models (the repository API); data tokens may not.
    admin_tokens: list[str] = msgspec.field(default_factory=list)
    admin_tokens_file: str | None = None
    #: Refuse loading and unloading models through the API (REPOSITORY_READ_ONLY), whatever
    #: the token: the models served are the ones found at start.
    repository_read_only: bool = False
    #: Largest REST request body in bytes; larger bodies get 413 before they are read whole.
    max_request_size: int = 100 * 1024 * 1024
    #: Seconds a REST request body may take to arrive once its headers have; a client still
    #: sending past it (a stalled or trickled body, "slow loris") gets 408 and the connection
    #: is closed. None: no limit. Raise it for very large bodies over slow links.
    request_body_timeout: float | None = 60.0
    cors_settings: CORSSettings | None = None
    gzip_enabled: bool = True
    metrics_endpoint: str | None = "/metrics"
    metrics_port: int = 8082
    #: Serve metrics on the HTTP port instead of ``metrics_port``.
    metrics_on_http_port: bool = False
    #: Prefix of the REST metrics exported under MLServer's names (``metrics_compat``).
    metrics_rest_server_prefix: str = "rest_server"
    #: "mlserver" also exports MLServer 1.7's metric names and labels (``model_infer_request_*``,
    #: ``rest_server_*``, ``grpc_server_*``, ``batch_request_queue``) beside inferkit's own, so
    #: dashboards built on MLServer keep working (``docs/metrics.md``).
    metrics_compat: Literal["inferkit", "mlserver"] = "inferkit"
    use_structured_logging: bool = False
    logging_settings: str | dict[str, Any] | None = None
    log_level: str = "INFO"
    #: One ``inferkit.access`` line per inference request (MLServer ties its access log to
    #: ``debug``). Turn off on hot services: formatting and writing a line costs per request.
    access_log: bool = True
    #: Seconds a model's ``predict`` may take before the request fails with INFERENCE_TIMEOUT.
    inference_timeout: float | None = None
    #: Seconds in-flight requests get to finish on SIGTERM/SIGINT before the server stops.
    graceful_shutdown_timeout: float = 30.0
    #: ``host:port`` of an OpenTelemetry collector (OTLP over gRPC, plaintext), as in MLServer.
    #: Set, the runner traces every inference request (needs the ``otel`` extra).
    tracing_server: str | None = None


class ModelParameters(msgspec.Struct, kw_only=True, omit_defaults=True):
    """``parameters`` of a model-settings file: where the artefact is, which version, extras."""

    uri: str | None = None
    version: str | None = None
    format: str | None = None
    content_type: str | None = None
    #: A conda-pack or venv tarball, unpacked once into ``environments_dir``: the model runs in
    #: worker processes with its interpreter (``docs/parallel.md``). Relative to ``folder``.
    environment_tarball: str | None = None
    #: A venv or conda environment folder whose interpreter runs the model's workers.
    environment_path: str | None = None
    extra: dict[str, Any] = msgspec.field(default_factory=dict)


class ModelSettings(msgspec.Struct, kw_only=True, omit_defaults=True):
    """One model version's settings (``model-settings.json``)."""

    name: str = ""
    #: "module.Class", imported from the model's folder first (as MLServer does).
    implementation: str = ""
    platform: str = ""
    versions: list[str] = msgspec.field(default_factory=list)
    inputs: list[MetadataTensor] = msgspec.field(default_factory=list)
    outputs: list[MetadataTensor] = msgspec.field(default_factory=list)
    parameters: ModelParameters | None = None
    #: Worker processes for this model; None inherits the server's ``parallel_workers``.
    parallel_workers: int | None = None
    #: Rows a batch may hold; with ``max_batch_time``, above 1 turns batching on
    #: (``docs/batching.md``).
    max_batch_size: int = 0
    #: Seconds a batch may wait for more requests; above 0 (with ``max_batch_size``) batches.
    max_batch_time: float = 0.0
    #: The folder the settings file was found in; relative URIs resolve against it.
    folder: str | None = None

    @property
    def version(self) -> str | None:
        """The version from ``parameters.version``, or None for an unversioned model."""
        return self.parameters.version if self.parameters else None

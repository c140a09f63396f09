"""The servers under test, as :class:`ServerSpec`s: inferkit, MLServer twice, three bare apps.

Every server listens on 127.0.0.1 only, on ports chosen free just before. inferkit and MLServer
serve REST and gRPC and get their metrics port too, so nothing falls back to a fixed default
port. The bare apps each serve one transport: two on REST, one on gRPC.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from .mlserver_env import MLServerEnv
from .repositories import write_repository
from .scenarios import Request
from .servers import Ports, ServerSpec

__all__ = [
    "CEILINGS",
    "SERVER_KEYS",
    "bare_grpc_spec",
    "bare_spec",
    "fixed_replies",
    "inferkit_spec",
    "minimal_v2_spec",
    "mlserver_spec",
]

#: Every server, in the order they are started and shown.
SERVER_KEYS = (
    "inferkit",
    "mlserver-pw0",
    "mlserver",
    "starlette-bare",
    "starlette-v2",
    "grpclib-bare",
)
#: The servers the *vs bare* ratios divide by: the first one that ran the scenario.
CEILINGS = ("starlette-bare", "grpclib-bare")

_BARE_SCRIPT = Path(__file__).with_name("bare.py")
_BARE_GRPC_SCRIPT = Path(__file__).with_name("bare_grpc.py")
_BOTH = frozenset({"rest", "grpc"})


def _settings(ports: Ports) -> dict[str, Any]:
    return {
        "host": "127.0.0.1",
        "http_port": ports.http,
        "grpc_port": ports.grpc,
        "metrics_port": ports.metrics,
    }


def inferkit_spec(work: Path, models: Sequence[str], version: str) -> ServerSpec:
    """``python -m inferkit start`` on a repository of ``models`` (artefacts in work/artifacts)."""
    ports = Ports.free()
    # The same footing as mlserver-pw0 (debug off): no per-request access log line.
    settings = {**_settings(ports), "access_log": False}
    repo = write_repository(work / "inferkit", "inferkit", models, work / "artifacts", settings)
    command = [sys.executable, "-m", "inferkit", "start", str(repo), "--host", "127.0.0.1"]
    command += ["--http-port", str(ports.http), "--grpc-port", str(ports.grpc)]
    command += ["--metrics-port", str(ports.metrics)]
    label = f"inferkit {version}, access log off"
    return ServerSpec(
        "inferkit", label, "subject", command, ports, list(models), "index", transports=_BOTH
    )


def mlserver_spec(
    work: Path,
    env: MLServerEnv,
    key: str,
    models: Sequence[str],
    expected: Mapping[str, tuple[float, ...]],
) -> ServerSpec:
    """``mlserver start``: ``mlserver-pw0`` (its fastest settings) or ``mlserver`` (defaults).

    Artefacts come from work/artifacts-mlserver, built by MLServer's own interpreter.
    """
    ports = Ports.free()
    settings = _settings(ports)
    if key == "mlserver-pw0":
        # Its fastest configuration: predict in-process, no per-request access log.
        settings.update(parallel_workers=0, debug=False)
        label = f"MLServer {env.version}, parallel_workers 0, debug off"
    else:
        label = f"MLServer {env.version}, defaults (parallel_workers 1, debug on)"
    repo = write_repository(work / key, "mlserver", models, work / "artifacts-mlserver", settings)
    command = [str(env.command), "start", str(repo)]
    return ServerSpec(
        key,
        label,
        "baseline",
        command,
        ports,
        list(models),
        "index",
        transports=_BOTH,
        expected=expected,
    )


def fixed_replies(requests: Mapping[str, Request]) -> str:
    """The fixed app's replies: for each payload key, a V2 response holding the right answer."""
    replies: dict[str, Any] = {}
    for key, request in requests.items():
        data = list(request.expected)
        datatype = "INT64" if all(isinstance(value, int) for value in data) else "FP32"
        output = {"name": "out", "shape": [len(data)], "datatype": datatype, "data": data}
        replies[key] = {"model_name": request.payload.model, "outputs": [output]}
    return json.dumps(replies)


def bare_spec(work: Path, requests: Mapping[str, Request]) -> ServerSpec:
    """Starlette+hypercorn reading the body and sending a fixed reply: the REST ceiling."""
    replies = work / "replies.json"
    replies.write_text(fixed_replies(requests))
    ports = Ports.free()
    command = [sys.executable, str(_BARE_SCRIPT), "fixed", "--port", str(ports.http)]
    command += ["--replies", str(replies)]
    label = "bare Starlette+hypercorn: reads the body, fixed reply"
    # One reply per payload: it is addressed by payload key (two payloads share `sum`).
    return ServerSpec(
        "starlette-bare",
        label,
        "ceiling",
        command,
        ports,
        list(requests),
        "health",
        by_payload=True,
    )


def bare_grpc_spec(work: Path, requests: Mapping[str, Request]) -> ServerSpec:
    """grpclib + betterproto2 parsing the request and sending a fixed reply: the gRPC ceiling."""
    replies = work / "replies-grpc.json"
    replies.write_text(fixed_replies(requests))
    ports = Ports.free()
    command = [sys.executable, str(_BARE_GRPC_SCRIPT), "--port", str(ports.grpc)]
    command += ["--replies", str(replies)]
    label = "bare grpclib+betterproto2: parses the request, fixed reply"
    return ServerSpec(
        "grpclib-bare",
        label,
        "ceiling",
        command,
        ports,
        list(requests),
        "grpc-port",
        transports=frozenset({"grpc"}),
        by_payload=True,
    )


def minimal_v2_spec() -> ServerSpec:
    """Starlette+hypercorn with a hand-written V2 ``sum`` (msgspec, numpy): the lean path."""
    ports = Ports.free()
    command = [sys.executable, str(_BARE_SCRIPT), "v2", "--port", str(ports.http)]
    label = "minimal V2 on Starlette+hypercorn: msgspec, numpy sum (sum only)"
    return ServerSpec("starlette-v2", label, "reference", command, ports, ["sum"], "health")

"""The servers under test, as :class:`ServerSpec`s: inferkit twice (its own runner, and embedded
in a Starlette service under uvicorn), MLServer twice, five bare apps.

Every server listens on 127.0.0.1 only, on ports chosen free just before. inferkit and MLServer
serve REST and gRPC and get their metrics port too, so nothing falls back to a fixed default
port. The embedded inferkit and the bare apps each serve one transport: four on REST (two on
hypercorn, two on uvicorn), one on gRPC. Besides the servers, two *floors*: the model libraries
alone, no server, in inferkit's and in MLServer's interpreter (``floor.py``).
"""

from __future__ import annotations

import importlib.util
import json
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from .mlserver_env import MLServerEnv
from .repositories import write_repository
from .scenarios import Request
from .servers import Floor, Ports, ServerSpec

__all__ = [
    "CEILINGS",
    "FLOOR",
    "MLSERVER_FLOOR",
    "OWN_CEILINGS",
    "SERVER_KEYS",
    "UVICORN_SERVERS",
    "bare_grpc_spec",
    "bare_spec",
    "embedded_spec",
    "fixed_replies",
    "floor_spec",
    "inferkit_spec",
    "minimal_v2_spec",
    "mlserver_spec",
    "uvicorn_missing",
]

#: Every server, in the order they are started and shown.
SERVER_KEYS = (
    "inferkit",
    "inferkit-uvicorn",
    "mlserver-pw0",
    "mlserver",
    "starlette-bare",
    "starlette-v2",
    "uvicorn-bare",
    "uvicorn-v2",
    "grpclib-bare",
)
#: The servers the *vs bare* ratios divide by: the first one that ran the scenario.
CEILINGS = ("starlette-bare", "grpclib-bare")
#: The servers that run under uvicorn (they need ``uvicorn[standard]``), with their roles.
UVICORN_SERVERS: Mapping[str, str] = {
    "inferkit-uvicorn": "subject",
    "uvicorn-bare": "ceiling",
    "uvicorn-v2": "reference",
}
#: The floors' keys: the model libraries alone in the harness's interpreter (inferkit's) and in
#: MLServer's venv, each loading the artefacts its own interpreter built.
FLOOR = "floor"
MLSERVER_FLOOR = "floor-mlserver"
#: Servers whose *vs bare* ratio divides by another ceiling: the uvicorn ones by uvicorn's.
OWN_CEILINGS: Mapping[str, tuple[str, ...]] = {key: ("uvicorn-bare",) for key in UVICORN_SERVERS}

_BARE_SCRIPT = Path(__file__).with_name("bare.py")
_BARE_GRPC_SCRIPT = Path(__file__).with_name("bare_grpc.py")
_EMBEDDED_SCRIPT = Path(__file__).with_name("embedded.py")
_BOTH = frozenset({"rest", "grpc"})
#: Neither MLServer 1.7.1 nor the minimal V2 app reads the binary tensor extension.
_NO_BINARY = "no binary tensor data extension"
#: What the uvicorn servers need: uvicorn with uvloop and httptools (``uvicorn[standard]``).
_UVICORN_MODULES = ("uvicorn", "uvloop", "httptools")


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
        "inferkit",
        label,
        "subject",
        command,
        ports,
        list(models),
        "index",
        transports=_BOTH,
        floor=FLOOR,
    )


def uvicorn_missing() -> str | None:
    """Why the uvicorn servers cannot run here, or None when they can."""
    missing = [name for name in _UVICORN_MODULES if importlib.util.find_spec(name) is None]
    if not missing:
        return None
    return (
        f"{', '.join(missing)} not installed: the uvicorn servers are left out"
        " (pip install 'uvicorn[standard]')"
    )


def embedded_spec(work: Path, models: Sequence[str], version: str) -> ServerSpec:
    """inferkit's REST app mounted in a Starlette service under uvicorn (``embedded.py``)."""
    ports = Ports.free()
    # The same settings as the `inferkit` server; only the HTTP port is used (REST only).
    settings = {**_settings(ports), "access_log": False}
    root = work / "inferkit-uvicorn"
    repo = write_repository(root, "inferkit", models, work / "artifacts", settings)
    command = [sys.executable, str(_EMBEDDED_SCRIPT), str(repo), "--port", str(ports.http)]
    label = (
        f"inferkit {version} embedded: mounted in a Starlette app, uvicorn (uvloop, httptools,"
        " 1 worker), access log off"
    )
    return ServerSpec(
        "inferkit-uvicorn", label, "subject", command, ports, list(models), "index", floor=FLOOR
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
        unsupported={"sum-1m-binary": f"MLServer {env.version}: {_NO_BINARY}"},
        floor=MLSERVER_FLOOR,
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


def bare_spec(work: Path, requests: Mapping[str, Request], server: str = "hypercorn") -> ServerSpec:
    """Starlette reading the body and sending a fixed reply: the REST ceiling of ``server``
    (hypercorn: ``starlette-bare``; uvicorn: ``uvicorn-bare``)."""
    replies = work / "replies.json"
    replies.write_text(fixed_replies(requests))
    ports = Ports.free()
    command = [sys.executable, str(_BARE_SCRIPT), "fixed", "--port", str(ports.http)]
    command += ["--replies", str(replies), "--server", server]
    if server == "uvicorn":
        key, label = "uvicorn-bare", "bare Starlette+uvicorn: reads the body, fixed reply"
    else:
        key, label = "starlette-bare", "bare Starlette+hypercorn: reads the body, fixed reply"
    # One reply per payload: it is addressed by payload key (three payloads share `sum`).
    return ServerSpec(
        key, label, "ceiling", command, ports, list(requests), "health", by_payload=True
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


def minimal_v2_spec(server: str = "hypercorn") -> ServerSpec:
    """Starlette with a hand-written V2 ``sum`` (msgspec, numpy): the lean path, on ``server``
    (hypercorn: ``starlette-v2``; uvicorn: ``uvicorn-v2``)."""
    ports = Ports.free()
    command = [sys.executable, str(_BARE_SCRIPT), "v2", "--port", str(ports.http)]
    command += ["--server", server]
    key = "uvicorn-v2" if server == "uvicorn" else "starlette-v2"
    framework = "Starlette+uvicorn" if server == "uvicorn" else "Starlette+hypercorn"
    label = f"minimal V2 on {framework}: msgspec, numpy sum (sum only, JSON only)"
    unsupported = {"sum-1m-binary": f"the minimal V2 app: {_NO_BINARY}"}
    return ServerSpec(
        key, label, "reference", command, ports, ["sum"], "health", unsupported=unsupported
    )


def floor_spec(python: str, artifacts: Path, models: Sequence[str], mlserver: str = "") -> Floor:
    """The model libraries alone in ``python``, loading ``models`` from ``artifacts``
    (``mlserver``: MLServer's version, for its venv's floor)."""
    what = "model libraries alone: import + load the artefacts, no server"
    if mlserver:
        label = f"{what} (MLServer {mlserver}'s venv)"
        return Floor(MLSERVER_FLOOR, label, python, artifacts, models)
    return Floor(FLOOR, f"{what} (inferkit's interpreter)", python, artifacts, models)

"""Every task of the project, one entry point (`nox -l` lists them; `nox` runs the checks)."""

from __future__ import annotations

import os
import signal
from pathlib import Path
from types import FrameType

import nox

nox.needs_version = ">=2024.3.2"  # session.run(interrupt_timeout=, terminate_timeout=)
nox.options.sessions = ["tests", "lint", "typecheck"]
nox.options.reuse_existing_virtualenvs = True
nox.options.default_venv_backend = "venv"

ROOT = Path(__file__).parent
PYTHON = os.environ.get("INFERKIT_NOX_PYTHON") or None  # None: the python running nox


@nox.session(python=PYTHON)
def tests(session: nox.Session) -> None:
    """The whole suite: unit, transport, conformance and e2e tests, with branch coverage."""
    session.install("-e", ".[test,sklearn,xgboost,lightgbm,onnx,catboost,mlflow,huggingface]")
    session.run("pytest", "--cov=inferkit", "--cov-report=term", *session.posargs)


@nox.session(python=PYTHON)
def lint(session: nox.Session) -> None:
    """ruff check and ruff format --check."""
    session.install("ruff>=0.6")
    session.run("ruff", "check", ".")
    session.run("ruff", "format", "--check", ".")


@nox.session(python=PYTHON)
def typecheck(session: nox.Session) -> None:
    """mypy --strict on the package."""
    session.install(
        "-e", ".[test,sklearn,xgboost,lightgbm,onnx,catboost,mlflow,huggingface]", "mypy>=1.10"
    )
    session.run("mypy")


@nox.session(python=PYTHON)
def demo(session: nox.Session) -> None:
    """Install, build the example models if missing, and serve the examples (8080/8081/8082)."""
    session.install("-e", ".[all]")
    session.run("python", "examples/prepare.py")
    run_until_signalled(session, "inferkit", "start", "examples", *session.posargs)


def run_until_signalled(session: nox.Session, *args: str) -> None:
    """Run a long-lived command that ends when nox is told to end, not one that outlives it.

    nox stops its child only on KeyboardInterrupt; a SIGTERM or SIGHUP sent to nox alone (a
    supervisor, ``kill``, a closed terminal) would kill nox and leave the child serving, its
    ports held, reparented to PID 1. So those signals become KeyboardInterrupt here, and nox's
    shutdown sends the child SIGTERM after a short grace (the child may have had SIGINT from the
    terminal already) and waits for it to drain before killing it.
    """

    def interrupt(signum: int, frame: FrameType | None) -> None:
        raise KeyboardInterrupt

    previous = {sig: signal.signal(sig, interrupt) for sig in (signal.SIGTERM, signal.SIGHUP)}
    try:
        session.run(*args, interrupt_timeout=2.0, terminate_timeout=30.0)
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


@nox.session(python=PYTHON)
def soak(session: nox.Session) -> None:
    """Soak and faults on the real server (docs/reliability.md): 10 min at saturation, kill -9
    and SIGSTOP of a worker, reloads and SIGTERM under load. Not in CI's run (it is long).

    ``-- --minutes N`` sets the soak's length, ``-- --quick`` is a smoke run, ``-- --update-docs``
    rewrites the figures in docs/reliability.md.
    """
    session.install("-e", ".[all]", "httpx>=0.27,<1", "tritonclient[grpc]>=2.40")
    session.run("python", "benchmarks/soak.py", *session.posargs)


@nox.session(python=PYTHON)
def container(session: nox.Session) -> None:
    """Build the examples' image with a dockerd of its own and drive it with tritonclient.

    Needs root, ``dockerd`` and ``mmdebstrap`` (Debian: ``apt-get install docker.io
    mmdebstrap``); see scripts/container_check.py. Exit status 3 and a ``SKIPPED: cannot start
    dockerd: ...`` line when the machine cannot run it; ``-- --status-file FILE`` records the
    outcome for CI, ``-- --fresh`` rebuilds the cached base image and layers.
    """
    session.install("-e", ".[test,sklearn,xgboost]")
    session.run("python", "scripts/container_check.py", *session.posargs)


@nox.session(python=PYTHON)
def proto(session: nox.Session) -> None:
    """Regenerate inferkit/transports/grpc/_generated from proto/ (``-- --check``: verify)."""
    session.install("grpcio-tools>=1.60", "betterproto2-compiler>=0.10,<0.11", "ruff>=0.6")
    session.run("python", "scripts/gen_proto.py", *session.posargs)


@nox.session(python=PYTHON)
def bench(session: nox.Session) -> None:
    """inferkit (own runner, and embedded under uvicorn) vs MLServer 1.7.1 vs bare Starlette,
    in one run (see docs/performance.md).

    REST load uses ``wrk`` and gRPC load ``h2load`` when they are on PATH (Debian:
    ``apt-get install wrk nghttp2-client``), else Python loaders; ``-- --quick`` is a smoke
    run, ``-- --update-docs`` rewrites docs/performance.md.
    """
    session.install(
        "-e",
        ".[all]",
        "matplotlib>=3.7",
        "tritonclient[grpc]>=2.40",
        # The embedded-under-uvicorn server and the uvicorn ceilings (uvloop + httptools).
        "uvicorn[standard]>=0.30,<1",
    )
    session.run("python", "benchmarks/run.py", *session.posargs)

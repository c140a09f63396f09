"""The ``inferkit`` command: ``inferkit start DIR`` serves an MLServer-style model repository.

Thin by design: read settings (file, then env, then flags), point a repository at the folder,
and hand a ``Server`` to the runner. Every expected failure (missing folder, bad settings, port
in use) is one line on stderr and a non-zero exit, never a traceback: 2 for what the command
line or the settings ask for (as argparse's usage errors), 1 for the rest.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Sequence
from pathlib import Path

from ._version import __version__
from .errors import InferkitError, SettingsError
from .settings_loader import LOG_LEVELS

__all__ = ["main"]

log = logging.getLogger("inferkit.cli")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="inferkit",
        description="Serve ML models over the Open Inference Protocol (V2): REST, gRPC, metrics.",
    )
    parser.add_argument("--version", action="version", version=f"inferkit {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    start = commands.add_parser(
        "start", help="serve the models in a folder (settings.json + model-settings.json files)"
    )
    start.add_argument("folder", help="the model repository (MLServer's layout)")
    start.add_argument("--host", help="address to listen on (settings: host)")
    start.add_argument("--http-port", type=int, help="REST port (settings: http_port)")
    start.add_argument("--grpc-port", type=int, help="gRPC port (settings: grpc_port)")
    start.add_argument("--metrics-port", type=int, help="metrics port (settings: metrics_port)")
    start.add_argument(
        "--log-level",
        metavar="LEVEL",
        help=f"{', '.join(LOG_LEVELS)} (settings: log_level)",
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``inferkit`` command; returns the exit status."""
    args = _parser().parse_args(argv)
    try:
        return _start(args)
    except SettingsError as exc:
        print(f"inferkit: error: {exc.message}", file=sys.stderr)
        return 2
    except InferkitError as exc:
        print(f"inferkit: error: {exc.message}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 0


def _start(args: argparse.Namespace) -> int:
    from .repository import ModelRepository
    from .runner import serve
    from .server import Server
    from .settings_loader import check_log_level, load_settings

    folder = Path(args.folder)
    if not folder.is_dir():
        print(f"inferkit: error: {folder} is not a folder", file=sys.stderr)
        return 2
    if args.log_level is not None:
        check_log_level(args.log_level, "--log-level", at="")
    environ = dict(os.environ)
    warnings: list[str] = []
    settings = load_settings(folder, environ, warnings=warnings)
    overrides = {
        "host": args.host,
        "http_port": args.http_port,
        "grpc_port": args.grpc_port,
        "metrics_port": args.metrics_port,
        "log_level": args.log_level,
    }
    for field, value in overrides.items():
        if value is not None:
            setattr(settings, field, value)
    from .logs import configure_logging

    configure_logging(settings, level=args.log_level)
    # Real MLServer repositories carry kafka, cache... settings: serve anyway, and say so.
    # Models' settings files are reported by the repository when it reads them.
    for warning in warnings:
        log.warning("%s", warning)
    # With no model folder, MLSERVER_MODEL_* variables describe the one model (as in MLServer).
    repository = ModelRepository(settings.model_repository_root, environ)
    serve(Server(settings=settings, repository=repository))
    return 0

"""The ``inferkit`` command: ``inferkit start DIR`` serves an MLServer-style model repository;
``inferkit dockerfile DIR`` and ``inferkit build DIR -t TAG`` package one as a container image.

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
    dockerfile = commands.add_parser(
        "dockerfile",
        help="write a Dockerfile (and .dockerignore) that serves a model folder",
        description="Write DIR/Dockerfile, DIR/.dockerignore and a wheel of this inferkit in"
        " DIR/.inferkit/, so that `docker build DIR` makes an image serving the folder.",
    )
    dockerfile.add_argument("folder", help="the model repository (MLServer's layout)")
    _image_options(dockerfile)
    dockerfile.add_argument(
        "--no-wheel",
        action="store_true",
        help="install inferkit==VERSION from the package index instead of a wheel of this one",
    )
    build = commands.add_parser(
        "build",
        help="build a container image that serves a model folder (runs `docker build`)",
        description="Write the folder's build context to a temporary folder and run"
        " `docker build -t TAG` on it (the folder itself is left as it is).",
    )
    build.add_argument("folder", help="the model repository (MLServer's layout)")
    build.add_argument("-t", "--tag", required=True, help="name:tag of the image")
    _image_options(build)
    build.add_argument(
        "--network", help="networking mode of the build's RUN steps (docker build --network)"
    )
    build.add_argument("--no-cache", action="store_true", help="docker build --no-cache")
    return parser


def _image_options(parser: argparse.ArgumentParser) -> None:
    from .deploy.dockerfile import DEFAULT_BASE_IMAGE

    parser.add_argument(
        "--base-image",
        default=DEFAULT_BASE_IMAGE,
        metavar="IMAGE",
        help=f"the image to build on, with python3 and venv (default {DEFAULT_BASE_IMAGE})",
    )
    parser.add_argument(
        "--ca-bundle",
        type=Path,
        metavar="FILE",
        help="a CA bundle for pip during the build (behind a TLS-intercepting proxy)",
    )


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``inferkit`` command; returns the exit status."""
    args = _parser().parse_args(argv)
    commands = {"start": _start, "dockerfile": _dockerfile, "build": _build}
    try:
        return commands[args.command](args)
    except SettingsError as exc:
        print(f"inferkit: error: {exc.message}", file=sys.stderr)
        return 2
    except InferkitError as exc:
        print(f"inferkit: error: {exc.message}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 0


def _folder(path: str) -> Path:
    """The command's model folder; a usage error (exit 2) when it is not one."""
    folder = Path(path)
    if not folder.is_dir():
        raise SettingsError(f"{folder} is not a folder")
    return folder


def _start(args: argparse.Namespace) -> int:
    from .repository import ModelRepository
    from .runner import serve
    from .server import Server
    from .settings_loader import check_log_level, load_settings

    folder = _folder(args.folder)
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


def _dockerfile(args: argparse.Namespace) -> int:
    from .deploy.build import write_dockerfile

    folder = _folder(args.folder)
    written = write_dockerfile(
        folder, base_image=args.base_image, wheel=not args.no_wheel, ca_bundle=args.ca_bundle
    )
    print(
        f"Wrote {folder / 'Dockerfile'} (inferkit[{','.join(written.extras)}]);"
        f" build it with: docker build -t IMAGE {folder}"
    )
    return 0


def _build(args: argparse.Namespace) -> int:
    import tempfile

    from .deploy.build import check_daemon, docker_build, write_context

    folder = _folder(args.folder)
    # Before any work: a missing daemon is the common failure, and says the most.
    check_daemon()
    options = [*(["--network", args.network] if args.network else [])]
    options += ["--no-cache"] if args.no_cache else []
    with tempfile.TemporaryDirectory(prefix="inferkit-build-") as context:
        write_context(folder, Path(context), base_image=args.base_image, ca_bundle=args.ca_bundle)
        docker_build(Path(context), args.tag, options=options)
    print(f"Built {args.tag}; run it with: docker run --rm -p 8080:8080 -p 8081:8081 {args.tag}")
    return 0

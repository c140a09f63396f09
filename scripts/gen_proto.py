"""Regenerate inferkit's gRPC code from ``proto/*.proto`` with betterproto2-compiler.

Usage: ``python scripts/gen_proto.py`` (what ``nox -s proto`` runs), or ``--check`` to fail when
the committed code in ``inferkit/transports/grpc/_generated/`` differs from a fresh generation.

Needs grpcio-tools (for ``protoc``), betterproto2-compiler (the ``python_betterproto2`` plugin)
and ruff (the plugin formats its output with it) in the running interpreter's environment. Only
the betterproto2 runtime and grpclib are needed to *import* the generated code.

The output depends only on the .proto files and the tool versions: protoc runs on paths relative
to ``proto/`` and the plugin's ruff runs in an empty directory, so no project setting leaks in.
"""

from __future__ import annotations

import argparse
import filecmp
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PROTO_DIR = ROOT / "proto"
OUT_DIR = ROOT / "inferkit" / "transports" / "grpc" / "_generated"

#: Plugin options: grpclib stubs (used by tests and embedders) and grpclib service bases.
PLUGIN_OPTIONS = "client_generation=async,server_generation=async"


def generate(out: Path) -> None:
    """Run protoc with the betterproto2 plugin over every ``proto/*.proto`` into ``out``."""
    protos = sorted(p.name for p in PROTO_DIR.glob("*.proto"))
    bindir = str(Path(sys.executable).parent)
    # The plugin and the ruff it calls are console scripts next to this interpreter.
    env = {**os.environ, "PATH": bindir + os.pathsep + os.environ.get("PATH", "")}
    with tempfile.TemporaryDirectory() as scratch:
        done = subprocess.run(
            [
                sys.executable,
                "-m",
                "grpc_tools.protoc",
                f"--proto_path={PROTO_DIR}",
                f"--python_betterproto2_out={PLUGIN_OPTIONS}:{out}",
                *protos,
            ],
            cwd=scratch,
            env=env,
            capture_output=True,  # the plugin says "Writing ..." per file: only show failures
            text=True,
        )
    if done.returncode:
        sys.stderr.write(done.stdout + done.stderr)
        raise SystemExit(f"protoc failed with exit code {done.returncode}")


def _same_tree(a: Path, b: Path) -> bool:
    cmp = filecmp.dircmp(a, b, ignore=["__pycache__"])
    if cmp.left_only or cmp.right_only or cmp.funny_files:
        return False
    _, mismatch, errors = filecmp.cmpfiles(a, b, cmp.common_files, shallow=False)
    if mismatch or errors:
        return False
    return all(_same_tree(a / d, b / d) for d in cmp.common_dirs)


def main(argv: list[str] | None = None) -> int:
    """Regenerate ``_generated/`` (or, with ``--check``, compare it to a fresh generation)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="fail if the code is stale")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        fresh = Path(tmp) / "_generated"
        fresh.mkdir()
        generate(fresh)
        if args.check:
            if OUT_DIR.is_dir() and _same_tree(fresh, OUT_DIR):
                return 0
            print(
                f"{OUT_DIR.relative_to(ROOT)} is stale: run scripts/gen_proto.py", file=sys.stderr
            )
            return 1
        shutil.rmtree(OUT_DIR, ignore_errors=True)
        shutil.copytree(fresh, OUT_DIR)
    print(f"wrote {OUT_DIR.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

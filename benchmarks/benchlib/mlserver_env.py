"""MLServer in its own virtualenv, created on demand: it must not share packages with inferkit.

MLServer 1.7.1 supports Python 3.9 to 3.12, so the venv is made with the running interpreter when
it fits, else with the first ``python3.12`` ... ``python3.9`` on PATH. Any failure is a reason
string: the MLServer rows are then skipped with that note, and the rest of the benchmark runs.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

__all__ = ["MLSERVER_REQUIREMENTS", "MLSERVER_VERSION", "MLServerEnv", "ensure_mlserver"]

MLSERVER_VERSION = "1.7.1"
#: As measured for the issue's baseline; uvloop 0.22 breaks MLServer 1.7.1's loop setup.
MLSERVER_REQUIREMENTS = (
    f"mlserver=={MLSERVER_VERSION}",
    "mlserver-sklearn",
    "mlserver-xgboost",
    "uvloop<0.22",
)
_SUPPORTED = ((3, 9), (3, 12))

_CHECK = (
    "import importlib.metadata as m, mlserver, mlserver_sklearn, mlserver_xgboost;"
    "print(m.version('mlserver'))"
)


class MLServerEnv:
    """A working MLServer venv: its interpreter, ``mlserver`` command and version."""

    def __init__(self, venv: Path, version: str) -> None:
        self.venv = venv
        self.python = venv / "bin" / "python"
        self.command = venv / "bin" / "mlserver"
        self.version = version


def _check(venv: Path) -> str | None:
    python = venv / "bin" / "python"
    if not python.exists() or not (venv / "bin" / "mlserver").exists():
        return None
    done = subprocess.run([str(python), "-c", _CHECK], capture_output=True, text=True, timeout=120)
    return done.stdout.strip() if done.returncode == 0 else None


def _base_python(wanted: str | None) -> str | None:
    if wanted:
        return wanted
    if _SUPPORTED[0] <= sys.version_info[:2] <= _SUPPORTED[1]:
        return sys.executable
    for minor in range(_SUPPORTED[1][1], _SUPPORTED[0][1] - 1, -1):
        found = shutil.which(f"python3.{minor}")
        if found:
            return found
    return None


def ensure_mlserver(venv: Path, install: bool, python: str | None, log: Path) -> MLServerEnv | str:
    """The MLServer venv at ``venv``, created and installed if needed and allowed.

    Returns the reason as a string when MLServer cannot be used.
    """
    version = _check(venv)
    if version is None and install:
        base = _base_python(python)
        if base is None:
            return "MLServer skipped: no Python 3.9-3.12 found (give one with --mlserver-python)"
        with log.open("w") as stream:
            for command in (
                [base, "-m", "venv", str(venv)],
                [str(venv / "bin" / "python"), "-m", "pip", "install", *MLSERVER_REQUIREMENTS],
            ):
                done = subprocess.run(
                    command, stdout=stream, stderr=subprocess.STDOUT, timeout=1800, check=False
                )
                if done.returncode != 0:
                    return f"MLServer skipped: `{' '.join(command[-4:])}` failed (see {log})"
        version = _check(venv)
    if version is None:
        hint = "" if install else " (and --no-mlserver-install was given)"
        return f"MLServer skipped: no working MLServer venv at {venv}{hint}"
    return MLServerEnv(venv, version)

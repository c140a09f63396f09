"""What the figures were measured on: CPU, cores, kernel, load, Python and package versions."""

from __future__ import annotations

import importlib.metadata
import os
import platform
import subprocess
from pathlib import Path
from typing import Any

__all__ = ["PACKAGES", "describe", "package_versions", "wrk_version"]

#: Packages whose versions are recorded with the results (when installed).
PACKAGES = (
    "inferkit",
    "msgspec",
    "numpy",
    "starlette",
    "hypercorn",
    "uvicorn",
    "httptools",
    "uvloop",
    "scikit-learn",
    "xgboost",
    "grpclib",
    "betterproto2",
    "grpcio",
    "tritonclient",
)


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def package_versions(names: tuple[str, ...] = PACKAGES) -> dict[str, str]:
    """Installed versions of ``names`` in this interpreter ("-" when absent)."""
    versions = {}
    for name in names:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            versions[name] = "-"
    return versions


def wrk_version() -> str | None:
    """``wrk 4.1.0`` (from ``wrk -v``), or None when wrk is not installed."""
    try:
        done = subprocess.run(["wrk", "-v"], capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return None
    words = (done.stdout + done.stderr).split()
    return f"wrk {words[1].rsplit('/', 1)[-1]}" if len(words) > 1 else "wrk"


def describe() -> dict[str, Any]:
    """The machine and this interpreter, for the results."""
    load = os.getloadavg()
    return {
        "cpu": _cpu_model(),
        "cores": os.cpu_count(),
        "kernel": f"{platform.system()} {platform.release()}",
        "loadavg_at_start": [round(value, 2) for value in load],
        "python": platform.python_version(),
        "packages": package_versions(),
    }

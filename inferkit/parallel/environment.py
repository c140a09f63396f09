"""Models that run in their own Python environment (``environment_path`` / ``environment_tarball``).

A model whose ``parameters.environment_path`` names a venv or conda folder, or whose
``parameters.environment_tarball`` names a conda-pack / venv tarball (unpacked once into
``environments_dir``, keyed by the tarball's SHA-256), runs in worker processes started with that
environment's ``bin/python``. The environment needs the model's dependencies only, not inferkit:
the worker's ``sys.path`` is the environment's own paths first, then the server's, so the model
imports its packages from the environment and anything the environment lacks (inferkit,
msgspec) from the server, as MLServer does. The interpreter must have the server's minor version
(the server's paths hold compiled modules built for it).

The interpreter is chosen per process (:class:`EnvironmentProcess`), never with
``multiprocessing.set_executable``, which is global: two models with two environments share a
server.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
from dataclasses import dataclass
from multiprocessing import popen_spawn_posix, reduction, spawn, util
from multiprocessing.context import SpawnProcess
from multiprocessing.process import BaseProcess
from typing import Any

from ..errors import ModelLoadError
from ..settings import ModelSettings

__all__ = ["Environment", "EnvironmentProcess", "default_environments_dir", "find_environment"]

# Asks an interpreter for its version and its own sys.path (-I: no PYTHONPATH, no user site).
_PROBE = "import json, sys; print(json.dumps([list(sys.version_info[:2]), sys.path]))"


@dataclass(frozen=True)
class Environment:
    """An environment's folder, its interpreter and that interpreter's own ``sys.path``."""

    folder: str
    python: str
    sys_path: tuple[str, ...]

    def worker_path(self, server_path: list[str]) -> list[str]:
        """A worker's ``sys.path``: the environment's own, then the server's not among them."""
        return [*self.sys_path, *(p for p in server_path if p not in self.sys_path)]


def default_environments_dir() -> str:
    """Where tarballs are unpacked unless ``environments_dir`` is set."""
    return os.path.join(tempfile.gettempdir(), "inferkit-environments")


def wants_environment(settings: ModelSettings) -> bool:
    """Whether the model sets ``environment_path`` or ``environment_tarball``."""
    parameters = settings.parameters
    return parameters is not None and bool(
        parameters.environment_path or parameters.environment_tarball
    )


def find_environment(settings: ModelSettings, environments_dir: str | None) -> Environment | None:
    """The model's environment (unpacking its tarball if needed), or None; blocking.

    Raises :class:`~inferkit.errors.ModelLoadError` saying what is wrong with it.
    """
    parameters = settings.parameters
    if parameters is None:
        return None
    if parameters.environment_path:
        folder = _resolve(settings, parameters.environment_path)
        if not os.path.isdir(folder):
            raise _error(settings, f"environment_path {folder} is not a folder")
    elif parameters.environment_tarball:
        tarball = _resolve(settings, parameters.environment_tarball)
        if not os.path.isfile(tarball):
            raise _error(settings, f"environment_tarball {tarball} is not a file")
        folder = unpack(tarball, environments_dir or default_environments_dir(), settings)
    else:
        return None
    return _probe(settings, folder)


def _resolve(settings: ModelSettings, path: str) -> str:
    path = os.path.expanduser(os.path.expandvars(path))
    if settings.folder and not os.path.isabs(path):
        path = os.path.join(settings.folder, path)
    return os.path.abspath(path)


def _error(settings: ModelSettings, reason: str) -> ModelLoadError:
    return ModelLoadError(
        f"Cannot run model '{settings.name}' in its environment: {reason}", model=settings.name
    )


def _probe(settings: ModelSettings, folder: str) -> Environment:
    python = next(
        (
            os.path.join(folder, "bin", name)
            for name in ("python", "python3")
            if os.access(os.path.join(folder, "bin", name), os.X_OK)
        ),
        None,
    )
    if python is None:
        raise _error(settings, f"{folder} has no bin/python")
    try:
        done = subprocess.run(
            [python, "-I", "-c", _PROBE], capture_output=True, text=True, timeout=60, check=True
        )
        (major, minor), paths = json.loads(done.stdout)
    except (OSError, ValueError, subprocess.SubprocessError) as exc:
        raise _error(settings, f"{python} does not run ({type(exc).__name__})") from None
    if (major, minor) != sys.version_info[:2]:
        raise _error(
            settings,
            f"{python} is Python {major}.{minor} and the server runs"
            f" {sys.version_info[0]}.{sys.version_info[1]}; they must be the same minor version",
        )
    return Environment(folder, python, tuple(p for p in paths if p))


def unpack(tarball: str, environments_dir: str, settings: ModelSettings) -> str:
    """Unpack ``tarball`` into ``environments_dir/<sha256>`` unless already there; the folder."""
    digest = hashlib.sha256()
    with open(tarball, "rb") as file:
        for chunk in iter(lambda: file.read(1024 * 1024), b""):
            digest.update(chunk)
    folder = os.path.join(environments_dir, digest.hexdigest())
    if os.path.isdir(folder):
        return folder
    os.makedirs(environments_dir, exist_ok=True)
    staging = tempfile.mkdtemp(prefix=".unpacking-", dir=environments_dir)
    try:
        with tarfile.open(tarball) as archive:
            _extract(archive, staging)
        os.rename(staging, folder)  # atomic: a reader sees no folder or a whole one
    except (OSError, tarfile.TarError) as exc:
        shutil.rmtree(staging, ignore_errors=True)
        if os.path.isdir(folder):  # another server unpacked the same tarball first
            return folder
        raise _error(settings, f"cannot unpack {tarball}: {exc}") from None
    return folder


def _extract(archive: tarfile.TarFile, destination: str) -> None:
    if hasattr(tarfile, "tar_filter"):
        # Refuses members outside the destination (.., absolute names, through links) and
        # device files; keeps symlinks to absolute paths, which a venv's bin/python is.
        archive.extractall(destination, filter="tar")
        return
    root = os.path.realpath(destination)
    for member in archive.getmembers():
        target = os.path.realpath(os.path.join(root, member.name))
        if os.path.commonpath([root, target]) != root or member.isdev():
            raise tarfile.TarError(f"unsafe member {member.name!r}")
    archive.extractall(destination)


class _EnvironmentPopen(popen_spawn_posix.Popen):
    """``spawn`` with the process's environment: its interpreter and its ``sys.path``."""

    def _launch(self, process_obj: Any) -> None:  # mirrors popen_spawn_posix.Popen._launch
        from multiprocessing import resource_tracker

        environment: Environment = process_obj.environment
        tracker_fd = resource_tracker.getfd()
        fds: list[int] = self._fds  # type: ignore[attr-defined]
        fds.append(tracker_fd)  # type: ignore[arg-type]
        prep_data = spawn.get_preparation_data(process_obj._name)
        # The server's sys.path (with '' made absolute by spawn) after the environment's.
        prep_data["sys_path"] = environment.worker_path(prep_data["sys_path"])
        fp = io.BytesIO()
        popen_spawn_posix.set_spawning_popen(self)  # type: ignore[attr-defined]
        try:
            reduction.dump(prep_data, fp)
            reduction.dump(process_obj, fp)
        finally:
            popen_spawn_posix.set_spawning_popen(None)  # type: ignore[attr-defined]
        parent_r = child_w = child_r = parent_w = None
        try:
            parent_r, child_w = os.pipe()
            child_r, parent_w = os.pipe()
            cmd = spawn.get_command_line(tracker_fd=tracker_fd, pipe_handle=child_r)
            cmd[0] = environment.python
            fds.extend([child_r, child_w])
            self.pid = util.spawnv_passfds(os.fsencode(environment.python), cmd, fds)
            self.sentinel = parent_r
            with open(parent_w, "wb", closefd=False) as f:
                f.write(fp.getbuffer())
        finally:
            self.finalizer = util.Finalize(
                self,
                util.close_fds,  # type: ignore[attr-defined]
                [fd for fd in (parent_r, parent_w) if fd is not None],
            )
            for fd in (child_r, child_w):
                if fd is not None:
                    os.close(fd)


class EnvironmentProcess(SpawnProcess):
    """A ``spawn`` process started with ``environment``'s interpreter."""

    def __init__(self, environment: Environment, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.environment = environment

    @staticmethod
    def _Popen(process_obj: BaseProcess) -> Any:
        return _EnvironmentPopen(process_obj)

"""The Dockerfile (and ``.dockerignore``) that serves a model folder: pure text from the folder.

The image keeps the promises of :mod:`inferkit.deploy.image`: the models at ``MODEL_DIR``, the
command ``inferkit start MODEL_DIR``, the three ports, a non-root ``USER`` and a HEALTHCHECK on
the readiness path. inferkit is installed with the extras the models need (read from each
``model-settings.json``'s ``implementation``) and then the folder's ``requirements.txt``.

The build context is the model folder itself, plus a hidden ``.inferkit/`` folder that holds
what the build needs but the models do not: a wheel of inferkit (it is not on PyPI, so the image
installs the same inferkit that wrote the Dockerfile) and optionally a CA bundle for pip.
Nothing here writes files or runs docker; :mod:`inferkit.deploy.build` does.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from .._version import __version__
from ..errors import SettingsError
from ..repository import IMPLEMENTATION_ALIASES
from ..settings_loader import MODEL_SETTINGS_FILENAME
from .image import COMMAND, MODEL_DIR, PORTS, READY_PATH, USER

__all__ = [
    "BUILD_DIR",
    "DEFAULT_BASE_IMAGE",
    "DOCKERIGNORE",
    "DockerContext",
    "detect_extras",
    "render",
]

#: The base when none is given: a slim official Python image (Debian, so ``useradd`` exists).
DEFAULT_BASE_IMAGE = "python:3.12-slim"
#: The hidden folder of the build context that holds the inferkit wheel and the CA bundle.
BUILD_DIR = ".inferkit"
#: Where the image's virtual environment lives (its ``bin`` is first on PATH).
VENV = "/opt/inferkit"
#: Runtime modules of inferkit -> the extra that installs their library (each extra is named
#: after its runtime's module).
_RUNTIME_EXTRAS = {
    f"inferkit.runtimes.{name}": name
    for name in ("sklearn", "xgboost", "lightgbm", "onnx", "catboost", "mlflow", "huggingface")
}
#: Never sent to the daemon (nor copied by ``inferkit build``): caches, VCS, virtual
#: environments of a working folder.
DOCKERIGNORE = (
    "**/__pycache__",
    "**/*.pyc",
    ".git",
    ".nox",
    ".venv",
    ".mypy_cache",
    ".pytest_cache",
    ".ruff_cache",
    "Dockerfile",
    ".dockerignore",
)
# The HEALTHCHECK probe: no curl in a slim image, so Python's urllib. It reads the HTTP port
# with the precedence the server uses (PORT as the entrypoint applies it, then INFERKIT_, then
# MLSERVER_), so it follows a port changed at `docker run -e ...`.
_PROBE = (
    "import os, urllib.request; "
    "port = os.environ.get('PORT') or os.environ.get('INFERKIT_HTTP_PORT') "
    "or os.environ.get('MLSERVER_HTTP_PORT') or '{http}'; "
    "urllib.request.urlopen(f'http://127.0.0.1:{{port}}{ready}', timeout=3)"
)
# Knative sets PORT to the port it routes to: it becomes the HTTP port, over every other
# setting. Given as an environment variable (not a flag) so that with PORT unset, MLSERVER_* and
# INFERKIT_* variables still apply, and `docker run IMAGE inferkit start ... --flags` works.
_ENTRYPOINT = 'if [ -n "${PORT:-}" ]; then export INFERKIT_HTTP_PORT="$PORT"; fi; exec "$@"'


@dataclass(frozen=True)
class DockerContext:
    """What goes into a build context next to the model files."""

    #: Text of the ``Dockerfile``.
    dockerfile: str
    #: Text of the ``.dockerignore``.
    dockerignore: str
    #: The inferkit extras the image installs (``server`` first, then the runtimes').
    extras: tuple[str, ...]


def detect_extras(folder: Path) -> tuple[str, ...]:
    """The inferkit extras that serve every model under ``folder``: ``server`` and the runtimes'.

    Reads the ``implementation`` of each ``model-settings.json`` (hidden folders skipped, as the
    repository does); MLServer's runtime names count as inferkit's. Custom classes need no extra:
    their libraries belong in the folder's ``requirements.txt``.
    """
    extras = {"server"}
    for path in _settings_files(folder):
        implementation = _implementation(path)
        module = IMPLEMENTATION_ALIASES.get(implementation, implementation).rpartition(".")[0]
        if module in _RUNTIME_EXTRAS:
            extras.add(_RUNTIME_EXTRAS[module])
    return ("server", *sorted(extras - {"server"}))


def render(
    folder: Path,
    *,
    base_image: str = DEFAULT_BASE_IMAGE,
    wheel: str | None = None,
    ca_bundle: str | None = None,
) -> DockerContext:
    """The Dockerfile and ``.dockerignore`` for the model folder ``folder``.

    ``wheel`` is the path, inside the context, of an inferkit wheel to install (normally under
    :data:`BUILD_DIR`); without one the image asks the package index for ``inferkit==VERSION``
    (for a private index that has it). ``ca_bundle`` is the path, inside the context, of a CA
    bundle for pip during the build (a proxy's, or an offline mirror's); it is not used at run
    time. Raises :class:`SettingsError` for a ``model-settings.json`` that is not valid JSON.
    """
    extras = detect_extras(folder)
    # The wheel keeps its file name (pip reads the version from it), in the image's /tmp.
    wheel_in_image = f"/tmp/{PurePosixPath(wheel).name}" if wheel else ""
    requirement = f"{wheel_in_image or 'inferkit'}[{','.join(extras)}]"
    if not wheel:
        requirement += f"=={__version__}"
    ca = "/tmp/inferkit-build-ca.pem"
    pip = f"PIP_CERT={ca} SSL_CERT_FILE={ca} pip" if ca_bundle else "pip"
    lines = [
        "# Generated by `inferkit dockerfile`: serves this model folder with inferkit "
        f"{__version__}.",
        # The model files alone: the build's own files (the wheel, the CA bundle) stay out of
        # the served folder. A stage, as the legacy builder's COPY cannot exclude a path.
        f"FROM {base_image} AS models",
        "COPY . /models",
        f"RUN rm -rf /models/{BUILD_DIR}",
        "",
        f"FROM {base_image}",
        "ENV PYTHONUNBUFFERED=1 \\",
        "    PIP_NO_CACHE_DIR=1 \\",
        "    PIP_DISABLE_PIP_VERSION_CHECK=1 \\",
        f'    PATH="{VENV}/bin:$PATH"',
        f"RUN python3 -m venv {VENV} \\",
        f"    && (groupadd --gid {_gid()} inferkit"
        f" && useradd --uid {_uid()} --gid {_gid()} --create-home inferkit"
        f" || adduser -D -u {_uid()} inferkit)",
    ]
    # Each file is removed by the last RUN that needs it, so the running image has none of them.
    cleanup = []
    if wheel:
        lines.append(f"COPY {wheel} {wheel_in_image}")
        cleanup.append(wheel_in_image)
    if ca_bundle:
        lines.append(f"COPY {ca_bundle} {ca}")
        cleanup.append(ca)
    installs = [f'{pip} install "{requirement}"']
    if (folder / "requirements.txt").is_file():
        # The models' own dependencies, after inferkit's (which they may pin differently).
        lines.append("COPY requirements.txt /tmp/requirements.txt")
        installs.append(f"{pip} install -r /tmp/requirements.txt")
        cleanup.append("/tmp/requirements.txt")
    steps = [*installs, *([f"rm -f {' '.join(cleanup)}"] if cleanup else [])]
    lines.append("RUN " + " \\\n    && ".join(steps))
    ports = " ".join(str(port) for port in PORTS.values())
    probe = _PROBE.format(http=PORTS["http"], ready=READY_PATH)
    lines += [
        "",
        # Owned by root: the server only reads its models.
        f"COPY --from=models /models {MODEL_DIR}",
        # Settings files may name other ports or a loopback host; the image's contract wins,
        # and a `docker run -e MLSERVER_HTTP_PORT=...` (or INFERKIT_) still overrides it.
        "ENV MLSERVER_HOST=0.0.0.0 \\",
        f"    MLSERVER_HTTP_PORT={PORTS['http']} \\",
        f"    MLSERVER_GRPC_PORT={PORTS['grpc']} \\",
        f"    MLSERVER_METRICS_PORT={PORTS['metrics']}",
        f"EXPOSE {ports}",
        f"USER {USER}",
        f"WORKDIR {MODEL_DIR}",
        "HEALTHCHECK --interval=10s --timeout=5s --start-period=60s --retries=3 \\",
        f"    CMD {_json_list(['python', '-c', probe])}",
        f"ENTRYPOINT {_json_list(['/bin/sh', '-c', _ENTRYPOINT, 'inferkit-entrypoint'])}",
        f"CMD {_json_list(list(COMMAND))}",
        "",
    ]
    dockerignore = "# Generated by `inferkit dockerfile`.\n" + "\n".join(DOCKERIGNORE) + "\n"
    return DockerContext(dockerfile="\n".join(lines), dockerignore=dockerignore, extras=extras)


def _uid() -> str:
    return USER.partition(":")[0]


def _gid() -> str:
    return USER.partition(":")[2] or _uid()


def _json_list(items: list[str]) -> str:
    """The exec form of a Dockerfile instruction (a JSON array)."""
    return json.dumps(items)


def _settings_files(root: Path) -> list[Path]:
    """Every ``model-settings.json`` under ``root``, hidden folders skipped, sorted."""
    found: list[Path] = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(name for name in dirnames if not name.startswith("."))
        if MODEL_SETTINGS_FILENAME in filenames:
            found.append(Path(dirpath, MODEL_SETTINGS_FILENAME))
    return found


def _implementation(path: Path) -> str:
    """The ``implementation`` field of a model-settings file ('' when absent)."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise SettingsError(f"Cannot read {path}: {exc}") from None
    value = data.get("implementation") if isinstance(data, dict) else None
    return value if isinstance(value, str) else ""

"""The model repository: model folders found on disk, and the classes that implement them.

A model repository is a folder tree in which every folder holding a ``model-settings.json`` is one
version of one model (MLServer's layout). Several folders may share a model ``name`` with
different ``parameters.version``s: those are versions of one model. A folder whose settings are
broken does not hide the others; it is reported as a :class:`DiscoveryFailure` so the server can
show that model as FAILED with the reason.

:func:`resolve_implementation` imports a model's ``"module.Class"``, looking in the model's
folder first, so two models may each ship a ``model.py`` defining a class of the same name.
Only dotted Python names are taken, never a file path, so a settings file cannot import code
from outside its folder and the installed packages.
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.util
import json
import logging
import os
import sys
import threading
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from types import MappingProxyType, ModuleType
from typing import Any, NamedTuple

from .errors import ModelLoadError, SettingsError
from .settings import ModelSettings
from .settings_loader import MODEL_SETTINGS_FILENAME, load_model_settings, model_settings_from_env

__all__ = [
    "IMPLEMENTATION_ALIASES",
    "Discovery",
    "DiscoveryFailure",
    "ModelRepository",
    "resolve_implementation",
]

#: MLServer runtimes that have a built-in inferkit equivalent, so their model-settings serve as is.
IMPLEMENTATION_ALIASES: Mapping[str, str] = MappingProxyType(
    {
        "mlserver_sklearn.SKLearnModel": "inferkit.runtimes.sklearn.SKLearnModel",
        "mlserver_xgboost.XGBoostModel": "inferkit.runtimes.xgboost.XGBoostModel",
        "mlserver_lightgbm.LightGBMModel": "inferkit.runtimes.lightgbm.LightGBMModel",
        "mlserver_catboost.CatboostModel": "inferkit.runtimes.catboost.CatBoostModel",
        "mlserver_mlflow.MLflowRuntime": "inferkit.runtimes.mlflow.MLflowRuntime",
        "mlserver_huggingface.HuggingFaceRuntime": (
            "inferkit.runtimes.huggingface.HuggingFaceRuntime"
        ),
    }
)

# Optional libraries -> the inferkit extra that installs them, for "No module named ..." hints.
_EXTRAS: Mapping[str, str] = MappingProxyType(
    {
        "sklearn": "sklearn",
        "joblib": "sklearn",
        "xgboost": "xgboost",
        "lightgbm": "lightgbm",
        "pandas": "pandas",
        "onnxruntime": "onnx",
        "catboost": "catboost",
        "mlflow": "mlflow",
        "transformers": "huggingface",
    }
)

log = logging.getLogger("inferkit.repository")

# Importing from a model folder puts the folder on sys.path for the duration of the import; the
# lock keeps two imports in different threads from seeing each other's folder first.
_IMPORT_LOCK = threading.Lock()
# Modules loaded from a model folder are named `_inferkit_model_<hash of the folder>_<module>`.
_UNIQUE_PREFIX = "_inferkit_model_"


class DiscoveryFailure(NamedTuple):
    """A ``model-settings.json`` that could not be read.

    The model is the one the file names (``name``, ``parameters.version``) when those can
    still be read, so the index lists FAILED the model a client would load; else (the file is
    no JSON object, or names a model the scan found working) it is named after its folder.
    """

    name: str
    #: Names the file and the field: ``Invalid settings in /m/model-settings.json: ...``.
    reason: str
    version: str = ""


class Discovery(NamedTuple):
    """What a scan of the repository found: ``models, failures = repository.discover()``."""

    #: One entry per model version, sorted by folder.
    models: list[ModelSettings]
    #: Settings files that could not be loaded, with the reason.
    failures: list[DiscoveryFailure]


class ModelRepository:
    """Finds models under ``root`` (MLServer's ``SchemalessModelRepository``).

    Each call re-scans the disk, so models added or changed since are picked up by a reload. When
    no folder holds a model and ``environ`` is given, the single model described by
    ``MLSERVER_MODEL_*`` variables (if any) is used, as MLServer does for Seldon Core and KServe.

    Settings fields inferkit does not implement and unknown keys (typos) are logged as warnings
    on ``inferkit.repository``, once per file: a scan logs a file's warnings again only when the
    file has changed since they were last logged, so the scans run by every load and index call
    do not repeat them.
    """

    def __init__(self, root: str | Path, environ: Mapping[str, str] | None = None) -> None:
        self.root = Path(os.path.abspath(root))
        self._environ = environ
        # Settings file (or "environment") -> the version whose warnings were logged last.
        self._warned: dict[str, object] = {}
        self._warned_lock = threading.Lock()  # scans run in worker threads, maybe two at once

    def discover(self) -> Discovery:
        """Every model version in the repository, and the folders that failed to load."""
        models: list[ModelSettings] = []
        broken: list[tuple[Path, str]] = []
        for path in _settings_files(self.root):
            warnings: list[str] = []
            stamp = _stamp(path)  # before the read: a later edit is then warned about too
            try:
                models.append(load_model_settings(path, warnings=warnings))
            except SettingsError as exc:
                broken.append((path, exc.message))
            self._warn_once(str(path), stamp, warnings)
        working = {model.name for model in models}
        failures = [_failure(path, reason, working) for path, reason in broken]
        if not models and self._environ is not None:
            warnings = []
            from_env = model_settings_from_env(self._environ, warnings=warnings)
            if from_env is not None:
                models.append(from_env)
                self._warn_once("environment", None, warnings)
        return Discovery(models, failures)

    def _warn_once(self, key: str, stamp: object, warnings: list[str]) -> None:
        with self._warned_lock:
            if key in self._warned and self._warned[key] == stamp:
                return
            self._warned[key] = stamp
        for warning in warnings:
            log.warning("%s", warning)

    def find(self, name: str) -> list[ModelSettings]:
        """The versions of one model, re-scanning the disk (empty if there is none)."""
        return [model for model in self.discover().models if model.name == name]


def _failure(path: Path, reason: str, working: set[str]) -> DiscoveryFailure:
    """The failure of a settings file, named as :class:`DiscoveryFailure` says."""
    folder = DiscoveryFailure(path.parent.name, reason)
    try:
        raw = json.loads(path.read_bytes())
    except (OSError, ValueError):
        return folder
    name = raw.get("name") if isinstance(raw, dict) else None
    # A broken file naming a model that works must not stand for it in the index.
    if not isinstance(name, str) or not name or name in working:
        return folder
    parameters = raw.get("parameters")
    version = parameters.get("version") if isinstance(parameters, dict) else None
    return DiscoveryFailure(name, reason, version if isinstance(version, str) else "")


def _stamp(path: Path) -> object:
    """What changes when a file is rewritten (or None if it is gone)."""
    try:
        stat = path.stat()
    except OSError:
        return None
    return (stat.st_mtime_ns, stat.st_size, stat.st_ino)


def _settings_files(root: Path) -> list[Path]:
    """Every ``model-settings.json`` under ``root``, sorted; hidden folders are skipped."""
    found: list[Path] = []
    seen: set[str] = set()
    # Symlinked folders are followed (mounted volumes use them); ``seen`` breaks link loops.
    for dirpath, dirnames, filenames in os.walk(root, followlinks=True):
        real = os.path.realpath(dirpath)
        if real in seen:
            dirnames.clear()
            continue
        seen.add(real)
        dirnames[:] = [name for name in dirnames if not name.startswith(".")]
        if MODEL_SETTINGS_FILENAME in filenames:
            found.append(Path(dirpath, MODEL_SETTINGS_FILENAME))
    # Sorted by folder, so a folder comes right before the folders inside it.
    return sorted(found, key=lambda path: path.parent.parts)


def resolve_implementation(settings: ModelSettings) -> type[Any]:
    """The class named by ``settings.implementation``, imported from the model's folder first.

    MLServer runtime names with an inferkit equivalent are mapped through
    :data:`IMPLEMENTATION_ALIASES`. A module found in the model's folder (``model.py``, or a
    package ``pkg/__init__.py``) is loaded fresh on every call under a name unique to the folder,
    so it never clashes with another model's module of the same name and a reload picks up edits.
    Anything else is a normal import. Raises :class:`ModelLoadError` with the reason.
    """
    wanted = settings.implementation
    if not wanted:
        raise ModelLoadError(
            'No implementation set: add "implementation": "module.Class" to model-settings.json',
            model=settings.name,
            version=settings.version,
        )
    module_name, _, class_name = IMPLEMENTATION_ALIASES.get(wanted, wanted).rpartition(".")

    def failed(reason: str) -> ModelLoadError:
        return ModelLoadError(
            f"Cannot import {wanted!r}: {reason}", model=settings.name, version=settings.version
        )

    # Module names only, as in MLServer: a path ("/elsewhere/evil.Class", "../x.Class") would
    # let a settings file import code from outside its model folder and the installed packages.
    if not class_name.isidentifier() or not all(
        part.isidentifier() for part in module_name.split(".")
    ):
        raise failed("expected 'module.Class', dotted Python names (not a file path)")
    folder = os.path.abspath(settings.folder) if settings.folder else None
    try:
        module = _import_with_compat(module_name, folder)
    except ModuleNotFoundError as exc:
        raise failed(_missing_module_reason(exc, module_name, folder)) from exc
    except Exception as exc:  # the module's own code ran and may raise anything
        raise failed(f"{type(exc).__name__}: {exc}") from exc
    found = getattr(module, class_name, None)
    if isinstance(found, type):
        return found
    if module.__name__.startswith(_UNIQUE_PREFIX):
        _forget(module.__name__.partition(".")[0])
    if found is None:
        raise failed(f"module {module_name!r} has no attribute {class_name!r}")
    raise failed(f"{class_name!r} is not a class")


def _import_with_compat(module_name: str, folder: str | None) -> ModuleType:
    # A model file written for MLServer (`from mlserver import MLModel`) serves unchanged:
    # without MLServer installed, `mlserver` names inferkit's equivalents and we try again.
    try:
        return _import(module_name, folder)
    except ModuleNotFoundError as exc:
        if (exc.name or "").partition(".")[0] != "mlserver":
            raise
        from .compat import install_mlserver_alias

        if not install_mlserver_alias():
            raise
        return _import(module_name, folder)


def _import(module_name: str, folder: str | None) -> ModuleType:
    if folder is not None:
        top, _, rest = module_name.partition(".")
        package = Path(folder, top, "__init__.py")
        single = Path(folder, f"{top}.py")
        if package.is_file():
            return _import_from_folder(folder, top, rest, package, package.parent)
        if single.is_file() and not rest:
            return _import_from_folder(folder, top, rest, single, None)
    return importlib.import_module(module_name)


def _import_from_folder(
    folder: str, top: str, rest: str, location: Path, package_dir: Path | None
) -> ModuleType:
    """Load ``folder/top`` under a name unique to the folder, then its submodule ``rest``."""
    digest = hashlib.sha256(folder.encode()).hexdigest()[:12]
    unique = f"{_UNIQUE_PREFIX}{digest}_{top}"
    spec = importlib.util.spec_from_file_location(
        unique,
        location,
        submodule_search_locations=[str(package_dir)] if package_dir else None,
    )
    if spec is None or spec.loader is None:  # pragma: no cover - only for exotic suffixes
        raise ImportError(f"cannot load {location}")
    module = importlib.util.module_from_spec(spec)
    with _IMPORT_LOCK, _on_sys_path(folder):
        _forget(unique)
        _forget_other_models_siblings(folder)
        # Registered before it runs, as a normal import would be: dataclasses, pickle and
        # typing.get_type_hints look the module up by the class's __module__.
        sys.modules[unique] = module
        try:
            spec.loader.exec_module(module)
            if rest:
                module = importlib.import_module(f"{unique}.{rest}")
        except BaseException:
            _forget(unique)
            raise
    return module


@contextmanager
def _on_sys_path(folder: str) -> Iterator[None]:
    # A model's module may `import helpers` from its own folder, so the folder is first on
    # sys.path while the module runs, as in MLServer; removing it afterwards keeps one model's
    # folder from shadowing modules for everything imported later. Sibling modules stay in
    # sys.modules under their plain names (MLServer does the same), which is what lets a pickled
    # artefact that refers to `helpers.MyTransformer` load after the import.
    sys.path.insert(0, folder)
    try:
        yield
    finally:
        if folder in sys.path:  # the model's own code may have removed it
            sys.path.remove(folder)


def _forget_other_models_siblings(folder: str) -> None:
    """Drop modules that another model folder imported under a name this folder also provides.

    Without this, a second model's ``import utils`` would silently get the first model's
    ``utils``. A module counts as another model's when it was imported from a folder holding a
    ``model-settings.json``, which is never true of the standard library or installed packages,
    so those stay.
    """
    for entry in os.scandir(folder):
        top = entry.name.removesuffix(".py")
        if top == entry.name and not Path(entry.path, "__init__.py").is_file():
            continue  # neither a module nor a package
        file = getattr(sys.modules.get(top), "__file__", None)
        if not file:
            continue
        origin = Path(file).parent
        if origin.name == top and Path(file).name == "__init__.py":
            origin = origin.parent  # a package: imported from the folder that holds it
        if str(origin) != folder and (origin / MODEL_SETTINGS_FILENAME).is_file():
            _forget(top)


def _forget(module: str) -> None:
    """Remove ``module`` and its submodules from ``sys.modules``."""
    for name in [name for name in sys.modules if name.partition(".")[0] == module]:
        del sys.modules[name]


def _missing_module_reason(exc: ModuleNotFoundError, module_name: str, folder: str | None) -> str:
    missing = exc.name or module_name
    top = missing.partition(".")[0]
    if top == "mlserver" and missing != "mlserver":
        from .compat import MLSERVER_MODULES

        covered = ", ".join(sorted(MLSERVER_MODULES))
        return f"No module named {missing!r}: inferkit's MLServer compatibility covers {covered}"
    if top == "mlserver":
        return (
            f"No module named {top!r}: the model is written for MLServer"
            " (`from mlserver import MLModel`) and MLServer is not installed"
        )
    if top in _EXTRAS:
        return f"No module named {top!r}: install it with pip install 'inferkit[{_EXTRAS[top]}]'"
    if top.startswith("mlserver_"):
        known = ", ".join(sorted(IMPLEMENTATION_ALIASES))
        return f"No module named {missing!r}: inferkit has built-in equivalents only for {known}"
    if missing == module_name.partition(".")[0] and folder is not None:
        return f"No module named {missing!r} in {folder} or the installed packages"
    return f"No module named {missing!r}"

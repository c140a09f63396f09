"""Reading :class:`Settings` and :class:`ModelSettings` from files and environment variables.

This follows MLServer 1.7 so that its model repositories and its Seldon Core / KServe deployments
work unchanged:

- ``settings.json`` and ``model-settings.json`` are decoded in *lax* mode, as pydantic does:
  ``"debug": "true"`` is ``True`` and ``"http_port": "9080"`` is ``9080``.
- Fields inferkit does not implement (``kafka_enabled``, ``cache_enabled``, ``warm_workers``, ...)
  are accepted and reported through the ``ignored`` list, so the caller can log them once.
- Server settings are overridden by ``INFERKIT_<FIELD>`` and, for drop-in use,
  ``MLSERVER_<FIELD>`` environment variables (``INFERKIT_`` wins). Lists, dicts and nested
  settings are given as JSON (``MLSERVER_CORS_SETTINGS='{"allow_origins": ["*"]}'``).
- ``MLSERVER_MODEL_<FIELD>`` variables never touch a model read from a file. They describe one
  model on their own, the single-model deployment of Seldon Core and KServe; see
  :func:`model_settings_from_env`.

The environment is always passed in as a mapping: nothing here reads ``os.environ``.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any, TypeVar

import msgspec

from .errors import SettingsError
from .settings import ModelParameters, ModelSettings, Settings

__all__ = [
    "MODEL_ENV_PREFIXES",
    "MODEL_SETTINGS_FILENAME",
    "SETTINGS_ENV_PREFIXES",
    "SETTINGS_FILENAME",
    "load_model_settings",
    "load_settings",
    "model_settings_from_env",
]

SETTINGS_FILENAME = "settings.json"
MODEL_SETTINGS_FILENAME = "model-settings.json"

#: Prefixes of server-settings variables, strongest first.
SETTINGS_ENV_PREFIXES = ("INFERKIT_", "MLSERVER_")
#: Prefixes of the variables describing a single model, strongest first.
MODEL_ENV_PREFIXES = ("INFERKIT_MODEL_", "MLSERVER_MODEL_")

# Words pydantic accepts for booleans; msgspec's lax mode knows only true/false/1/0, and
# deployment manifests in the wild say "yes" and "on" too.
_TRUE_WORDS = frozenset({"1", "on", "t", "true", "y", "yes"})
_FALSE_WORDS = frozenset({"0", "off", "f", "false", "n", "no"})

# Union members that make an environment value JSON rather than a plain string.
_COMPLEX_TYPES = (
    msgspec.inspect.StructType,
    msgspec.inspect.DataclassType,
    msgspec.inspect.ListType,
    msgspec.inspect.SetType,
    msgspec.inspect.FrozenSetType,
    msgspec.inspect.TupleType,
    msgspec.inspect.VarTupleType,
    msgspec.inspect.DictType,
)

_T = TypeVar("_T")


def load_settings(
    folder: str | Path | None,
    environ: Mapping[str, str],
    *,
    ignored: list[str] | None = None,
) -> Settings:
    """Server settings from ``folder/settings.json`` (if present), then the environment.

    ``model_repository_root`` defaults to ``folder``; a relative root given in the file is taken
    relative to ``folder``. Names of fields in the file that inferkit does not implement are
    appended to ``ignored`` when it is given. Raises :class:`SettingsError` naming the file (or
    the variable) and the field when a value does not fit.
    """
    data: dict[str, Any] = {}
    source = "defaults"
    if folder is not None:
        path = Path(folder, SETTINGS_FILENAME)
        if path.is_file():
            source = str(path)
            data = _read_json_object(path)
            if ignored is not None:
                ignored.extend(_unknown_fields(data, msgspec.inspect.type_info(Settings)))
    settings = _convert(data, Settings, source)

    overrides = _env_overrides(Settings, environ, SETTINGS_ENV_PREFIXES)
    if folder is not None and "model_repository_root" not in overrides:
        root = settings.model_repository_root if "model_repository_root" in data else "."
        overrides["model_repository_root"] = os.path.normpath(os.path.join(folder, root))
    return msgspec.structs.replace(settings, **overrides)


def load_model_settings(
    path: str | Path,
    *,
    ignored: list[str] | None = None,
) -> ModelSettings:
    """One model version's settings from its ``model-settings.json``.

    As MLServer does: ``name`` defaults to the folder's name and ``parameters.uri`` to the folder
    itself; a relative ``uri`` is resolved against the folder. ``folder`` is set to the file's
    (absolute) folder. Environment variables do not apply here (in MLServer 1.7 a file-based
    model never reads ``MLSERVER_MODEL_*`` either). Unknown field names are appended to
    ``ignored`` when it is given.
    """
    path = Path(os.path.abspath(path))
    data = _read_json_object(path)
    if ignored is not None:
        ignored.extend(_unknown_fields(data, msgspec.inspect.type_info(ModelSettings)))
    settings = _convert(data, ModelSettings, str(path))

    folder = str(path.parent)
    parameters = settings.parameters or ModelParameters()
    uri = _resolve_uri(parameters.uri, folder) if parameters.uri else folder
    return msgspec.structs.replace(
        settings,
        name=settings.name or path.parent.name,
        parameters=msgspec.structs.replace(parameters, uri=uri),
        folder=folder,
    )


def model_settings_from_env(environ: Mapping[str, str]) -> ModelSettings | None:
    """The single model described by ``MLSERVER_MODEL_*`` / ``INFERKIT_MODEL_*`` variables.

    Seldon Core and KServe configure a one-model server this way (``MLSERVER_MODEL_NAME``,
    ``MLSERVER_MODEL_IMPLEMENTATION``, ``MLSERVER_MODEL_URI``, ...). As in MLServer, the
    ``parameters`` fields are top-level variables too (``MLSERVER_MODEL_URI``, not
    ``MLSERVER_MODEL_PARAMETERS``) and there is no model unless an implementation is set.
    Unlike MLServer, which then serves a model named ``''`` that no URL can reach, a missing
    name is an error.
    """
    fields = _env_overrides(
        ModelSettings, environ, MODEL_ENV_PREFIXES, skip=frozenset({"parameters", "folder"})
    )
    if not fields.get("implementation"):
        return None
    if not fields.get("name"):
        raise SettingsError(
            "Invalid settings in the environment: a model implementation is set but no name"
            " (set MLSERVER_MODEL_NAME or INFERKIT_MODEL_NAME)"
        )
    parameters = _env_overrides(ModelParameters, environ, MODEL_ENV_PREFIXES)
    return ModelSettings(**fields, parameters=ModelParameters(**parameters))


def _read_json_object(path: Path) -> dict[str, Any]:
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise SettingsError(f"Cannot read settings file {path}: {exc.strerror}") from exc
    try:
        return msgspec.json.decode(raw, type=dict[str, Any])
    except msgspec.DecodeError as exc:  # malformed JSON, or not an object
        raise SettingsError(f"Invalid settings in {path}: {exc}") from exc


def _convert(value: Any, type_: type[_T], source: str) -> _T:
    # strict=False is pydantic's lax mode: "true" -> True, "9080" -> 9080, 5 -> 5.0.
    try:
        return msgspec.convert(value, type_, strict=False)
    except msgspec.ValidationError as exc:
        raise SettingsError(f"Invalid settings in {source}: {exc}") from exc


def _unknown_fields(data: Any, info: msgspec.inspect.Type, prefix: str = "") -> list[str]:
    """Dotted names of the keys in ``data`` that the Struct described by ``info`` lacks."""
    if isinstance(info, msgspec.inspect.UnionType):
        return [
            name
            for member in info.types
            if isinstance(member, msgspec.inspect.StructType)
            for name in _unknown_fields(data, member, prefix)
        ]
    if isinstance(info, msgspec.inspect.ListType) and isinstance(data, list):
        return [
            name
            for index, item in enumerate(data)
            for name in _unknown_fields(item, info.item_type, f"{prefix[:-1]}[{index}].")
        ]
    if not (isinstance(info, msgspec.inspect.StructType) and isinstance(data, dict)):
        return []
    fields = {field.encode_name: field for field in info.fields}
    unknown: list[str] = []
    for key, value in data.items():
        field = fields.get(key)
        if field is None:
            unknown.append(f"{prefix}{key}")
        else:
            unknown.extend(_unknown_fields(value, field.type, f"{prefix}{key}."))
    return unknown


def _env_overrides(
    struct_type: type[msgspec.Struct],
    environ: Mapping[str, str],
    prefixes: tuple[str, ...],
    skip: frozenset[str] = frozenset(),
) -> dict[str, Any]:
    """Typed values for the fields of ``struct_type`` that the environment sets."""
    found = _env_by_field(environ, prefixes)
    overrides: dict[str, Any] = {}
    for field in msgspec.structs.fields(struct_type):
        if field.name in skip or field.name not in found:
            continue
        name, raw = found[field.name]
        source = f"environment variable {name}"
        overrides[field.name] = _convert(
            _parse_env_value(raw, field.type, source), field.type, source
        )
    return overrides


def _env_by_field(
    environ: Mapping[str, str], prefixes: tuple[str, ...]
) -> dict[str, tuple[str, str]]:
    """Lower-cased field part -> (variable, value); the prefix listed first wins."""
    found: dict[str, tuple[str, str]] = {}
    # Weakest prefix first so stronger ones overwrite; sorted so that two spellings of one
    # field (MLSERVER_HTTP_PORT, MLSERVER_http_port) resolve the same way every time.
    for prefix in reversed(prefixes):
        for name in sorted(environ):
            if name.startswith(prefix) and len(name) > len(prefix):
                found[name[len(prefix) :].lower()] = (name, environ[name])
    return found


def _parse_env_value(raw: str, type_: Any, source: str) -> Any:
    """A variable's text as the value to convert: JSON for lists, dicts and nested settings."""
    info = msgspec.inspect.type_info(type_)
    members = info.types if isinstance(info, msgspec.inspect.UnionType) else (info,)
    if any(isinstance(member, _COMPLEX_TYPES) for member in members):
        try:
            return msgspec.json.decode(raw)
        except msgspec.DecodeError as exc:
            # pydantic-settings keeps the text when the field also accepts a string
            # (``logging_settings`` is a path or a dict).
            if any(isinstance(member, msgspec.inspect.StrType) for member in members):
                return raw
            raise SettingsError(f"Invalid settings in {source}: {exc}") from exc
    if any(isinstance(member, msgspec.inspect.BoolType) for member in members):
        word = raw.strip().lower()
        if word in _TRUE_WORDS:
            return True
        if word in _FALSE_WORDS:
            return False
    return raw


def _resolve_uri(uri: str, folder: str) -> str:
    # Remote URIs (s3://, gs://, ...) are left alone; the runtime or an init container
    # fetches them. Local paths are taken relative to the settings file, as MLServer does.
    if "://" in uri or os.path.isabs(uri):
        return uri
    return os.path.normpath(os.path.join(folder, uri))

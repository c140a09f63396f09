"""Reading :class:`Settings` and :class:`ModelSettings` from files and environment variables.

This follows MLServer 1.7 so that its model repositories and its Seldon Core / KServe deployments
work unchanged:

- ``settings.json`` and ``model-settings.json`` are decoded in *lax* mode, as pydantic does:
  ``"debug": "true"`` is ``True`` and ``"http_port": "9080"`` is ``9080``.
  Boolean words are pydantic's: ``"yes"``/``"no"``, ``"on"``/``"off"``, ``"1"``/``"0"`` too.
- Fields MLServer has and inferkit does not implement (``kafka_enabled``, ``cache_enabled``,
  ``warm_workers``, ...: :data:`UNIMPLEMENTED`) are accepted, and keys neither knows (typos)
  are ignored; both are reported as one message each through the ``warnings`` list (naming the
  file or variable, the field, and what inferkit does instead or the name that was probably
  meant), so the caller can log them once.
- Server settings are overridden by ``INFERKIT_<FIELD>`` and, for drop-in use,
  ``MLSERVER_<FIELD>`` environment variables (``INFERKIT_`` wins). Lists, dicts and nested
  settings are given as JSON (``MLSERVER_CORS_SETTINGS='{"allow_origins": ["*"]}'``).
- ``MLSERVER_MODEL_<FIELD>`` variables never touch a model read from a file. They describe one
  model on their own, the single-model deployment of Seldon Core and KServe; see
  :func:`model_settings_from_env`.

The environment is always passed in as a mapping: nothing here reads ``os.environ``.
"""

from __future__ import annotations

import difflib
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any, TypeVar

import msgspec

from .errors import SettingsError
from .settings import ModelParameters, ModelSettings, Settings

__all__ = [
    "LOG_LEVELS",
    "MODEL_ENV_PREFIXES",
    "MODEL_SETTINGS_FILENAME",
    "SETTINGS_ENV_PREFIXES",
    "SETTINGS_FILENAME",
    "UNIMPLEMENTED",
    "check_log_level",
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

_NO_KAFKA = "no Kafka server; REST and gRPC only"
_NO_CACHE = "no response cache; requests always run the model"
_NO_POOLS = "no shared inference pools; each model has its own workers"
_ONE_REPOSITORY = "the repository is always the folder tree under model_repository_root"

#: MLServer 1.7 settings that inferkit accepts and does not implement, by the Struct that would
#: hold them, with what inferkit does instead. Each one set in a file or variable is named in a
#: warning; set to ``false`` or ``null`` it asks for nothing and is not mentioned.
UNIMPLEMENTED: Mapping[tuple[type[msgspec.Struct], str], str] = {
    (Settings, "kafka_enabled"): _NO_KAFKA,
    (Settings, "kafka_servers"): _NO_KAFKA,
    (Settings, "kafka_topic_input"): _NO_KAFKA,
    (Settings, "kafka_topic_output"): _NO_KAFKA,
    (Settings, "cache_enabled"): _NO_CACHE,
    (Settings, "cache_size"): _NO_CACHE,
    (Settings, "metrics_dir"): "no metrics folder; parallel workers send their metrics to the"
    " server process",
    (Settings, "model_repository_implementation"): _ONE_REPOSITORY,
    (Settings, "model_repository_implementation_args"): _ONE_REPOSITORY,
    (ModelSettings, "cache_enabled"): _NO_CACHE,
    (ModelSettings, "warm_workers"): "workers load the model when they start; deprecated in"
    " MLServer too",
    (ModelParameters, "inference_pool_gid"): _NO_POOLS,
    (ModelParameters, "autogenerate_inference_pool_gid"): _NO_POOLS,
}

#: The log levels ``log_level`` and ``--log-level`` accept (in any case).
LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")


def load_settings(
    folder: str | Path | None,
    environ: Mapping[str, str],
    *,
    warnings: list[str] | None = None,
) -> Settings:
    """Server settings from ``folder/settings.json`` (if present), then the environment.

    ``model_repository_root`` defaults to ``folder``; a relative root given in the file is taken
    relative to ``folder``. A warning for each field inferkit does not implement (in the file or
    a variable) and each unknown key in the file is appended to ``warnings`` when it is given.
    Raises :class:`SettingsError` naming the file (or the variable) and the field when a value
    does not fit.
    """
    data: dict[str, Any] = {}
    source = "defaults"
    notes: list[str] = []
    if folder is not None:
        path = Path(folder, SETTINGS_FILENAME)
        if path.is_file():
            source = str(path)
            data = _check_keys(_read_json_object(path), Settings, source, notes)
    settings = _convert(data, Settings, source)
    check_log_level(settings.log_level, source)

    overrides = _env_overrides(Settings, environ, SETTINGS_ENV_PREFIXES)
    env = _env_by_field(environ, SETTINGS_ENV_PREFIXES)
    if "log_level" in overrides:
        source = f"environment variable {env['log_level'][0]}"
        check_log_level(overrides["log_level"], source, at="")
    notes.extend(_unimplemented_in_env(env, Settings))
    notes.extend(_misspelt_in_env(env))
    if warnings is not None:
        warnings.extend(notes)
    if folder is not None and "model_repository_root" not in overrides:
        root = settings.model_repository_root if "model_repository_root" in data else "."
        overrides["model_repository_root"] = os.path.normpath(os.path.join(folder, root))
    return msgspec.structs.replace(settings, **overrides)


def load_model_settings(
    path: str | Path,
    *,
    warnings: list[str] | None = None,
) -> ModelSettings:
    """One model version's settings from its ``model-settings.json``.

    As MLServer does: ``name`` defaults to the folder's name and ``parameters.uri`` to the folder
    itself; a relative ``uri`` is resolved against the folder. ``folder`` is set to the file's
    (absolute) folder. Environment variables do not apply here (in MLServer 1.7 a file-based
    model never reads ``MLSERVER_MODEL_*`` either). A warning for each field inferkit does not
    implement and each unknown key is appended to ``warnings`` when it is given.
    """
    path = Path(os.path.abspath(path))
    notes: list[str] = []
    data = _check_keys(_read_json_object(path), ModelSettings, str(path), notes)
    settings = _convert(data, ModelSettings, str(path))
    if warnings is not None:
        warnings.extend(notes)

    folder = str(path.parent)
    parameters = settings.parameters or ModelParameters()
    uri = _resolve_uri(parameters.uri, folder) if parameters.uri else folder
    return msgspec.structs.replace(
        settings,
        name=settings.name or path.parent.name,
        parameters=msgspec.structs.replace(parameters, uri=uri),
        folder=folder,
    )


def model_settings_from_env(
    environ: Mapping[str, str], *, warnings: list[str] | None = None
) -> ModelSettings | None:
    """The single model described by ``MLSERVER_MODEL_*`` / ``INFERKIT_MODEL_*`` variables.

    Seldon Core and KServe configure a one-model server this way (``MLSERVER_MODEL_NAME``,
    ``MLSERVER_MODEL_IMPLEMENTATION``, ``MLSERVER_MODEL_URI``, ...). As in MLServer, the
    ``parameters`` fields are top-level variables too (``MLSERVER_MODEL_URI``, not
    ``MLSERVER_MODEL_PARAMETERS``) and there is no model unless an implementation is set.
    Unlike MLServer, which then serves a model named ``''`` that no URL can reach, a missing
    name is an error. Variables setting fields inferkit does not implement
    (``MLSERVER_MODEL_WARM_WORKERS``) are named in ``warnings`` when it is given.
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
    if warnings is not None:
        env = _env_by_field(environ, MODEL_ENV_PREFIXES)
        warnings.extend(_unimplemented_in_env(env, ModelSettings, ModelParameters))
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


def _check_keys(
    data: dict[str, Any], struct_type: type[msgspec.Struct], source: str, notes: list[str]
) -> dict[str, Any]:
    """``data`` with pydantic's boolean words made booleans; unknown and unimplemented keys
    (at any depth) are described in ``notes``."""
    walked: dict[str, Any] = _walk(data, msgspec.inspect.type_info(struct_type), "", source, notes)
    return walked


def _walk(data: Any, info: msgspec.inspect.Type, prefix: str, source: str, notes: list[str]) -> Any:
    members = info.types if isinstance(info, msgspec.inspect.UnionType) else (info,)
    if isinstance(data, str) and any(isinstance(m, msgspec.inspect.BoolType) for m in members):
        word = data.strip().lower()
        return True if word in _TRUE_WORDS else False if word in _FALSE_WORDS else data
    for member in members:
        if isinstance(member, msgspec.inspect.ListType) and isinstance(data, list):
            return [
                _walk(item, member.item_type, f"{prefix[:-1]}[{index}].", source, notes)
                for index, item in enumerate(data)
            ]
        if isinstance(member, msgspec.inspect.StructType) and isinstance(data, dict):
            return _walk_struct(data, member, prefix, source, notes)
    return data


def _walk_struct(
    data: dict[str, Any],
    info: msgspec.inspect.StructType,
    prefix: str,
    source: str,
    notes: list[str],
) -> dict[str, Any]:
    fields = {field.encode_name: field for field in info.fields}
    unimplemented = {name for cls, name in UNIMPLEMENTED if cls is info.cls}
    walked: dict[str, Any] = {}
    for key, value in data.items():
        name = f"{prefix}{key}"
        if key in unimplemented and not _is_off(value):
            notes.append(_unimplemented_note(name, source, UNIMPLEMENTED[info.cls, key]))
        elif key not in fields and key not in unimplemented:
            close = difflib.get_close_matches(key, [*fields, *unimplemented], n=1)
            hint = f"; did you mean {prefix + close[0]!r}?" if close else ""
            notes.append(f"Ignoring unknown setting {name!r} in {source}{hint}")
        # Only inferkit's fields go on to msgspec (some unimplemented ones are fields too).
        if key in fields:
            walked[key] = _walk(value, fields[key].type, f"{name}.", source, notes)
    return walked


def _unimplemented_in_env(
    env: dict[str, tuple[str, str]], *struct_types: type[msgspec.Struct]
) -> list[str]:
    """Warnings for the variables in ``env`` that set a field inferkit does not implement."""
    notes = []
    for struct_type in struct_types:
        for cls, key in UNIMPLEMENTED:
            if cls is struct_type and key in env and not _is_off(env[key][1]):
                source = f"environment variable {env[key][0]}"
                notes.append(_unimplemented_note(key, source, UNIMPLEMENTED[cls, key]))
    return notes


def _misspelt_in_env(env: dict[str, tuple[str, str]]) -> list[str]:
    """Warnings for ``INFERKIT_*`` variables that look like a misspelt setting.

    Only our own prefix, and only with a close match: other software sets ``MLSERVER_*``
    variables of its own (``MLSERVER_MODELS_DIR`` in MLServer's image), and ``INFERKIT_*``
    variables that name no setting may belong to tooling.
    """
    known = [field.name for field in msgspec.structs.fields(Settings)]
    known += [name for cls, name in UNIMPLEMENTED if cls is Settings]
    notes = []
    for key, (variable, _) in sorted(env.items()):
        if not variable.startswith(SETTINGS_ENV_PREFIXES[0]) or key in known:
            continue
        if variable.startswith(MODEL_ENV_PREFIXES[0]):
            continue  # the single model's variables
        close = difflib.get_close_matches(key, known, n=1)
        if close:
            meant = f"{SETTINGS_ENV_PREFIXES[0]}{close[0].upper()}"
            notes.append(f"Ignoring unknown environment variable {variable}; did you mean {meant}?")
    return notes


def _unimplemented_note(name: str, source: str, instead: str) -> str:
    return f"Ignoring {name!r} in {source}: inferkit does not implement it ({instead})"


def _is_off(value: Any) -> bool:
    # Set to false or null (in any spelling pydantic takes), a field asks for nothing.
    if isinstance(value, str):
        return value.strip().lower() in _FALSE_WORDS or value.strip().lower() in ("", "null")
    return value is None or value is False


def check_log_level(level: str, source: str, at: str = " - at `$.log_level`") -> None:
    """Raise :class:`SettingsError` naming ``source`` unless ``level`` is in :data:`LOG_LEVELS`.

    Checked when settings are read, so that a bad level is one line naming where it came from
    rather than logging's ValueError once the server is half started.
    """
    if level.upper() not in LOG_LEVELS:
        raise SettingsError(
            f"Invalid settings in {source}: Expected one of {', '.join(LOG_LEVELS)},"
            f" got {level!r}{at}"
        )


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

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from inferkit.errors import SettingsError
from inferkit.settings import CORSSettings, ModelParameters, ModelSettings, Settings
from inferkit.settings_loader import (
    UNIMPLEMENTED,
    load_model_settings,
    load_settings,
    model_settings_from_env,
)

# The seed multi-model example, verbatim (MLServer's docs/examples/mms).
SEED_SETTINGS = """{
    "debug": "true",
    "http_port": 9080,
    "grpc_port": 9081,
    "metrics_port": 9082
}
"""
SEED_MUSHROOM = """{
    "name": "mushroom_xgboost",
    "implementation": "mlserver_xgboost.XGBoostModel",
    "parameters": {
        "uri": "./model.json",
        "version": "v2.0.0"
    }
}
"""


def write(path: Path, content: str | dict[str, Any]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(content if isinstance(content, str) else json.dumps(content))
    return path


# -- load_settings -----------------------------------------------------------------------------


def test_seed_settings_load_with_string_debug(tmp_path: Path) -> None:
    write(tmp_path / "settings.json", SEED_SETTINGS)
    warnings: list[str] = []

    settings = load_settings(tmp_path, {}, warnings=warnings)

    assert settings == Settings(
        debug=True,
        http_port=9080,
        grpc_port=9081,
        metrics_port=9082,
        model_repository_root=str(tmp_path),
    )
    assert warnings == []


def test_no_folder_gives_defaults() -> None:
    assert load_settings(None, {}) == Settings()


def test_folder_without_settings_file_is_the_repository_root(tmp_path: Path) -> None:
    assert load_settings(tmp_path, {}) == Settings(model_repository_root=str(tmp_path))


@pytest.mark.parametrize(
    ("root", "expected"),
    [
        ("models", "{folder}/models"),
        ("./models/../other", "{folder}/other"),
        ("/srv/models", "/srv/models"),
    ],
)
def test_repository_root_from_file_is_relative_to_the_folder(
    tmp_path: Path, root: str, expected: str
) -> None:
    write(tmp_path / "settings.json", {"model_repository_root": root})
    settings = load_settings(tmp_path, {})
    assert settings.model_repository_root == expected.format(folder=tmp_path)


@pytest.mark.parametrize(
    ("environ", "expected"),
    [
        ({"MLSERVER_HTTP_PORT": "9000"}, {"http_port": 9000}),
        ({"INFERKIT_HTTP_PORT": "9001"}, {"http_port": 9001}),
        ({"MLSERVER_HTTP_PORT": "9000", "INFERKIT_HTTP_PORT": "9001"}, {"http_port": 9001}),
        ({"MLSERVER_Http_Port": "9002"}, {"http_port": 9002}),
        ({"MLSERVER_DEBUG": "true"}, {"debug": True}),
        ({"MLSERVER_DEBUG": "yes"}, {"debug": True}),
        ({"INFERKIT_GZIP_ENABLED": "off"}, {"gzip_enabled": False}),
        ({"MLSERVER_PARALLEL_WORKERS_TIMEOUT": "2.5"}, {"parallel_workers_timeout": 2.5}),
        ({"MLSERVER_GRPC_MAX_MESSAGE_LENGTH": "1024"}, {"grpc_max_message_length": 1024}),
        ({"MLSERVER_EXTENSIONS": '["a", "b"]'}, {"extensions": ["a", "b"]}),
        (
            {"MLSERVER_CORS_SETTINGS": '{"allow_origins": ["*"], "max_age": "60"}'},
            {"cors_settings": CORSSettings(allow_origins=["*"], max_age=60)},
        ),
        # A path or a dict: JSON when it parses, the text otherwise (as pydantic-settings does).
        ({"MLSERVER_LOGGING_SETTINGS": "logging.json"}, {"logging_settings": "logging.json"}),
        ({"MLSERVER_LOGGING_SETTINGS": '{"version": 1}'}, {"logging_settings": {"version": 1}}),
        ({"MLSERVER_SERVER_NAME": "42"}, {"server_name": "42"}),
        ({"MLSERVER_MODEL_REPOSITORY_ROOT": "/models"}, {"model_repository_root": "/models"}),
        # Variables for other things are not settings, even when they share the prefix.
        ({"MLSERVER_MODEL_NAME": "iris", "MLSERVER_": "x", "HTTP_PORT": "1"}, {}),
    ],
)
def test_environment_overrides(environ: dict[str, str], expected: dict[str, Any]) -> None:
    assert load_settings(None, environ) == Settings(**expected)


def test_environment_overrides_the_file_and_the_folder(tmp_path: Path) -> None:
    write(tmp_path / "settings.json", SEED_SETTINGS)
    environ = {"MLSERVER_HTTP_PORT": "7000", "MLSERVER_MODEL_REPOSITORY_ROOT": "/models"}

    settings = load_settings(tmp_path, environ)

    assert (settings.http_port, settings.grpc_port) == (7000, 9081)
    assert settings.model_repository_root == "/models"


def test_unknown_and_unimplemented_fields_are_reported_not_rejected(tmp_path: Path) -> None:
    path = write(
        tmp_path / "settings.json",
        {
            "kafka_enabled": True,
            "http_prot": 9090,
            "http_port": 9080,
            "cache_enabled": "yes",
            "cors_settings": {"allow_origins": ["*"], "allow_origin": ["x"]},
            "zzz": 1,
        },
    )
    warnings: list[str] = []

    settings = load_settings(tmp_path, {}, warnings=warnings)

    assert settings.http_port == 9080
    assert warnings == [
        f"Ignoring 'kafka_enabled' in {path}: inferkit does not implement it"
        " (no Kafka server; REST and gRPC only)",
        f"Ignoring unknown setting 'http_prot' in {path}; did you mean 'http_port'?",
        f"Ignoring 'cache_enabled' in {path}: inferkit does not implement it"
        " (no response cache; requests always run the model)",
        f"Ignoring unknown setting 'cors_settings.allow_origin' in {path};"
        " did you mean 'cors_settings.allow_origins'?",
        f"Ignoring unknown setting 'zzz' in {path}",
    ]


def test_unimplemented_fields_set_off_are_not_mentioned(tmp_path: Path) -> None:
    write(tmp_path / "settings.json", {"kafka_enabled": False, "cache_enabled": "off"})
    warnings: list[str] = []
    load_settings(tmp_path, {"MLSERVER_CACHE_ENABLED": "false"}, warnings=warnings)
    assert warnings == []


def test_unimplemented_fields_in_the_environment_are_reported() -> None:
    warnings: list[str] = []
    environ = {"MLSERVER_KAFKA_ENABLED": "true", "INFERKIT_METRICS_DIR": "/m", "MLSERVER_X": "1"}

    load_settings(None, environ, warnings=warnings)

    assert warnings == [
        "Ignoring 'kafka_enabled' in environment variable MLSERVER_KAFKA_ENABLED:"
        " inferkit does not implement it (no Kafka server; REST and gRPC only)",
        "Ignoring 'metrics_dir' in environment variable INFERKIT_METRICS_DIR:"
        " inferkit does not implement it (no metrics folder; parallel workers send their"
        " metrics to the server process)",
    ]


def test_every_unimplemented_field_is_one_mlserver_has_and_inferkit_ignores() -> None:
    # MLServer 1.7's fields (mlserver/settings.py) that inferkit does not implement; batching
    # (max_batch_size, max_batch_time) is implemented and must not be listed.
    assert sorted((cls.__name__, name) for cls, name in UNIMPLEMENTED) == [
        ("ModelParameters", "autogenerate_inference_pool_gid"),
        ("ModelParameters", "inference_pool_gid"),
        ("ModelSettings", "cache_enabled"),
        ("ModelSettings", "warm_workers"),
        ("Settings", "cache_enabled"),
        ("Settings", "cache_size"),
        ("Settings", "kafka_enabled"),
        ("Settings", "kafka_servers"),
        ("Settings", "kafka_topic_input"),
        ("Settings", "kafka_topic_output"),
        ("Settings", "metrics_dir"),
        ("Settings", "model_repository_implementation"),
        ("Settings", "model_repository_implementation_args"),
    ]
    assert all(UNIMPLEMENTED.values())


@pytest.mark.parametrize(
    ("word", "expected"),
    [
        ("yes", True),
        ("no", False),
        ("on", True),
        ("off", False),
        ("1", True),
        ("0", False),
        ("True", True),
        (" FALSE ", False),
    ],
)
def test_boolean_words_as_pydantic_reads_them(tmp_path: Path, word: str, expected: bool) -> None:
    write(
        tmp_path / "settings.json",
        {"debug": word, "cors_settings": {"allow_credentials": word}},
    )
    settings = load_settings(tmp_path, {})
    assert settings.debug is expected
    assert settings.cors_settings is not None
    assert settings.cors_settings.allow_credentials is expected


@pytest.mark.parametrize("level", ["debug", "INFO", "Warning", "ERROR", "critical"])
def test_log_levels(tmp_path: Path, level: str) -> None:
    write(tmp_path / "settings.json", {"log_level": level})
    assert load_settings(tmp_path, {}).log_level == level


def test_invalid_log_level_names_the_file_or_variable(tmp_path: Path) -> None:
    path = write(tmp_path / "settings.json", {"log_level": "verbose"})
    with pytest.raises(SettingsError) as info:
        load_settings(tmp_path, {})
    assert info.value.message == (
        f"Invalid settings in {path}: Expected one of DEBUG, INFO, WARNING, ERROR, CRITICAL,"
        " got 'verbose' - at `$.log_level`"
    )
    with pytest.raises(SettingsError) as info:
        load_settings(None, {"MLSERVER_LOG_LEVEL": "loud"})
    assert info.value.message == (
        "Invalid settings in environment variable MLSERVER_LOG_LEVEL:"
        " Expected one of DEBUG, INFO, WARNING, ERROR, CRITICAL, got 'loud'"
    )


@pytest.mark.parametrize(
    ("environ", "expected"),
    [
        ({}, "file-collector:4317"),
        ({"MLSERVER_TRACING_SERVER": "mlserver-collector:4317"}, "mlserver-collector:4317"),
        (
            {
                "MLSERVER_TRACING_SERVER": "a:1",
                "INFERKIT_TRACING_SERVER": "inferkit-collector:4317",
            },
            "inferkit-collector:4317",
        ),
    ],
)
def test_tracing_server_is_a_setting(
    tmp_path: Path, environ: dict[str, str], expected: str
) -> None:
    write(tmp_path / "settings.json", {"tracing_server": "file-collector:4317"})
    warnings: list[str] = []

    settings = load_settings(tmp_path, environ, warnings=warnings)

    assert (settings.tracing_server, warnings) == (expected, [])
    assert load_settings(None, {}).tracing_server is None


@pytest.mark.parametrize(
    ("content", "error"),
    [
        ('{"debug": true,}', "JSON is malformed: trailing comma in object (byte 15)"),
        ("[1, 2]", "Expected `object`, got `array`"),
        ('{"http_port": "http"}', "Expected `int`, got `str` - at `$.http_port`"),
        ('{"debug": "maybe"}', "Expected `bool`, got `str` - at `$.debug`"),
        (
            '{"cors_settings": {"allow_origins": "*"}}',
            "Expected `array`, got `str` - at `$.cors_settings.allow_origins`",
        ),
    ],
)
def test_invalid_file_names_file_and_field(tmp_path: Path, content: str, error: str) -> None:
    path = write(tmp_path / "settings.json", content)
    with pytest.raises(SettingsError) as info:
        load_settings(tmp_path, {})
    assert info.value.message == f"Invalid settings in {path}: {error}"
    assert info.value.code == "INVALID_SETTINGS"


@pytest.mark.parametrize(
    ("environ", "error"),
    [
        (
            {"MLSERVER_HTTP_PORT": "eighty"},
            "Invalid settings in environment variable MLSERVER_HTTP_PORT:"
            " Expected `int`, got `str`",
        ),
        (
            {"INFERKIT_EXTENSIONS": "a,b"},
            "Invalid settings in environment variable INFERKIT_EXTENSIONS:"
            " JSON is malformed: invalid character (byte 0)",
        ),
        (
            {"MLSERVER_CORS_SETTINGS": '{"max_age": "long"}'},
            "Invalid settings in environment variable MLSERVER_CORS_SETTINGS:"
            " Expected `int`, got `str` - at `$.max_age`",
        ),
    ],
)
def test_invalid_environment_names_variable(environ: dict[str, str], error: str) -> None:
    with pytest.raises(SettingsError) as info:
        load_settings(None, environ)
    assert info.value.message == error


# -- load_model_settings -----------------------------------------------------------------------


def test_seed_model_settings(tmp_path: Path) -> None:
    folder = tmp_path / "models" / "mushroom_xgboost"
    path = write(folder / "model-settings.json", SEED_MUSHROOM)

    settings = load_model_settings(path)

    assert settings == ModelSettings(
        name="mushroom_xgboost",
        implementation="mlserver_xgboost.XGBoostModel",
        parameters=ModelParameters(uri=str(folder / "model.json"), version="v2.0.0"),
        folder=str(folder),
    )
    assert settings.version == "v2.0.0"


@pytest.mark.parametrize(
    ("parameters", "uri"),
    [
        (None, "{tmp}/iris"),
        ({"version": "1"}, "{tmp}/iris"),
        ({"uri": "model.joblib"}, "{tmp}/iris/model.joblib"),
        ({"uri": "./model.joblib"}, "{tmp}/iris/model.joblib"),
        ({"uri": "../shared/model.joblib"}, "{tmp}/shared/model.joblib"),
        ({"uri": "/abs/model.joblib"}, "/abs/model.joblib"),
        ({"uri": "s3://bucket/model.joblib"}, "s3://bucket/model.joblib"),
    ],
)
def test_uri_is_resolved_against_the_folder(
    tmp_path: Path, parameters: dict[str, str] | None, uri: str
) -> None:
    folder = tmp_path / "iris"
    content: dict[str, Any] = {"implementation": "model.Iris"}
    if parameters is not None:
        content["parameters"] = parameters
    settings = load_model_settings(write(folder / "model-settings.json", content))

    assert settings.parameters is not None
    assert settings.parameters.uri == uri.format(tmp=tmp_path)


def test_name_defaults_to_the_folder_name(tmp_path: Path) -> None:
    path = write(tmp_path / "iris" / "model-settings.json", {"implementation": "model.Iris"})
    assert load_model_settings(path).name == "iris"


def test_relative_path_is_made_absolute(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    write(tmp_path / "iris" / "model-settings.json", {"implementation": "model.Iris"})
    monkeypatch.chdir(tmp_path)

    settings = load_model_settings("iris/model-settings.json")

    assert settings.folder == str(tmp_path / "iris")


def test_model_settings_are_lax_and_report_unknown_fields(tmp_path: Path) -> None:
    path = write(
        tmp_path / "m" / "model-settings.json",
        {
            "name": "m",
            "implementaton": "model.M",
            "max_batch_size": "4",
            "max_batch_time": 0.01,
            "warm_workers": True,
            "cache_enabled": False,
            "inputs": [{"name": "x", "datatype": "FP32", "shape": [-1], "tags": []}],
            "parameters": {
                "inference_pool_gid": "g",
                "verison": "2",
                "extra": {"anything": 1},
            },
        },
    )
    warnings: list[str] = []

    settings = load_model_settings(path, warnings=warnings)

    assert settings.max_batch_size == 4
    assert settings.implementation == ""
    unimplemented = f"in {path}: inferkit does not implement it"
    assert warnings == [
        f"Ignoring unknown setting 'implementaton' in {path}; did you mean 'implementation'?",
        f"Ignoring 'warm_workers' {unimplemented}"
        " (workers load the model when they start; deprecated in MLServer too)",
        f"Ignoring unknown setting 'inputs[0].tags' in {path}",
        f"Ignoring 'parameters.inference_pool_gid' {unimplemented}"
        " (no shared inference pools; each model has its own workers)",
        f"Ignoring unknown setting 'parameters.verison' in {path};"
        " did you mean 'parameters.version'?",
    ]


def test_model_settings_environment_does_not_apply_to_files(tmp_path: Path) -> None:
    # load_model_settings takes no environment at all: MLServer 1.7 applies MLSERVER_MODEL_*
    # only to the single model configured from the environment.
    path = write(tmp_path / "m" / "model-settings.json", {"implementation": "model.M"})
    assert load_model_settings(path).max_batch_size == 0


def test_invalid_model_settings_name_file_and_field(tmp_path: Path) -> None:
    path = write(tmp_path / "m" / "model-settings.json", '{"parameters": {"version": 2.0}}')
    with pytest.raises(SettingsError) as info:
        load_model_settings(path)
    assert info.value.message == (
        f"Invalid settings in {path}: Expected `str | null`, got `float`"
        " - at `$.parameters.version`"
    )


def test_missing_model_settings_file(tmp_path: Path) -> None:
    path = tmp_path / "nothing" / "model-settings.json"
    with pytest.raises(SettingsError) as info:
        load_model_settings(path)
    assert info.value.message == f"Cannot read settings file {path}: No such file or directory"


# -- model_settings_from_env -------------------------------------------------------------------


@pytest.mark.parametrize(
    "environ",
    [
        {},
        {"MLSERVER_MODEL_NAME": "iris", "MLSERVER_MODEL_URI": "/mnt/models"},
        {"MLSERVER_MODEL_IMPLEMENTATION": ""},
    ],
)
def test_no_model_from_env_without_an_implementation(environ: dict[str, str]) -> None:
    assert model_settings_from_env(environ) is None


def test_model_from_env_as_seldon_core_and_kserve_set_it() -> None:
    environ = {
        "MLSERVER_MODEL_NAME": "iris",
        "MLSERVER_MODEL_IMPLEMENTATION": "mlserver_sklearn.SKLearnModel",
        "MLSERVER_MODEL_URI": "/mnt/models",
        "MLSERVER_MODEL_VERSION": "v1",
        "MLSERVER_MODEL_EXTRA": '{"predict_proba": true}',
        "MLSERVER_MODEL_MAX_BATCH_SIZE": "8",
        "MLSERVER_MODEL_INPUTS": '[{"name": "x", "datatype": "FP32", "shape": [-1, 4]}]',
        "MLSERVER_HTTP_PORT": "8080",
    }

    settings = model_settings_from_env(environ)

    assert settings is not None
    assert settings == ModelSettings(
        name="iris",
        implementation="mlserver_sklearn.SKLearnModel",
        max_batch_size=8,
        inputs=settings.inputs,
        parameters=ModelParameters(uri="/mnt/models", version="v1", extra={"predict_proba": True}),
    )
    assert [(i.name, i.datatype, i.shape) for i in settings.inputs] == [("x", "FP32", [-1, 4])]


def test_inferkit_model_variables_win() -> None:
    environ = {
        "MLSERVER_MODEL_NAME": "a",
        "INFERKIT_MODEL_NAME": "b",
        "MLSERVER_MODEL_IMPLEMENTATION": "model.A",
        "inferkit_model_implementation": "not a prefix match",
    }
    settings = model_settings_from_env(environ)
    assert settings is not None
    assert (settings.name, settings.implementation) == ("b", "model.A")


def test_model_from_env_needs_a_name() -> None:
    with pytest.raises(SettingsError) as info:
        model_settings_from_env({"MLSERVER_MODEL_IMPLEMENTATION": "model.A"})
    assert info.value.message == (
        "Invalid settings in the environment: a model implementation is set but no name"
        " (set MLSERVER_MODEL_NAME or INFERKIT_MODEL_NAME)"
    )


def test_model_from_env_wrong_type() -> None:
    environ = {
        "MLSERVER_MODEL_NAME": "a",
        "MLSERVER_MODEL_IMPLEMENTATION": "model.A",
        "MLSERVER_MODEL_MAX_BATCH_TIME": "soon",
    }
    with pytest.raises(SettingsError) as info:
        model_settings_from_env(environ)
    assert info.value.message == (
        "Invalid settings in environment variable MLSERVER_MODEL_MAX_BATCH_TIME:"
        " Expected `float`, got `str`"
    )


def test_model_from_env_reports_unimplemented_fields() -> None:
    warnings: list[str] = []
    environ = {
        "MLSERVER_MODEL_NAME": "m",
        "MLSERVER_MODEL_IMPLEMENTATION": "model.M",
        "MLSERVER_MODEL_WARM_WORKERS": "true",
        "MLSERVER_MODEL_INFERENCE_POOL_GID": "g",
    }

    model = model_settings_from_env(environ, warnings=warnings)

    assert model is not None and model.name == "m"
    assert warnings == [
        "Ignoring 'warm_workers' in environment variable MLSERVER_MODEL_WARM_WORKERS:"
        " inferkit does not implement it"
        " (workers load the model when they start; deprecated in MLServer too)",
        "Ignoring 'inference_pool_gid' in environment variable"
        " MLSERVER_MODEL_INFERENCE_POOL_GID: inferkit does not implement it"
        " (no shared inference pools; each model has its own workers)",
    ]


def test_the_settings_page_lists_every_unimplemented_field() -> None:
    page = (Path(__file__).parents[1] / "docs" / "settings.md").read_text()
    for cls, name in UNIMPLEMENTED:
        prefix = "parameters." if cls is ModelParameters else ""
        assert f"`{prefix}{name}`" in page


def test_misspelt_inferkit_variables_are_reported() -> None:
    warnings: list[str] = []
    environ = {
        "INFERKIT_HTTP_PROT": "9000",
        "INFERKIT_NOX_PYTHON": "3.12",  # tooling's, like nothing we know: not ours to judge
        "INFERKIT_MODEL_NAM": "m",  # the single model's prefix
        "MLSERVER_MODELS_DIR": "/mnt/models",  # MLServer's image sets it
    }
    load_settings(None, environ, warnings=warnings)
    assert warnings == [
        "Ignoring unknown environment variable INFERKIT_HTTP_PROT; did you mean INFERKIT_HTTP_PORT?"
    ]

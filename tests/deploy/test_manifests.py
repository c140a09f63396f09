"""The manifests in ``deploy/`` promise what the image does and inferkit reads.

Every container running inferkit's image is checked against the image contract
(:mod:`inferkit.deploy.image`: command, ports, readiness path, user) and every ``MLSERVER_*`` /
``INFERKIT_*`` variable it sets against the settings loader (the prefixes it reads and the fields
they set, then the values inferkit actually loads from that environment). A renamed port,
setting or variable fails here instead of in a cluster.
"""

from __future__ import annotations

import importlib
import pkgutil
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import msgspec
import pytest
import yaml
from packaging.specifiers import SpecifierSet

import inferkit.runtimes
from inferkit.deploy.image import COMMAND, METRICS_PATH, MODEL_DIR, PORTS, READY_PATH, USER
from inferkit.repository import IMPLEMENTATION_ALIASES
from inferkit.settings import ModelParameters, ModelSettings, Settings
from inferkit.settings_loader import (
    MODEL_ENV_PREFIXES,
    SETTINGS_ENV_PREFIXES,
    load_settings,
    model_settings_from_env,
)

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
IMAGE = "inferkit:latest"

#: Container port names by the role of the image port they must be.
PORT_ROLES = {
    "http1": "http",  # Knative's name for an HTTP/1 serving port
    "server-http": "http",  # Seldon's names for the inference server's ports
    "server-grpc": "grpc",
    "server-metrics": "metrics",
}
PROBES = ("readinessProbe", "livenessProbe", "startupProbe")


def _documents(path: Path) -> list[dict[str, Any]]:
    return [doc for doc in yaml.safe_load_all(path.read_text()) if doc]


MANIFESTS = {
    path.relative_to(DEPLOY).as_posix(): _documents(path) for path in sorted(DEPLOY.rglob("*.yaml"))
}


def _one(file: str, kind: str) -> dict[str, Any]:
    (doc,) = [d for d in MANIFESTS[file] if d["kind"] == kind]
    return doc


def _containers(node: Any) -> Iterator[dict[str, Any]]:
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "containers":
                yield from value
            else:
                yield from _containers(value)
    elif isinstance(node, list):
        for item in node:
            yield from _containers(item)


INFERKIT_CONTAINERS = [
    pytest.param(doc, container, id=f"{file}:{doc['kind']}")
    for file, docs in MANIFESTS.items()
    for doc in docs
    for container in _containers(doc)
    if container["image"] == IMAGE
]

SERVING_RUNTIME = _one("kserve/servingruntime.yaml", "ServingRuntime")
SERVER_CONFIG = _one("seldon/serverconfig.yaml", "ServerConfig")


def _env(container: dict[str, Any]) -> dict[str, str]:
    return {item["name"]: item["value"] for item in container.get("env", []) if "value" in item}


def _render(value: str, name: str, labels: dict[str, str]) -> str:
    """A KServe container template rendered as KServe does for an InferenceService."""
    value = value.replace("{{.Name}}", name)
    value = value.replace('{{index .Labels "modelClass"}}', labels.get("modelClass", ""))
    assert "{{" not in value, f"a template this test cannot render: {value}"
    return value


def _reads(variable: str) -> bool:
    """Whether the settings loader reads ``variable``: a prefix it takes and a field behind it."""
    for prefix in MODEL_ENV_PREFIXES:
        if variable.startswith(prefix):
            field = variable[len(prefix) :].lower()
            structs = (ModelSettings, ModelParameters)
            if any(field in {f.name for f in msgspec.structs.fields(s)} for s in structs):
                return True
    for prefix in SETTINGS_ENV_PREFIXES:
        if variable.startswith(prefix):
            field = variable[len(prefix) :].lower()
            return field in {f.name for f in msgspec.structs.fields(Settings)}
    return False


def _port_number(container: dict[str, Any], port: int | str) -> int:
    if isinstance(port, int):
        return port
    (number,) = [p["containerPort"] for p in container["ports"] if p["name"] == port]
    assert isinstance(number, int)
    return number


def test_every_manifest_is_a_resource_of_its_platform() -> None:
    kinds = {(f, d["apiVersion"], d["kind"]) for f, docs in MANIFESTS.items() for d in docs}
    assert kinds == {
        ("kserve/servingruntime.yaml", "serving.kserve.io/v1alpha1", "ServingRuntime"),
        ("kserve/inferenceservice.yaml", "serving.kserve.io/v1beta1", "InferenceService"),
        ("seldon/serverconfig.yaml", "mlops.seldon.io/v1alpha1", "ServerConfig"),
        ("seldon/server.yaml", "mlops.seldon.io/v1alpha1", "Server"),
        ("seldon/model.yaml", "mlops.seldon.io/v1alpha1", "Model"),
        ("knative/service.yaml", "serving.knative.dev/v1", "Service"),
    }
    # One inferkit container in each pod template: KServe's, Seldon's and Knative's.
    assert len(INFERKIT_CONTAINERS) == 3


@pytest.mark.parametrize(("doc", "container"), INFERKIT_CONTAINERS)
def test_the_container_runs_the_images_command(doc: dict[str, Any], container: Any) -> None:
    # `args` replaces the image's CMD and keeps its ENTRYPOINT, which turns Knative's PORT
    # into the HTTP port; a `command` would replace (and lose) it.
    assert container["args"] == list(COMMAND)
    assert "command" not in container


@pytest.mark.parametrize(("doc", "container"), INFERKIT_CONTAINERS)
def test_ports_are_the_images(doc: dict[str, Any], container: Any) -> None:
    declared = {PORT_ROLES[p["name"]]: p["containerPort"] for p in container["ports"]}
    assert all(declared[role] == PORTS[role] for role in declared)
    if doc["kind"] == "ServerConfig":
        assert declared == PORTS
    else:
        # Knative (KServe's Serverless mode too) routes to exactly one port per container.
        assert declared == {"http": PORTS["http"]}


@pytest.mark.parametrize(("doc", "container"), INFERKIT_CONTAINERS)
def test_probes_ask_the_ready_path_on_the_http_port(doc: dict[str, Any], container: Any) -> None:
    assert "readinessProbe" in container
    for probe in (container[name] for name in PROBES if name in container):
        assert probe["httpGet"]["path"] == READY_PATH
        assert _port_number(container, probe["httpGet"]["port"]) == PORTS["http"]


@pytest.mark.parametrize(("doc", "container"), INFERKIT_CONTAINERS)
def test_the_container_runs_as_the_images_user(doc: dict[str, Any], container: Any) -> None:
    context = container["securityContext"]
    assert f"{context['runAsUser']}:{context['runAsGroup']}" == USER
    assert context["runAsNonRoot"] is True


@pytest.mark.parametrize(("doc", "container"), INFERKIT_CONTAINERS)
def test_every_server_variable_is_one_inferkit_reads(doc: dict[str, Any], container: Any) -> None:
    env = {
        name: _render(value, "iris", {"modelClass": "mlserver_sklearn.SKLearnModel"})
        for name, value in _env(container).items()
    }
    ours = [name for name in env if name.startswith(("MLSERVER_", "INFERKIT_"))]
    assert [name for name in ours if not _reads(name)] == []
    # And the ports they set are the image's, as inferkit loads them.
    settings = load_settings(MODEL_DIR, env)
    assert (settings.http_port, settings.grpc_port) == (PORTS["http"], PORTS["grpc"])
    assert settings.metrics_port == PORTS["metrics"]
    assert settings.metrics_endpoint == METRICS_PATH


def test_the_variable_check_tells_read_variables_from_others() -> None:
    # MLServer's image reads MLSERVER_MODELS_DIR in its shell entrypoint; inferkit does not.
    assert not _reads("MLSERVER_MODELS_DIR")
    assert not _reads("MLSERVER_HTTP_PORTS")
    assert _reads("MLSERVER_HTTP_PORT") and _reads("INFERKIT_LOAD_MODELS_AT_STARTUP")
    assert _reads("MLSERVER_MODEL_URI") and _reads("MLSERVER_MODEL_IMPLEMENTATION")


# -- KServe -----------------------------------------------------------------------------------


def _runtime_container() -> dict[str, Any]:
    (container,) = SERVING_RUNTIME["spec"]["containers"]
    assert isinstance(container, dict)
    return container


def _builtin_runtimes() -> set[str]:
    modules = {m.name for m in pkgutil.iter_modules(inferkit.runtimes.__path__)}
    return modules - {"base"}


def _major_versions(extra: str) -> set[str]:
    """Major versions the ``extra`` of pyproject.toml allows for its library."""
    text = (ROOT / "pyproject.toml").read_text()
    match = re.search(rf'^{extra} = \["[A-Za-z0-9_.-]+([^"\]]+)"', text, re.MULTILINE)
    assert match, f"no {extra} extra in pyproject.toml"
    spec = SpecifierSet(match.group(1))
    return {str(m) for m in range(20) if any(f"{m}.{n}" in spec for n in (0, 5, 99))}


def test_the_runtime_offers_each_builtin_runtime_in_the_versions_the_extras_allow() -> None:
    formats = SERVING_RUNTIME["spec"]["supportedModelFormats"]
    # Custom models (a model repository) are the `inferkit` format.
    builtin = {f["name"] for f in formats} - {"inferkit"}
    assert builtin == _builtin_runtimes()
    assert builtin == {
        "sklearn",
        "xgboost",
        "lightgbm",
        "onnx",
        "catboost",
        "mlflow",
        "huggingface",
    }
    for name in builtin:
        versions = {f["version"] for f in formats if f["name"] == name}
        assert versions == _major_versions(name), name
    # Chosen by name only: a namespace's auto-selected runtime would win every service there.
    assert not any(f["autoSelect"] for f in formats)


def test_the_runtime_speaks_v2_and_says_where_metrics_are() -> None:
    spec = SERVING_RUNTIME["spec"]
    assert spec["protocolVersions"] == ["v2"]
    assert spec["annotations"]["prometheus.kserve.io/port"] == str(PORTS["metrics"])
    assert spec["annotations"]["prometheus.kserve.io/path"] == METRICS_PATH


@pytest.mark.parametrize(
    "implementation",
    ["mlserver_sklearn.SKLearnModel", "inferkit.runtimes.xgboost.XGBoostModel"],
)
def test_an_inference_service_is_one_model_named_after_it(implementation: str) -> None:
    env = {
        name: _render(value, "iris", {"modelClass": implementation})
        for name, value in _env(_runtime_container()).items()
    }
    model = model_settings_from_env(env)
    assert model is not None and model.parameters is not None
    assert (model.name, model.implementation) == ("iris", implementation)
    # KServe's storage initializer downloads storageUri to the image's model folder.
    assert model.parameters.uri == MODEL_DIR


def test_without_a_model_class_the_runtime_serves_the_repository_in_the_model_folder() -> None:
    env = {name: _render(value, "custom", {}) for name, value in _env(_runtime_container()).items()}
    assert model_settings_from_env(env) is None
    assert load_settings(MODEL_DIR, env).model_repository_root == MODEL_DIR


def test_the_example_inference_services_name_the_runtime_and_a_class_inferkit_has() -> None:
    formats = {f["name"] for f in SERVING_RUNTIME["spec"]["supportedModelFormats"]}
    for service in MANIFESTS["kserve/inferenceservice.yaml"]:
        model = service["spec"]["predictor"]["model"]
        assert model["runtime"] == SERVING_RUNTIME["metadata"]["name"]
        assert model["protocolVersion"] == "v2"
        assert model["modelFormat"]["name"] in formats
        label = service["metadata"].get("labels", {}).get("modelClass")
        if label is not None:
            module, _, cls = IMPLEMENTATION_ALIASES.get(label, label).rpartition(".")
            assert hasattr(importlib.import_module(module), cls)


# -- Seldon Core 2 ----------------------------------------------------------------------------


def _seldon_container(name: str) -> dict[str, Any]:
    (container,) = [c for c in SERVER_CONFIG["spec"]["podSpec"]["containers"] if c["name"] == name]
    assert isinstance(container, dict)
    return container


def test_seldons_agent_is_told_the_images_ports() -> None:
    env = _env(_seldon_container("agent"))
    assert int(env["SELDON_SERVER_HTTP_PORT"]) == PORTS["http"]
    assert int(env["SELDON_SERVER_GRPC_PORT"]) == PORTS["grpc"]
    # The agent's own ports and the image's must not collide in the one pod.
    pod_ports = [
        p["containerPort"]
        for c in SERVER_CONFIG["spec"]["podSpec"]["containers"]
        for p in c.get("ports", [])
    ]
    assert len(pod_ports) == len(set(pod_ports))
    # MLServer's layout and model-settings.json rewriting, which inferkit reads.
    assert env["SELDON_SERVER_TYPE"] == "mlserver"


def test_inferkit_serves_the_folder_seldons_agent_writes_models_to() -> None:
    agent, server = _seldon_container("agent"), _seldon_container("inferkit")
    settings = load_settings(MODEL_DIR, _env(server))
    root = Path(settings.model_repository_root)
    # The agent's models folder is /mnt/agent/models under its mount of the shared volume.
    (agent_mount,) = [m for m in agent["volumeMounts"] if m["mountPath"] == "/mnt/agent"]
    mounts = [m for m in server["volumeMounts"] if m["name"] == agent_mount["name"]]
    assert [m["mountPath"] for m in mounts] == ["/mnt/agent"]
    assert root == Path("/mnt/agent/models")
    # The agent loads models when they are scheduled, through the repository API.
    assert settings.load_models_at_startup is False


def test_the_pod_lets_inferkit_drain_before_it_is_killed() -> None:
    server = _seldon_container("inferkit")
    pause = server["lifecycle"]["preStop"]["exec"]["command"][-1]
    seconds = int(re.fullmatch(r"/bin/sleep (\d+)", pause).group(1))  # type: ignore[union-attr]
    grace = SERVER_CONFIG["spec"]["podSpec"]["terminationGracePeriodSeconds"]
    assert grace > seconds + Settings().graceful_shutdown_timeout


def test_the_server_and_model_fit_the_server_config() -> None:
    server = _one("seldon/server.yaml", "Server")
    model = _one("seldon/model.yaml", "Model")
    assert server["spec"]["serverConfig"] == SERVER_CONFIG["metadata"]["name"]
    assert model["spec"]["server"] == server["metadata"]["name"]
    env = _env(_seldon_container("agent"))
    capabilities = set(env["SELDON_SERVER_CAPABILITIES"].split(","))
    assert set(model["spec"]["requirements"]) <= capabilities
    # Every built-in runtime is offered, and no framework inferkit has no runtime for.
    assert capabilities - {"inferkit", "mlserver", "python"} == _builtin_runtimes()

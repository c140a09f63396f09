"""What clients of the real ``inferkit start`` are told when a model fails to load: the class
of the failure and a stable code, over REST and gRPC alike, never the failure's text (which may
hold secrets and absolute paths; it goes to the server log). A broken model-settings.json is
listed FAILED under the model it names, and loading that model answers the same failure."""

from __future__ import annotations

import json
from collections.abc import Iterator

import httpx
import pytest
import tritonclient.grpc as triton
from harness import Running, inferkit_start
from tritonclient.utils import InferenceServerException

pytestmark = pytest.mark.e2e

LEAKY = """
from inferkit import Model


class Leaky(Model):
    async def load(self) -> bool:
        raise RuntimeError("cannot connect to postgres://admin:hunter2@db/models")
"""

WITHHELD = "RuntimeError (the reason is in the server log)"
BROKEN = "SettingsError (the reason is in the server log)"


@pytest.fixture(scope="module")
def running(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Running]:
    root = tmp_path_factory.mktemp("repo")
    (root / "settings.json").write_text("{}")
    (root / "leaky").mkdir()
    (root / "leaky" / "model.py").write_text(LEAKY)
    (root / "leaky" / "model-settings.json").write_text(
        json.dumps({"name": "leaky", "implementation": "model.Leaky"})
    )
    # Valid JSON, a bad field, in a folder named otherwise: FAILED as "iris" version "v1".
    (root / "folder-v1").mkdir()
    (root / "folder-v1" / "model-settings.json").write_text(
        json.dumps({"name": "iris", "implementation": 5, "parameters": {"version": "v1"}})
    )
    with inferkit_start(root) as server:
        yield server


def rest_index(running: Running) -> dict[tuple[str, str], tuple[str, str]]:
    items = httpx.post(f"{running.url}/v2/repository/index", json={}, timeout=10).json()
    return {(i["name"], i["version"]): (i["state"], i["reason"]) for i in items}


def test_rest_tells_the_class_and_code_not_the_text(running: Running) -> None:
    index = rest_index(running)
    assert index[("leaky", "")] == ("FAILED", WITHHELD)
    assert index[("iris", "v1")] == ("FAILED", BROKEN)
    load = httpx.post(f"{running.url}/v2/repository/models/leaky/load", timeout=30)
    assert load.json() == {
        "error": f"Model 'leaky' failed to load: {WITHHELD}",
        "code": "MODEL_LOAD_FAILED",
    }
    # The model the broken file names: the failure the index shows, not 404.
    load = httpx.post(f"{running.url}/v2/repository/models/iris/load", timeout=30)
    assert (load.status_code, load.json()) == (
        500,
        {"error": f"Model 'iris' failed to load: {BROKEN}", "code": "MODEL_LOAD_FAILED"},
    )
    log = running.log()
    assert "hunter2" in log  # the operator still finds out why
    assert "Invalid settings in" in log and "folder-v1" in log


def test_grpc_tells_the_class_not_the_text(running: Running) -> None:
    client = triton.InferenceServerClient(running.grpc)
    try:
        index = client.get_model_repository_index(as_json=True)["models"]
        reasons = {(m["name"], m.get("version", "")): m.get("reason", "") for m in index}
        assert reasons[("leaky", "")] == WITHHELD
        assert reasons[("iris", "v1")] == BROKEN
        with pytest.raises(InferenceServerException) as info:
            client.load_model("leaky")
        assert "hunter2" not in str(info.value)
        assert f"Model 'leaky' failed to load: {WITHHELD}" in str(info.value)
        with pytest.raises(InferenceServerException) as info:
            client.load_model("iris")
        assert info.value.status() == "StatusCode.INTERNAL"  # MODEL_LOAD_FAILED, as REST's 500
    finally:
        client.close()


def test_no_reason_told_holds_a_path(running: Running) -> None:
    # Without expose_load_errors, no reason carries a path (absolute or not) nor a secret.
    reasons = [reason for _, reason in rest_index(running).values()]
    assert reasons and not [r for r in reasons if "/" in r or "hunter2" in r], reasons

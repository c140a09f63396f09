"""The real ``inferkit start`` serving a model file written for MLServer with custom handlers:
the Request form and the JSON body form, POST and GET, a path clash between two models, a
model in worker processes refused, and unload taking the routes away."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from harness import Running, inferkit_start

pytestmark = pytest.mark.e2e

MLSERVER_HANDLERS = """
from starlette.requests import Request  # fastapi.Request is this class too

from mlserver import MLModel
from mlserver.handlers import custom_handler
from mlserver.types import InferenceRequest, InferenceResponse


class Handlers(MLModel):
    async def load(self) -> bool:
        self.calls = 0
        return True

    async def predict(self, payload: InferenceRequest) -> InferenceResponse:
        return InferenceResponse(model_name=self.name, outputs=[])

    @custom_handler(rest_path="/my-custom-endpoint")
    def my_payload(self, payload: list) -> int:
        return sum(payload)

    @custom_handler(rest_path="/echo")
    async def echo(self, request: Request) -> dict:
        self.calls += 1
        return {"body": await request.json(), "agent": request.headers["x-agent"]}

    @custom_handler(rest_path="/status", rest_method="GET")
    async def status(self) -> dict:
        return {"model": self.name, "calls": self.calls}
"""


def model_folder(root: Path, name: str, **settings: object) -> None:
    (root / name).mkdir()
    (root / name / "handlers.py").write_text(MLSERVER_HANDLERS)
    model_settings = {"name": name, "implementation": "handlers.Handlers", **settings}
    (root / name / "model-settings.json").write_text(json.dumps(model_settings))


@pytest.fixture(scope="module")
def running(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Running]:
    root = tmp_path_factory.mktemp("repo")
    # The refusals' reasons reach clients (the index) with expose_load_errors only.
    settings = {"parallel_workers": 0, "expose_load_errors": True}
    (root / "settings.json").write_text(json.dumps(settings))
    model_folder(root, "custom")
    model_folder(root, "worker", parallel_workers=1)
    with inferkit_start(root) as server:
        yield server


def index(http: httpx.Client) -> dict[str, tuple[str, str]]:
    items = http.post("/v2/repository/index", json={}).json()
    return {item["name"]: (item["state"], item["reason"]) for item in items}


def test_handlers_answer_post_and_get_then_go_with_the_unload(running: Running) -> None:
    with httpx.Client(base_url=running.url, timeout=10) as http:
        total = http.post("/my-custom-endpoint", json=[1, 2, 3])
        assert (total.status_code, total.json()) == (200, 6)
        echo = http.post("/echo", json={"a": 1}, headers={"x-agent": "e2e"})
        assert (echo.status_code, echo.json()) == (200, {"body": {"a": 1}, "agent": "e2e"})
        status = http.get("/status")
        assert status.json() == {"model": "custom", "calls": 1}
        assert http.get("/my-custom-endpoint").status_code == 405
        wrong = http.post("/my-custom-endpoint", json={"a": 1})
        assert (wrong.status_code, wrong.json()["code"]) == (400, "INVALID_REQUEST")

        assert http.post("/v2/repository/models/custom/unload").status_code == 200
        assert http.get("/status").status_code == 404
        assert http.post("/my-custom-endpoint", json=[1]).status_code == 404
        assert http.post("/v2/repository/models/custom/load").status_code == 200
        assert http.get("/status").json() == {"model": "custom", "calls": 0}


def test_a_model_in_worker_processes_is_refused_with_the_reason(running: Running) -> None:
    with httpx.Client(base_url=running.url, timeout=10) as http:
        assert index(http)["worker"] == (
            "FAILED",
            "Custom handlers (POST /echo, POST /my-custom-endpoint, GET /status) are not served "
            "for models in worker processes (parallel_workers above 0, or a model environment): "
            "set parallel_workers to 0 for this model",
        )


def test_a_second_model_on_the_same_paths_fails_to_load(
    running: Running, tmp_path_factory: pytest.TempPathFactory
) -> None:
    root = tmp_path_factory.mktemp("clash")
    (root / "settings.json").write_text(json.dumps({"expose_load_errors": True}))
    model_folder(root, "first")
    model_folder(root, "second")
    with inferkit_start(root) as server, httpx.Client(base_url=server.url, timeout=10) as http:
        states = index(http)
        [(ready, _)] = [(n, s) for n, s in states.items() if s[0] == "READY"]
        [(failed, (_, reason))] = [(n, s) for n, s in states.items() if s[0] == "FAILED"]
        assert reason == (
            f"Custom handler POST /echo of model '{failed}' cannot be served: "
            f"it is already served by model '{ready}'"
        )
        assert http.get("/status").json()["model"] == ready

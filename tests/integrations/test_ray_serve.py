"""inferkit under Ray Serve, on a real local Ray instance: two replicas, each its own server.

The model answers with the process that loaded it and the one that predicted, and writes a file
when it unloads: so each answer shows which replica took it and that the replica's lifespan
loaded the model there, and the files show the lifespan's shutdown ran in each replica.
"""

from __future__ import annotations

import importlib.util
import json
import logging
import os
import shutil
import tempfile
import time
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from harness import free_port

from inferkit.integrations.ray_serve import app_builder

pytestmark = pytest.mark.skipif(
    importlib.util.find_spec("ray") is None,
    reason="Ray Serve is not installed (the `ray` extra, which the test extra includes)",
)

PID_MODEL = '''
import os
from pathlib import Path

from inferkit import InferenceRequest, InferenceResponse, Model, ResponseOutput


class Pid(Model):
    """Answers [pid that loaded the model, pid that predicts]; notes its unload in a file."""

    async def load(self):
        self.loaded_in = os.getpid()

    async def predict(self, payload: InferenceRequest) -> InferenceResponse:
        pids = [self.loaded_in, os.getpid()]
        output = ResponseOutput(name="pids", shape=[2], datatype="INT64", data=pids)
        return InferenceResponse(model_name=self.name, outputs=[output])

    async def unload(self):
        Path(self.settings.parameters.extra["unloaded"], str(os.getpid())).touch()
'''

REQUEST = {"inputs": [{"name": "x", "shape": [1], "datatype": "INT64", "data": [1]}]}
#: Bounds of the wait for both replicas to answer: requests and seconds.
MAX_REQUESTS, MAX_SECONDS = 400, 60.0


@pytest.fixture
def repository(tmp_path: Path) -> Path:
    folder = tmp_path / "models" / "pid"
    folder.mkdir(parents=True)
    (tmp_path / "unloaded").mkdir()
    (folder / "model.py").write_text(PID_MODEL)
    settings = {
        "name": "pid",
        "implementation": "model.Pid",
        "parameters": {"extra": {"unloaded": str(tmp_path / "unloaded")}},
    }
    (folder / "model-settings.json").write_text(json.dumps(settings))
    return tmp_path / "models"


@pytest.fixture
def local_ray() -> Iterator[int]:
    """A Ray instance of this test alone: 2 CPUs, no dashboard, Serve's HTTP on loopback."""
    # Importing Ray replaces the process's log record factory (its records get a
    # `_ray_timestamp_ns` attribute): imported here, not at collection, and put back after, so
    # that the tests of inferkit's logs do not see Ray's records.
    factory = logging.getLogRecordFactory()
    with warnings.catch_warnings():
        # Ray Serve's own models use pydantic features pydantic deprecates: Ray's to fix.
        warnings.simplefilter("ignore", DeprecationWarning)
        import ray
        from ray import serve

    # Ray's session folder holds unix sockets, whose paths must stay short.
    temp_dir = tempfile.mkdtemp(prefix="ray-", dir="/tmp")
    ray.init(
        address="local",
        num_cpus=2,
        include_dashboard=False,
        _temp_dir=temp_dir,
        log_to_driver=False,
    )
    try:
        port = free_port()
        serve.start(http_options={"host": "127.0.0.1", "port": port})
        yield port
    finally:
        serve.shutdown()
        ray.shutdown()
        shutil.rmtree(temp_dir, ignore_errors=True)
        logging.setLogRecordFactory(factory)


def _gone(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    return False


def _wait_for(condition: Any, seconds: float) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.2)
    return bool(condition())


def test_two_replicas_each_serve_the_repository_they_loaded(
    repository: Path, local_ray: int
) -> None:
    from ray import serve

    app = app_builder({"repository": str(repository), "num_replicas": "2", "num_cpus": "0.5"})
    serve.run(app, name="inferkit", route_prefix="/")
    base = f"http://127.0.0.1:{local_ray}"

    replicas: set[int] = set()
    with httpx.Client(base_url=base, timeout=30.0) as client:
        assert client.get("/v2/health/ready").status_code == 200
        deadline = time.monotonic() + MAX_SECONDS
        for _ in range(MAX_REQUESTS):
            response = client.post("/v2/models/pid/infer", json=REQUEST)
            assert response.status_code == 200, response.text
            loaded_in, answered_in = response.json()["outputs"][0]["data"]
            # The model was loaded by the lifespan of the replica that answers.
            assert loaded_in == answered_in != os.getpid()
            replicas.add(answered_in)
            if len(replicas) == 2 or time.monotonic() > deadline:
                break
        # The V2 API is inferkit's own, errors included.
        missing = client.post("/v2/models/nope/infer", json=REQUEST)
        assert missing.status_code == 404
        assert missing.json()["code"] == "MODEL_NOT_FOUND"
    assert len(replicas) == 2

    serve.shutdown()
    unloaded = repository.parent / "unloaded"
    # Each replica's lifespan shutdown unloaded its model, and its process ended.
    assert _wait_for(lambda: {int(p.name) for p in unloaded.iterdir()} == replicas, 30.0)
    assert _wait_for(lambda: all(_gone(pid) for pid in replicas), 30.0)


def test_the_app_builder_says_what_it_takes() -> None:
    with pytest.raises(ValueError, match="repository=PATH"):
        app_builder({})
    with pytest.raises(ValueError, match="unknown: replicas"):
        app_builder({"repository": ".", "replicas": "2"})

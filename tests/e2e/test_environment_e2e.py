"""The real ``inferkit start`` running models in their own Python environments.

Each test makes a second venv from the test venv's base interpreter (no network: a ``.pth``
file makes the test venv's packages visible in it) and puts a marker module in the new venv
only; the model answers with ``sys.executable`` and the marker, proving where it ran.
"""

from __future__ import annotations

import json
import site
import subprocess
import sys
import tarfile
from pathlib import Path
from typing import Any

import httpx
import pytest
from harness import inferkit_start, write_repository

pytestmark = pytest.mark.e2e

WHERE_MODEL = '''
import sys

from inferkit import InferenceResponse, Model, ResponseOutput


class Where(Model):
    """Answers with the interpreter it runs in and the marker module's value (or "none")."""

    async def predict(self, payload):
        try:
            import envmarker

            marker = envmarker.WHERE
        except ImportError:
            marker = "none"
        return InferenceResponse(
            model_name=self.name,
            outputs=[
                ResponseOutput(name="python", shape=[1], datatype="BYTES", data=[sys.executable]),
                ResponseOutput(name="marker", shape=[1], datatype="BYTES", data=[marker]),
            ],
        )
'''

REQUEST = {"inputs": [{"name": "x", "shape": [1], "datatype": "INT32", "data": [1]}]}


def make_venv(folder: Path, marker: str) -> Path:
    """A venv at ``folder`` that sees the test venv's packages and has ``envmarker`` alone."""
    base = getattr(sys, "_base_executable", sys.executable)
    subprocess.run([base, "-m", "venv", "--without-pip", str(folder)], check=True)
    probe = "import site, json; print(json.dumps(site.getsitepackages()))"
    own = json.loads(
        subprocess.run(
            [str(folder / "bin" / "python"), "-c", probe], capture_output=True, check=True
        ).stdout
    )[0]
    Path(own, "test-venv.pth").write_text("\n".join(site.getsitepackages()) + "\n")
    Path(own, "envmarker.py").write_text(f"WHERE = {marker!r}\n")
    return folder


def where(url: str, model: str) -> dict[str, Any]:
    reply = httpx.post(f"{url}/v2/models/{model}/infer", json=REQUEST, timeout=30.0)
    assert reply.status_code == 200, reply.text
    return {o["name"]: o["data"][0] for o in reply.json()["outputs"]}


def model_settings(name: str, **parameters: Any) -> dict[str, Any]:
    return {"name": name, "implementation": "model.Where", "parameters": parameters}


def write_where(root: Path, models: dict[str, dict[str, Any]], **settings: Any) -> Path:
    write_repository(root, models, **settings)
    for folder, model in models.items():
        # A model with an environment imports the marker at import time: the server process
        # (which has no envmarker) must never import its module.
        strict = (
            "environment_path" in model["parameters"]
            or "environment_tarball" in model["parameters"]
        )
        (root / folder / "model.py").write_text(
            ("import envmarker  # noqa: F401\n" if strict else "") + WHERE_MODEL
        )
    return root


def test_two_models_in_two_environments_and_one_in_the_servers(tmp_path: Path) -> None:
    first = make_venv(tmp_path / "env-a", "a")
    second = make_venv(tmp_path / "env-b", "b")
    root = write_where(
        tmp_path / "repo",
        {
            "a": model_settings("a", environment_path=str(first)),
            # Relative to the model's folder, as MLServer resolves it.
            "b": model_settings("b", environment_path="../../env-b"),
            "plain": model_settings("plain"),
        },
    )

    with inferkit_start(root) as running:
        a, b, plain = (where(running.url, m) for m in ("a", "b", "plain"))

    # parallel_workers is 0: the models with an environment still run in a worker.
    assert a == {"python": str(first / "bin" / "python"), "marker": "a"}
    assert b == {"python": str(second / "bin" / "python"), "marker": "b"}
    assert plain == {"python": sys.executable, "marker": "none"}


def test_a_tarball_is_unpacked_once_into_environments_dir(tmp_path: Path) -> None:
    venv = make_venv(tmp_path / "packed", "packed")
    tarball = tmp_path / "environment.tar.gz"
    with tarfile.open(tarball, "w:gz") as archive:
        archive.add(venv, arcname=".")
    envs = tmp_path / "envs"
    root = write_where(
        tmp_path / "repo",
        {"m": model_settings("m", environment_tarball=str(tarball))},
        environments_dir=str(envs),
        parallel_workers=2,
    )

    with inferkit_start(root) as running:
        answer = where(running.url, "m")
        reload = httpx.post(f"{running.url}/v2/repository/models/m/load", timeout=60.0)
        assert reload.status_code == 200, reload.text
        again = where(running.url, "m")

    (unpacked,) = envs.iterdir()
    assert answer == again == {"python": str(unpacked / "bin" / "python"), "marker": "packed"}
    assert len(unpacked.name) == 64  # the tarball's SHA-256


def test_a_broken_environment_fails_that_model_only(tmp_path: Path) -> None:
    root = write_where(
        tmp_path / "repo",
        {
            "broken": model_settings("broken", environment_path=str(tmp_path / "nowhere")),
            "plain": model_settings("plain"),
        },
    )

    with inferkit_start(root) as running:
        assert where(running.url, "plain")["marker"] == "none"
        ready = httpx.get(f"{running.url}/v2/models/broken/ready", timeout=10.0)
        log = running.log()

    assert ready.status_code != 200
    assert f"environment_path {tmp_path / 'nowhere'} is not a folder" in log

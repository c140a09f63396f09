"""``inferkit dockerfile`` / ``inferkit build`` without a docker daemon: the generated text, what
its entrypoint and HEALTHCHECK do when run for real, the wheel, and the CLI's one-line errors.
(``nox -s container`` builds and runs the image itself.)
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
from harness import free_port, inferkit_start

from inferkit import __version__
from inferkit.cli import main
from inferkit.deploy.build import inferkit_wheel
from inferkit.deploy.dockerfile import BUILD_DIR, DEFAULT_BASE_IMAGE, detect_extras, render
from inferkit.deploy.image import COMMAND, MODEL_DIR, PORTS, READY_PATH, USER
from inferkit.errors import SettingsError

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "examples"


def instructions(dockerfile: str) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) of each instruction, continuation lines joined."""
    joined = dockerfile.replace("\\\n", " ")
    found = []
    for line in joined.splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            keyword, _, rest = line.strip().partition(" ")
            found.append((keyword, " ".join(rest.split())))
    return found


def last(dockerfile: str, keyword: str) -> str:
    return [rest for key, rest in instructions(dockerfile) if key == keyword][-1]


def model(folder: Path, implementation: str) -> None:
    folder.mkdir(parents=True)
    settings = {"name": folder.name, "implementation": implementation}
    (folder / "model-settings.json").write_text(json.dumps(settings))


def test_quickstart_needs_only_the_server_extra() -> None:
    generated = render(EXAMPLES / "quickstart", wheel=".inferkit/inferkit-9-py3-none-any.whl")
    assert generated.extras == ("server",)
    text = generated.dockerfile
    # The final stage runs on the default base; the first one only gathers the model files.
    assert [rest for key, rest in instructions(text) if key == "FROM"] == [
        f"{DEFAULT_BASE_IMAGE} AS models",
        DEFAULT_BASE_IMAGE,
    ]
    assert 'pip install "/tmp/inferkit-9-py3-none-any.whl[server]"' in last(text, "RUN")
    assert last(text, "USER") == USER != "0"
    assert last(text, "EXPOSE").split() == [str(port) for port in PORTS.values()]
    assert json.loads(last(text, "CMD")) == list(COMMAND)
    assert last(text, "COPY") == f"--from=models /models {MODEL_DIR}"
    health = last(text, "HEALTHCHECK")
    assert READY_PATH in health and "curl" not in health
    assert "requirements.txt" not in text


def test_multi_model_installs_the_runtimes_extras_from_mlserver_names() -> None:
    # examples/multi-model names mlserver_sklearn.SKLearnModel and mlserver_xgboost.XGBoostModel.
    generated = render(EXAMPLES / "multi-model", wheel=".inferkit/inferkit.whl")
    assert generated.extras == ("server", "sklearn", "xgboost")
    assert '"/tmp/inferkit.whl[server,sklearn,xgboost]"' in last(generated.dockerfile, "RUN")
    # The examples' folder serves all of them in one image.
    assert detect_extras(EXAMPLES) == ("server", "sklearn", "xgboost")


def test_inferkit_runtime_names_and_hidden_folders(tmp_path: Path) -> None:
    model(tmp_path / "a", "inferkit.runtimes.lightgbm.LightGBMModel")
    model(tmp_path / "b", "my_model.Custom")
    model(tmp_path / ".envs" / "c", "inferkit.runtimes.xgboost.XGBoostModel")
    assert detect_extras(tmp_path) == ("server", "lightgbm")


def test_every_builtin_runtime_has_its_extra(tmp_path: Path) -> None:
    # Each runtime module's extra (pyproject.toml) installs its library, by either name.
    model(tmp_path / "a", "inferkit.runtimes.onnx.OnnxModel")
    model(tmp_path / "b", "mlserver_catboost.CatboostModel")
    model(tmp_path / "c", "mlserver_mlflow.MLflowRuntime")
    model(tmp_path / "d", "mlserver_huggingface.HuggingFaceRuntime")
    extras = detect_extras(tmp_path)
    assert extras == ("server", "catboost", "huggingface", "mlflow", "onnx")
    declared = (ROOT / "pyproject.toml").read_text()
    assert all(f"\n{extra} = [" in declared for extra in extras)


def test_bad_model_settings_name_the_file(tmp_path: Path) -> None:
    (tmp_path / "m").mkdir()
    (tmp_path / "m" / "model-settings.json").write_text("{not json")
    with pytest.raises(SettingsError, match=r"model-settings\.json"):
        detect_extras(tmp_path)


def test_requirements_are_installed_after_inferkit_and_removed(tmp_path: Path) -> None:
    folder = tmp_path / "quickstart"
    shutil.copytree(EXAMPLES / "quickstart", folder)
    (folder / "requirements.txt").write_text("spacy==3.6.0\n")
    text = render(folder, wheel=".inferkit/w.whl", ca_bundle=".inferkit/ca.pem").dockerfile
    assert "COPY requirements.txt /tmp/requirements.txt" in [
        f"COPY {rest}" for key, rest in instructions(text) if key == "COPY"
    ]
    install = last(text, "RUN")
    ca = "PIP_CERT=/tmp/inferkit-build-ca.pem SSL_CERT_FILE=/tmp/inferkit-build-ca.pem"
    assert install.index(f'{ca} pip install "/tmp/w.whl[server]"') < install.index(
        f"{ca} pip install -r /tmp/requirements.txt"
    )
    assert install.endswith("rm -f /tmp/w.whl /tmp/inferkit-build-ca.pem /tmp/requirements.txt")


def test_without_a_wheel_the_index_gives_this_version() -> None:
    text = render(EXAMPLES / "quickstart", base_image="example.org/py:3").dockerfile
    assert f'pip install "inferkit[server]=={__version__}"' in last(text, "RUN")
    assert last(text, "FROM") == "example.org/py:3"
    assert "COPY .inferkit" not in text


def entrypoint_env(env: dict[str, str]) -> dict[str, str | None]:
    """Run the image's ENTRYPOINT script here, on a command that prints the port variables."""
    entrypoint = json.loads(last(render(EXAMPLES / "quickstart").dockerfile, "ENTRYPOINT"))
    show = (
        "import json, os; print(json.dumps({k: os.environ.get(k)"
        " for k in ('INFERKIT_HTTP_PORT', 'MLSERVER_HTTP_PORT')}))"
    )
    base = {k: v for k, v in os.environ.items() if not k.endswith("_HTTP_PORT") and k != "PORT"}
    done = subprocess.run(
        [*entrypoint, sys.executable, "-c", show],
        env={**base, **env},
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    result: dict[str, str | None] = json.loads(done.stdout)
    return result


def test_port_becomes_the_http_port_over_the_settings_variables() -> None:
    assert entrypoint_env({"PORT": "9090", "MLSERVER_HTTP_PORT": "7000"}) == {
        "INFERKIT_HTTP_PORT": "9090",
        "MLSERVER_HTTP_PORT": "7000",
    }
    # Without PORT the entrypoint changes nothing: MLSERVER_*/INFERKIT_* decide.
    assert entrypoint_env({"MLSERVER_HTTP_PORT": "7000"}) == {
        "INFERKIT_HTTP_PORT": None,
        "MLSERVER_HTTP_PORT": "7000",
    }


@pytest.mark.e2e
def test_healthcheck_probe_follows_the_port_variables(tmp_path: Path) -> None:
    folder = tmp_path / "quickstart"
    shutil.copytree(EXAMPLES / "quickstart", folder)
    health = last(render(folder).dockerfile, "HEALTHCHECK")
    probe = json.loads(health.partition(" CMD ")[2])
    assert probe[0] == "python"
    base = {k: v for k, v in os.environ.items() if not k.endswith("_HTTP_PORT") and k != "PORT"}

    def probe_exits(**env: str) -> int:
        command = [sys.executable, *probe[1:]]
        return subprocess.run(
            command, env={**base, **env}, capture_output=True, timeout=60
        ).returncode

    dead = str(free_port())
    with inferkit_start(folder) as running:
        port = str(running.http_port)
        assert probe_exits(MLSERVER_HTTP_PORT=port) == 0
        assert probe_exits(MLSERVER_HTTP_PORT=dead, INFERKIT_HTTP_PORT=port) == 0
        assert probe_exits(PORT=port, INFERKIT_HTTP_PORT=dead) == 0
        assert probe_exits(PORT=dead, MLSERVER_HTTP_PORT=port) != 0


def test_wheel_of_the_running_inferkit(tmp_path: Path) -> None:
    first = inferkit_wheel(tmp_path / "a")
    again = inferkit_wheel(tmp_path / "b")
    # The same inferkit gives the same bytes, so docker's layer cache holds.
    assert first.read_bytes() == again.read_bytes()
    assert first.name == f"inferkit-{__version__}-py3-none-any.whl"
    with zipfile.ZipFile(first) as wheel:
        names = set(wheel.namelist())
        dist_info = f"inferkit-{__version__}.dist-info"
        assert {"inferkit/__init__.py", "inferkit/deploy/dockerfile.py"} <= names
        assert "[console_scripts]" in wheel.read(f"{dist_info}/entry_points.txt").decode()
        assert "Provides-Extra: server" in wheel.read(f"{dist_info}/METADATA").decode()
        assert not [name for name in names if "__pycache__" in name or name.endswith(".pyc")]
        for line in wheel.read(f"{dist_info}/RECORD").decode().splitlines():
            name, digest, size = line.split(",")
            if digest:
                data = wheel.read(name)
                expected = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=")
                assert (digest, int(size)) == (f"sha256={expected.decode()}", len(data))


def test_cli_dockerfile_writes_the_context(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    folder = tmp_path / "multi-model"
    shutil.copytree(EXAMPLES / "multi-model", folder)
    assert main(["dockerfile", str(folder), "--base-image", "base:1"]) == 0
    assert "inferkit[server,sklearn,xgboost]" in capsys.readouterr().out
    text = (folder / "Dockerfile").read_text()
    assert last(text, "FROM") == "base:1"
    assert "__pycache__" in (folder / ".dockerignore").read_text()
    wheels = list((folder / BUILD_DIR).glob("*.whl"))
    assert len(wheels) == 1 and f"{BUILD_DIR}/{wheels[0].name}" in text
    # Written by inferkit, so a second run may rewrite it.
    assert main(["dockerfile", str(folder), "--no-wheel"]) == 0
    assert "COPY .inferkit" not in (folder / "Dockerfile").read_text()


def test_cli_dockerfile_keeps_a_dockerfile_of_the_users(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    model(tmp_path / "m", "my_model.M")
    (tmp_path / "m" / "Dockerfile").write_text("FROM mine\n")
    assert main(["dockerfile", str(tmp_path / "m")]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "was not written by inferkit" in err
    assert (tmp_path / "m" / "Dockerfile").read_text() == "FROM mine\n"
    assert main(["dockerfile", str(tmp_path / "nowhere")]) == 2


@pytest.mark.skipif(shutil.which("docker") is None, reason="needs the docker CLI (docker.io)")
def test_cli_build_without_a_daemon_is_one_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    dead = f"unix://{tmp_path}/no-docker.sock"
    monkeypatch.setenv("DOCKER_HOST", dead)
    assert main(["build", str(EXAMPLES / "quickstart"), "-t", "x:1"]) == 1
    err = capsys.readouterr().err
    assert err.startswith(f"inferkit: error: Cannot reach a docker daemon at {dead}: ")
    assert err.count("\n") == 1 and "Traceback" not in err


def test_cli_build_without_docker_is_one_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))
    assert main(["build", str(EXAMPLES / "quickstart"), "-t", "x:1"]) == 1
    assert capsys.readouterr().err == (
        "inferkit: error: No `docker` command on PATH: install the docker CLI\n"
    )

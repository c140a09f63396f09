"""The real ``inferkit start`` over REST, with tritonclient.http and plain httpx."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest
import tritonclient.http as triton
from harness import Running, free_port, inferkit_start, write_repository
from samples import ARRAYS
from tritonclient.utils import InferenceServerException

pytestmark = pytest.mark.e2e

MODELS = {
    "echo": {"name": "echo", "implementation": "model.Echo"},
    "boom": {"name": "boom", "implementation": "model.Boom"},
    "v1": {"name": "versioned", "implementation": "model.Echo", "parameters": {"version": "v1"}},
    "v2": {"name": "versioned", "implementation": "model.Echo", "parameters": {"version": "v2"}},
    "broken": {"name": "broken", "implementation": "model.DoesNotExist"},
}


@pytest.fixture(scope="module")
def running(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Running]:
    root = write_repository(tmp_path_factory.mktemp("repo"), MODELS, max_request_size=1_000_000)
    with inferkit_start(root) as server:
        yield server


@pytest.fixture
def http(running: Running) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=running.url, timeout=10) as client:
        yield client


@pytest.fixture
def client(running: Running) -> Iterator[triton.InferenceServerClient]:
    client = triton.InferenceServerClient(f"127.0.0.1:{running.http_port}")
    yield client
    client.close()


@pytest.mark.parametrize("binary", [True, False], ids=["binary", "json"])
@pytest.mark.parametrize("datatype", sorted(ARRAYS))
def test_tritonclient_infer_every_datatype(
    client: triton.InferenceServerClient, datatype: str, binary: bool
) -> None:
    array = ARRAYS[datatype]
    if datatype == "FP16" and not binary:
        pytest.skip("tritonclient sends FP16 only as binary data")
    tensor = triton.InferInput("x", list(array.shape), datatype)
    tensor.set_data_from_numpy(array, binary_data=binary)
    wanted = triton.InferRequestedOutput("x", binary_data=binary)
    result = client.infer("echo", [tensor], outputs=[wanted], request_id="req-1")
    got = result.as_numpy("x")
    assert got is not None and got.shape == array.shape
    if datatype == "BYTES":
        # Over JSON, BYTES elements travel as strings and tritonclient gives them back as str.
        expected = array if binary else np.vectorize(bytes.decode, otypes=[object])(array)
        assert got.tolist() == expected.tolist()
    else:
        assert got.dtype == array.dtype
        np.testing.assert_array_equal(got, array)
    assert result.get_response()["id"] == "req-1"


def test_tritonclient_default_outputs_come_back_binary(
    client: triton.InferenceServerClient,
) -> None:
    array = np.ones((2, 2), dtype=np.float32)
    tensor = triton.InferInput("x", [2, 2], "FP32")
    tensor.set_data_from_numpy(array)  # binary by default, and all outputs asked binary
    result = client.infer("echo", [tensor])
    np.testing.assert_array_equal(result.as_numpy("x"), array)
    assert result.get_output("x")["parameters"] == {"binary_data_size": 16}


def test_tritonclient_health_and_metadata(client: triton.InferenceServerClient) -> None:
    assert client.is_server_live() and client.is_server_ready()
    assert client.is_model_ready("echo")
    assert client.is_model_ready("versioned", "v1")
    assert not client.is_model_ready("broken")
    assert client.get_server_metadata()["name"] == "inferkit"
    assert sorted(client.get_model_metadata("versioned")["versions"]) == ["v1", "v2"]
    index = {
        (m["name"], m.get("version", "")): m["state"] for m in client.get_model_repository_index()
    }
    assert index[("broken", "")] == "FAILED" and index[("echo", "")] == "READY"
    with pytest.raises(InferenceServerException, match="Model 'nope' not found"):
        client.get_model_metadata("nope")


def test_versioned_infer_routes(http: httpx.Client) -> None:
    body = {"inputs": [{"name": "x", "shape": [1], "datatype": "INT32", "data": [7]}]}
    for version in ("v1", "v2"):
        response = http.post(f"/v2/models/versioned/versions/{version}/infer", json=body)
        assert response.json()["model_version"] == version


@pytest.mark.parametrize(
    ("path", "body", "status", "code"),
    [
        ("/v2/models/echo/infer", b"{oops", 400, "INVALID_REQUEST"),
        (
            "/v2/models/echo/infer",
            b'{"inputs":[{"name":"x","shape":[3],"datatype":"INT32","data":[1,2]}]}',
            400,
            "INVALID_SHAPE",
        ),
        (
            "/v2/models/echo/infer",
            b'{"inputs":[{"name":"x","shape":[1],"datatype":"INT3","data":[1]}]}',
            400,
            "UNSUPPORTED_DATATYPE",
        ),
        ("/v2/models/nope/infer", b'{"inputs":[]}', 404, "MODEL_NOT_FOUND"),
        ("/v2/models/broken/infer", b'{"inputs":[]}', 400, "MODEL_NOT_READY"),
        ("/v2/models/echo/infer", b"[" * 1_000_001, 413, "PAYLOAD_TOO_LARGE"),
        (
            "/v2/models/boom/infer",
            b'{"inputs":[{"name":"x","shape":[1],"datatype":"INT32","data":[1]}]}',
            500,
            "INFERENCE_FAILED",
        ),
    ],
)
def test_bad_input_gets_its_status_and_the_server_keeps_serving(
    http: httpx.Client, path: str, body: bytes, status: int, code: str
) -> None:
    response = http.post(path, content=body)
    assert response.status_code == status
    assert response.json()["code"] == code
    assert "secret" not in response.text and "Traceback" not in response.text
    assert http.get("/v2/health/live").status_code == 200
    ok = http.post(
        "/v2/models/echo/infer",
        json={"inputs": [{"name": "x", "shape": [1], "datatype": "INT32", "data": [1]}]},
    )
    assert ok.status_code == 200


def test_exact_json(http: httpx.Client) -> None:
    body = {
        "id": "abc",
        "inputs": [{"name": "x", "shape": [2], "datatype": "FP64", "data": [0.5, 1.25]}],
    }
    assert http.post("/v2/models/echo/infer", json=body).json() == {
        "model_name": "echo",
        "id": "abc",
        "outputs": [{"name": "x", "shape": [2], "datatype": "FP64", "data": [0.5, 1.25]}],
    }


def test_unload_and_load(http: httpx.Client) -> None:
    def states() -> dict[str, str]:
        index = http.post("/v2/repository/index", json={}).json()
        return {f"{i['name']}:{i['version']}": i["state"] for i in index}

    assert states()["versioned:v1"] == "READY"
    assert http.post("/v2/repository/models/versioned/unload").status_code == 200
    assert states()["versioned:v1"] == states()["versioned:v2"] == "UNAVAILABLE"
    assert http.get("/v2/models/versioned/ready").status_code == 400
    assert http.post("/v2/repository/models/versioned/load").status_code == 200
    assert states()["versioned:v2"] == "READY"


def test_sigterm_drains_and_exits_zero(tmp_path: Path) -> None:
    root = write_repository(tmp_path, {"echo": MODELS["echo"]})
    with inferkit_start(root) as server:
        code, log = server.stop()
    assert code == 0
    assert "Shutting down" in log and "Stopped" in log


def run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "inferkit", *args], capture_output=True, text=True, timeout=60
    )


def test_cli_errors_are_one_line(tmp_path: Path) -> None:
    missing = run_cli("start", str(tmp_path / "nope"))
    assert missing.returncode == 2
    assert missing.stderr.strip() == f"inferkit: error: {tmp_path / 'nope'} is not a folder"
    (tmp_path / "settings.json").write_text('{"http_port": "many"}')
    bad = run_cli("start", str(tmp_path))
    assert bad.returncode == 2  # a settings error, like a usage error
    assert len(bad.stderr.strip().splitlines()) == 1
    assert "settings.json" in bad.stderr and "http_port" in bad.stderr
    version = run_cli("--version")
    assert version.returncode == 0 and version.stdout.startswith("inferkit ")


def test_port_in_use_is_one_line(tmp_path: Path) -> None:
    import socket

    root = write_repository(tmp_path, {"echo": MODELS["echo"]})
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = run_cli(
            "start",
            str(root),
            "--host",
            "127.0.0.1",
            "--http-port",
            str(port),
            "--grpc-port",
            str(free_port()),
            "--metrics-port",
            str(free_port()),
        )
    assert result.returncode == 1
    lines = result.stderr.strip().splitlines()
    assert lines[-1].startswith(f"inferkit: error: Cannot listen for HTTP on 127.0.0.1:{port}")
    assert "Traceback" not in result.stderr

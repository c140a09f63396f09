"""The real ``inferkit start`` locked down: tokens, a read-only repository, TLS and mutual TLS,
with tritonclient (http and grpc), httpx and grpclib's health client."""

from __future__ import annotations

import json
import ssl
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
import tritonclient.grpc as triton_grpc
import tritonclient.http as triton_http
from certs import make_certs
from grpclib.client import Channel
from grpclib.health.v1.health_grpc import HealthStub
from grpclib.health.v1.health_pb2 import HealthCheckRequest, HealthCheckResponse
from harness import Running, inferkit_start, write_repository
from tritonclient.utils import InferenceServerException

pytestmark = pytest.mark.e2e

MODELS: dict[str, dict[str, Any]] = {
    "echo": {"name": "echo", "implementation": "model.Echo"},
    "spare": {"name": "spare", "implementation": "model.Echo"},
}
DATA, ADMIN, FROM_ENV = "data-3f9c0a7e51", "admin-8d2b4c6f13", "env-5a1e7d9b02"


def bearer(token: str) -> dict[str, str]:
    # A new dict per call: tritonclient.http adds its own headers to the one it is given.
    # Lower case: grpcio refuses metadata keys with capitals (HTTP does not mind).
    return {"authorization": f"Bearer {token}"}


def http_input(module: Any = triton_http) -> Any:
    tensor = module.InferInput("x", [2], "INT32")
    tensor.set_data_from_numpy(np.array([4, 2], dtype=np.int32))
    return tensor


def status_of(call: Any) -> str:
    with pytest.raises(InferenceServerException) as raised:
        call()
    return str(raised.value.status())


# -- tokens -------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def secured(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Running]:
    secrets = tmp_path_factory.mktemp("secrets")
    (secrets / "tokens").write_text(f"# data tokens\n{DATA}\n")
    (secrets / "admin").write_text(f"{ADMIN}\n")
    root = write_repository(
        tmp_path_factory.mktemp("repo"),
        MODELS,
        auth_tokens_file=str(secrets / "tokens"),
        admin_tokens_file=str(secrets / "admin"),
    )
    # A token from the environment too, as a Kubernetes Secret can give it.
    env = {"INFERKIT_AUTH_TOKENS": json.dumps([FROM_ENV])}
    with inferkit_start(root, env=env) as server:
        yield server


def test_rest_health_and_metrics_stay_open(secured: Running) -> None:
    with httpx.Client(base_url=secured.url) as http:
        assert http.get("/v2/health/live").status_code == 200
        assert http.get("/v2/health/ready").status_code == 200
        response = http.get("/v2/models/echo/ready")
        assert response.status_code == 401
        assert response.json()["code"] == "UNAUTHENTICATED"
        assert response.headers["www-authenticate"].startswith("Bearer")
    metrics = httpx.get(f"http://127.0.0.1:{secured.metrics_port}/metrics")
    assert metrics.status_code == 200


def test_tritonclient_http_with_tokens(secured: Running) -> None:
    client = triton_http.InferenceServerClient(f"127.0.0.1:{secured.http_port}")
    try:
        assert status_of(lambda: client.infer("echo", [http_input()])) == "401"
        wrong = {"Authorization": "Bearer not-a-token"}
        assert status_of(lambda: client.infer("echo", [http_input()], headers=wrong)) == "401"
        for headers in (bearer(DATA), {"X-API-Key": DATA}, bearer(FROM_ENV)):
            result = client.infer("echo", [http_input()], headers=headers)
            assert result.as_numpy("x").tolist() == [4, 2]
        assert client.is_model_ready("echo", headers=bearer(DATA))
        # Loading and unloading take an admin token.
        assert status_of(lambda: client.unload_model("spare", headers=bearer(DATA))) == "403"
        assert status_of(lambda: client.unload_model("spare")) == "401"
        client.unload_model("spare", headers=bearer(ADMIN))
        assert not client.is_model_ready("spare", headers=bearer(DATA))
        assert status_of(lambda: client.load_model("spare", headers=bearer(DATA))) == "403"
        client.load_model("spare", headers=bearer(ADMIN))
        assert client.is_model_ready("spare", headers=bearer(DATA))
    finally:
        client.close()


def test_tritonclient_grpc_with_tokens(secured: Running) -> None:
    client = triton_grpc.InferenceServerClient(secured.grpc)
    try:
        unauthenticated = "StatusCode.UNAUTHENTICATED"
        assert status_of(lambda: client.infer("echo", [http_input(triton_grpc)])) == unauthenticated
        assert status_of(lambda: client.is_server_live()) == unauthenticated
        for headers in (bearer(DATA), {"x-api-key": DATA}):
            result = client.infer("echo", [http_input(triton_grpc)], headers=headers)
            assert result.as_numpy("x").tolist() == [4, 2]
        denied = "StatusCode.PERMISSION_DENIED"
        assert status_of(lambda: client.unload_model("spare", headers=bearer(DATA))) == denied
        client.unload_model("spare", headers=bearer(ADMIN))
        assert not client.is_model_ready("spare", headers=bearer(DATA))
        client.load_model("spare", headers=bearer(ADMIN))
        assert client.is_model_ready("spare", headers=bearer(DATA))
    finally:
        client.close()


async def test_grpc_health_stays_open(secured: Running) -> None:
    channel = Channel("127.0.0.1", secured.grpc_port)
    try:
        reply = await HealthStub(channel).Check(HealthCheckRequest(service=""))
        assert reply.status == HealthCheckResponse.SERVING
    finally:
        channel.close()


# -- read-only repository -----------------------------------------------------------------------


def test_read_only_repository(tmp_path: Path) -> None:
    root = write_repository(tmp_path / "repo", MODELS, repository_read_only=True)
    with inferkit_start(root) as server:
        with httpx.Client(base_url=server.url) as http:
            for action in ("unload", "load"):
                response = http.post(f"/v2/repository/models/spare/{action}")
                assert response.status_code == 403
                assert response.json()["code"] == "REPOSITORY_READ_ONLY"
        rest = triton_http.InferenceServerClient(f"127.0.0.1:{server.http_port}")
        grpc = triton_grpc.InferenceServerClient(server.grpc)
        try:
            assert status_of(lambda: rest.unload_model("spare")) == "403"
            assert status_of(lambda: grpc.unload_model("spare")) == "StatusCode.PERMISSION_DENIED"
            assert rest.is_model_ready("spare") and grpc.is_model_ready("spare")
            # No tokens configured: inference needs none.
            assert rest.infer("echo", [http_input()]).as_numpy("x").tolist() == [4, 2]
        finally:
            rest.close()
            grpc.close()


# -- TLS ----------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    return make_certs(tmp_path_factory.mktemp("certs"))


def trusting(certs: dict[str, Path], *, with_cert: bool = False) -> ssl.SSLContext:
    context = ssl.create_default_context(cafile=str(certs["ca.crt"]))
    if with_cert:
        context.load_cert_chain(str(certs["client.crt"]), str(certs["client.key"]))
    return context


def tls_repository(folder: Path, certs: dict[str, Path], *, mutual: bool) -> Path:
    settings = {
        "http_tls_certificate": str(certs["server.crt"]),
        "http_tls_key": str(certs["server.key"]),
        "grpc_tls_certificate": str(certs["server.crt"]),
        "grpc_tls_key": str(certs["server.key"]),
    }
    if mutual:
        settings |= {
            "http_tls_client_ca": str(certs["ca.crt"]),
            "grpc_tls_client_ca": str(certs["ca.crt"]),
        }
    return write_repository(folder, MODELS, **settings)


def test_tls(tmp_path: Path, certs: dict[str, Path]) -> None:
    root = tls_repository(tmp_path / "repo", certs, mutual=False)
    with inferkit_start(root, tls={"verify": trusting(certs)}) as server:
        assert server.url.startswith("https://")
        with httpx.Client(verify=trusting(certs)) as http:
            assert http.get(f"{server.url}/v2/models/echo/ready").status_code == 200
        # The port speaks only TLS: plain HTTP gets no answer.
        with pytest.raises(httpx.TransportError):
            httpx.get(f"http://127.0.0.1:{server.http_port}/v2/health/live")
        # A client that does not trust the CA refuses the server.
        with pytest.raises(httpx.ConnectError, match="CERTIFICATE_VERIFY_FAILED"):
            httpx.get(f"{server.url}/v2/health/live", verify=ssl.create_default_context())

        rest = triton_http.InferenceServerClient(
            f"127.0.0.1:{server.http_port}",
            ssl=True,
            ssl_options={"ca_certs": str(certs["ca.crt"])},
        )
        grpc = triton_grpc.InferenceServerClient(
            server.grpc, ssl=True, root_certificates=str(certs["ca.crt"])
        )
        try:
            assert rest.infer("echo", [http_input()]).as_numpy("x").tolist() == [4, 2]
            result = grpc.infer("echo", [http_input(triton_grpc)])
            assert result.as_numpy("x").tolist() == [4, 2]
        finally:
            rest.close()
            grpc.close()


def test_mutual_tls(tmp_path: Path, certs: dict[str, Path]) -> None:
    root = tls_repository(tmp_path / "repo", certs, mutual=True)
    with inferkit_start(root, tls={"verify": trusting(certs, with_cert=True)}) as server:
        with httpx.Client(verify=trusting(certs, with_cert=True)) as http:
            assert http.get(f"{server.url}/v2/models/echo/ready").status_code == 200
        # Without a client certificate the handshake (or the first read after it) fails.
        with pytest.raises(httpx.TransportError):
            httpx.get(f"{server.url}/v2/health/live", verify=trusting(certs))

        with_cert = {
            "ca_certs": str(certs["ca.crt"]),
            "certfile": str(certs["client.crt"]),
            "keyfile": str(certs["client.key"]),
        }
        rest = triton_http.InferenceServerClient(
            f"127.0.0.1:{server.http_port}", ssl=True, ssl_options=with_cert
        )
        grpc = triton_grpc.InferenceServerClient(
            server.grpc,
            ssl=True,
            root_certificates=str(certs["ca.crt"]),
            private_key=str(certs["client.key"]),
            certificate_chain=str(certs["client.crt"]),
        )
        anonymous = triton_grpc.InferenceServerClient(
            server.grpc, ssl=True, root_certificates=str(certs["ca.crt"])
        )
        try:
            assert rest.infer("echo", [http_input()]).as_numpy("x").tolist() == [4, 2]
            result = grpc.infer("echo", [http_input(triton_grpc)])
            assert result.as_numpy("x").tolist() == [4, 2]
            assert status_of(lambda: anonymous.is_server_live()) == "StatusCode.UNAVAILABLE"
        finally:
            rest.close()
            grpc.close()
            anonymous.close()


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"http_tls_certificate": "server.crt"}, "http_tls_certificate and http_tls_key must"),
        ({"auth_tokens_file": "missing"}, "Cannot read auth_tokens_file"),
        ({"admin_tokens": [""]}, "a token in admin_tokens is empty"),
    ],
)
def test_bad_security_settings_stop_the_start(
    tmp_path: Path, settings: dict[str, Any], message: str
) -> None:
    root = write_repository(tmp_path / "repo", MODELS, **settings)
    done = subprocess.run(
        [sys.executable, "-m", "inferkit", "start", str(root), "--http-port", "0"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 2
    assert message in done.stderr
    assert "Traceback" not in done.stderr
    assert "Model 'echo'" not in done.stdout + done.stderr  # refused before any model loads

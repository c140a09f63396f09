"""Tokens and the read-only repository on REST, in process (httpx's ASGI transport)."""

from __future__ import annotations

import ssl
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
from certs import make_certs
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.routing import Mount
from toymodels import SumModel, sum_model

from inferkit import (
    InferenceRequest,
    InferenceResponse,
    ModelSettings,
    Server,
    Settings,
    custom_handler,
    errors,
)
from inferkit.codecs import StringCodec
from inferkit.runner import http_app, http_tls_context
from inferkit.settings import CORSSettings
from inferkit.transports.rest import create_rest_app
from inferkit.transports.rest_auth import action_of

DATA, ADMIN = "data-token-0123456789", "admin-token-0123456789"
SUM_BODY = {"inputs": [{"name": "x", "shape": [1, 3], "datatype": "FP32", "data": [1, 2, 3]}]}
BEARER = {"Authorization": f"Bearer {DATA}"}


class Headers(SumModel):
    """Answers with the names of the request headers the model was shown."""

    async def predict(self, payload: InferenceRequest) -> InferenceResponse:
        headers = (payload.parameters or {}).get("headers", {})
        names = StringCodec.encode_output("headers", sorted(headers))
        return InferenceResponse(model_name=self.name, outputs=[names])

    @custom_handler("/seen", rest_method="GET")
    async def seen(self, request: Request) -> list[str]:
        return sorted(request.headers)


@asynccontextmanager
async def client(app: Any = None, **settings: Any) -> AsyncIterator[httpx.AsyncClient]:
    models = [sum_model(), Headers(ModelSettings(name="headers"))]
    server = Server(models, settings=Settings(**settings))
    await server.start()
    transport = httpx.ASGITransport(app=app(server) if app else create_rest_app(server))
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as http:
        yield http
    await server.stop()


def code(response: httpx.Response) -> tuple[int, str]:
    return response.status_code, response.json()["code"]


@pytest.mark.parametrize(
    ("path", "action"),
    [
        ("/v2/health/live", "open"),
        ("/v2/health/ready", "open"),
        ("/v2/health/ready/", "data"),  # only the exact probe paths are open
        ("/v2", "data"),
        ("/v2/models/sum/infer", "data"),
        ("/v2/models/sum/ready", "data"),
        ("/v2/repository/index", "data"),
        ("/v2/docs", "data"),
        ("/anything/a/model/serves", "data"),
        ("/v2/repository/models/sum/load", "admin"),
        ("/v2/repository/models/sum/unload", "admin"),
        ("/v2/repository/models/sum/load/", "data"),  # no route: redirected, then checked
    ],
)
def test_actions(path: str, action: str) -> None:
    assert action_of(path) == action


async def test_health_is_open_and_the_rest_needs_a_token() -> None:
    async with client(auth_tokens=[DATA]) as http:
        assert (await http.get("/v2/health/live")).status_code == 200
        assert (await http.get("/v2/health/ready")).status_code == 200
        for method, path in [
            ("GET", "/v2"),
            ("GET", "/v2/models/sum"),
            ("GET", "/v2/models/sum/ready"),
            ("GET", "/v2/models/stats"),
            ("POST", "/v2/repository/index"),
            ("GET", "/v2/docs/openapi.json"),
            ("GET", "/seen"),  # a model's custom route
            ("GET", "/no/such/route"),  # no hint of which paths exist
        ]:
            response = await http.request(method, path)
            assert code(response) == (401, "UNAUTHENTICATED"), path
            assert response.headers["www-authenticate"] == 'Bearer realm="inferkit"'
            assert "Missing token" in response.json()["error"]
        response = await http.post("/v2/models/sum/infer", json=SUM_BODY)
        assert code(response) == (401, "UNAUTHENTICATED")


async def test_wrong_tokens_are_refused() -> None:
    async with client(auth_tokens=[DATA]) as http:
        for headers in (
            {"Authorization": "Bearer nope"},
            {"Authorization": f"Basic {DATA}"},  # only the Bearer scheme carries a token
            {"X-API-Key": DATA[:-1]},
        ):
            response = await http.post("/v2/models/sum/infer", json=SUM_BODY, headers=headers)
            assert code(response) == (401, "UNAUTHENTICATED"), headers
            challenge = response.headers["www-authenticate"]
            assert challenge == 'Bearer realm="inferkit", error="invalid_token"'


@pytest.mark.parametrize(
    "headers",
    [BEARER, {"authorization": f"bearer {DATA}"}, {"X-API-Key": DATA}, {"x-api-key": DATA}],
)
async def test_data_tokens_are_accepted_by_bearer_or_api_key(headers: dict[str, str]) -> None:
    async with client(auth_tokens=[DATA], admin_tokens=[ADMIN]) as http:
        response = await http.post("/v2/models/sum/infer", json=SUM_BODY, headers=headers)
        assert response.status_code == 200
        assert response.json()["outputs"][0]["data"] == [6.0]
        assert (await http.get("/v2/models/sum", headers=headers)).status_code == 200
        assert (await http.get("/seen", headers=headers)).status_code == 200


async def test_load_and_unload_need_an_admin_token() -> None:
    async with client(auth_tokens=[DATA], admin_tokens=[ADMIN]) as http:
        for action in ("unload", "load"):
            path = f"/v2/repository/models/sum/{action}"
            assert code(await http.post(path)) == (401, "UNAUTHENTICATED")
            response = await http.post(path, headers=BEARER)
            assert code(response) == (403, "PERMISSION_DENIED")
            assert "www-authenticate" not in response.headers
        admin = {"Authorization": f"Bearer {ADMIN}"}
        assert (await http.post("/v2/repository/models/sum/unload", headers=admin)).is_success
        assert (await http.get("/v2/models/sum/ready", headers=BEARER)).status_code == 400
        assert (await http.post("/v2/repository/models/sum/load", headers=admin)).is_success
        assert (await http.get("/v2/models/sum/ready", headers=admin)).status_code == 200


async def test_read_only_repository() -> None:
    async with client(repository_read_only=True) as http:
        for action in ("unload", "load"):
            response = await http.post(f"/v2/repository/models/sum/{action}")
            assert code(response) == (403, "REPOSITORY_READ_ONLY")
            assert "read-only" in response.json()["error"]
        # Everything else works as before, without a token.
        assert (await http.post("/v2/models/sum/infer", json=SUM_BODY)).status_code == 200
        assert (await http.post("/v2/repository/index")).status_code == 200
        assert (await http.get("/v2/models/sum/ready")).status_code == 200  # still loaded


async def test_the_model_never_sees_the_token() -> None:
    request = {"inputs": [{"name": "x", "shape": [1], "datatype": "FP32", "data": [1]}]}
    headers = {**BEARER, "X-API-Key": DATA, "X-Trace": "kept"}
    async with client(auth_tokens=[DATA]) as http:
        response = await http.post("/v2/models/headers/infer", json=request, headers=headers)
        seen = response.json()["outputs"][0]["data"]
        assert "x-trace" in seen
        assert "authorization" not in seen and "x-api-key" not in seen
        seen = (await http.get("/seen", headers=headers)).json()
        assert "x-trace" in seen
        assert "authorization" not in seen and "x-api-key" not in seen
    # Without authentication, the headers are the model's (as in MLServer).
    async with client() as http:
        response = await http.post("/v2/models/headers/infer", json=request, headers=headers)
        assert "authorization" in response.json()["outputs"][0]["data"]


async def test_a_refused_body_is_not_decoded() -> None:
    async with client(auth_tokens=[DATA]) as http:
        response = await http.post("/v2/models/sum/infer", content=b"not json at all")
        assert code(response) == (401, "UNAUTHENTICATED")


async def test_metrics_on_the_http_port_stay_open() -> None:
    async with client(http_app, auth_tokens=[DATA], metrics_on_http_port=True) as http:
        assert (await http.get("/metrics")).status_code == 200
        assert code(await http.get("/v2")) == (401, "UNAUTHENTICATED")


async def test_under_a_mount_the_probes_stay_open() -> None:
    def mounted(server: Server) -> Starlette:
        return Starlette(routes=[Mount("/ml", app=create_rest_app(server))])

    async with client(mounted, auth_tokens=[DATA]) as http:
        assert (await http.get("/ml/v2/health/ready")).status_code == 200
        assert code(await http.get("/ml/v2")) == (401, "UNAUTHENTICATED")
        assert (await http.get("/ml/v2", headers=BEARER)).status_code == 200


async def test_cors_preflight_needs_no_token() -> None:
    # A browser sends Authorization only if CORS allows the header.
    cors = CORSSettings(
        allow_origins=["https://app.example"],
        allow_methods=["POST"],
        allow_headers=["authorization"],
    )
    async with client(auth_tokens=[DATA], cors_settings=cors) as http:
        preflight = {
            "Origin": "https://app.example",
            "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": "authorization",
        }
        response = await http.options("/v2/models/sum/infer", headers=preflight)
        assert response.status_code == 200
        origin = {"Origin": "https://app.example"}
        response = await http.post("/v2/models/sum/infer", json=SUM_BODY, headers=origin)
        assert code(response) == (401, "UNAUTHENTICATED")
        # The refusal still carries CORS headers, so the browser's script can read it.
        assert response.headers["access-control-allow-origin"] == "https://app.example"


# -- TLS settings (served in tests/e2e/test_security_e2e.py) -------------------------------------


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"http_tls_certificate": "server.crt"}, "must be given together"),
        ({"http_tls_key": "server.key"}, "must be given together"),
        ({"http_tls_client_ca": "ca.crt"}, "http_tls_client_ca needs http_tls_certificate"),
    ],
)
def test_tls_settings_errors(settings: dict[str, Any], message: str) -> None:
    with pytest.raises(errors.SettingsError, match=message):
        http_tls_context(Settings(**settings))


def test_tls_contexts(tmp_path: Path) -> None:
    assert http_tls_context(Settings()) is None
    missing = Settings(http_tls_certificate=str(tmp_path / "no.crt"), http_tls_key="no.key")
    with pytest.raises(errors.SettingsError, match=r"^Cannot load the HTTP TLS files"):
        http_tls_context(missing)
    certs = make_certs(tmp_path / "certs")
    pair = {
        "http_tls_certificate": str(certs["server.crt"]),
        "http_tls_key": str(certs["server.key"]),
    }
    context = http_tls_context(Settings(**pair))
    assert context is not None and context.verify_mode == ssl.CERT_NONE
    context = http_tls_context(Settings(**pair, http_tls_client_ca=str(certs["ca.crt"])))
    assert context is not None and context.verify_mode == ssl.CERT_REQUIRED

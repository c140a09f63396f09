"""The Ray Serve replica class on its own, without Ray: the app it builds, its lifespan, its
health check and its settings. (``test_ray_serve.py`` runs it under a real Ray Serve.)"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
from harness import ECHO_MODEL

from inferkit.errors import SettingsError
from inferkit.integrations.ray_serve import InferkitReplica

REQUEST = {"inputs": [{"name": "x", "shape": [1], "datatype": "INT64", "data": [7]}]}


@asynccontextmanager
async def lifespan(app: Any) -> AsyncIterator[None]:
    """Run the ASGI lifespan protocol around the block, as Ray's replica (uvicorn's code) does."""
    inbox: asyncio.Queue[dict[str, str]] = asyncio.Queue()
    outbox: asyncio.Queue[dict[str, str]] = asyncio.Queue()
    task = asyncio.create_task(app({"type": "lifespan"}, inbox.get, outbox.put))
    await inbox.put({"type": "lifespan.startup"})
    assert (await asyncio.wait_for(outbox.get(), 30))["type"] == "lifespan.startup.complete"
    try:
        yield
    finally:
        await inbox.put({"type": "lifespan.shutdown"})
        assert (await asyncio.wait_for(outbox.get(), 30))["type"] == "lifespan.shutdown.complete"
        await asyncio.wait_for(task, 30)


@pytest.fixture
def repository(tmp_path: Path) -> Path:
    folder = tmp_path / "echo"
    folder.mkdir()
    (folder / "model.py").write_text(ECHO_MODEL)
    (folder / "model-settings.json").write_text(
        json.dumps({"name": "echo", "implementation": "model.Echo"})
    )
    return tmp_path


async def test_the_lifespan_loads_the_models_and_readiness_follows_it(repository: Path) -> None:
    replica = InferkitReplica(str(repository))
    with pytest.raises(RuntimeError, match="not ready"):
        await replica.check_health()  # Ray has not asked for the app yet
    app = replica.__serve_build_asgi_app__()
    transport = httpx.ASGITransport(app=app)
    async with lifespan(app), httpx.AsyncClient(transport=transport, base_url="http://r") as client:
        response = await client.post("/v2/models/echo/infer", json=REQUEST)
        assert response.status_code == 200
        assert response.json()["outputs"][0]["data"] == [7]
        assert (await client.get("/v2/health/ready")).status_code == 200
        await replica.check_health()
    # The lifespan's shutdown stopped the server: unready, and the model unloaded.
    with pytest.raises(RuntimeError, match="not ready"):
        await replica.check_health()
    assert replica.server is not None
    assert [m.state for m in await replica.server.index()] == ["UNAVAILABLE"]


def test_settings_come_from_the_repository_the_environment_and_the_overrides(
    repository: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (repository / "settings.json").write_text(json.dumps({"server_name": "from-file"}))
    monkeypatch.setenv("INFERKIT_INFERENCE_TIMEOUT", "5")
    replica = InferkitReplica(str(repository), {"parallel_workers": "0", "access_log": False})
    replica.__serve_build_asgi_app__()
    assert replica.server is not None
    settings = replica.server.settings
    assert settings.server_name == "from-file"
    assert settings.inference_timeout == 5.0
    assert (settings.parallel_workers, settings.access_log) == (0, False)
    assert settings.model_repository_root == str(repository)


@pytest.mark.parametrize(
    ("overrides", "message"),
    [({"paralel_workers": 2}, r"unknown \['paralel_workers'\]"), ({"http_port": "x"}, "int")],
)
def test_bad_overrides_are_refused_with_the_field(
    repository: Path, overrides: dict[str, object], message: str
) -> None:
    with pytest.raises(SettingsError, match=message):
        InferkitReplica(str(repository), overrides).__serve_build_asgi_app__()

"""The Swagger UI page of a real server, rendered by a real headless Chromium.

Chromium is a Debian package (``apt-get install chromium``), not something pip can install, so
this test is skipped where it is missing. It proves the page works offline: the assets come from
the ``swagger-ui-bundle`` package, and the browser runs with networking to the outside off.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
from harness import inferkit_start, write_repository

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.browser,
    pytest.mark.skipif(CHROMIUM is None, reason="Debian's chromium is not installed"),
]


def test_swagger_ui_lists_the_infer_route(tmp_path: Path) -> None:
    assert CHROMIUM is not None
    root = write_repository(
        tmp_path / "repo", {"echo": {"name": "echo", "implementation": "model.Echo"}}
    )
    with inferkit_start(root) as server:
        result = subprocess.run(
            [
                CHROMIUM,
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-quic",
                "--no-first-run",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                f"--user-data-dir={tmp_path / 'profile'}",
                "--virtual-time-budget=10000",
                "--dump-dom",
                f"{server.url}/v2/docs",
            ],
            capture_output=True,
            text=True,
            timeout=120,
        )
    dom = result.stdout
    # Rendered by Swagger UI's JavaScript, so present only if the bundle loaded and ran.
    assert "swagger-ui" in dom and 'class="opblock' in dom, result.stderr[-2000:]
    assert "/v2/models/{model_name}/infer" in dom
    assert "Open Inference Protocol (V2) - inferkit" in dom

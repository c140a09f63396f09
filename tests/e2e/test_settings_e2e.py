"""A real ``inferkit start`` on a repository with a typo and MLServer fields it does not implement.

It serves anyway and says so in its log: one warning per field, naming the file, once, however
many times the repository is rescanned afterwards (every load and index call rescans).
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import httpx
import pytest
from harness import inferkit_start, write_repository

pytestmark = pytest.mark.e2e


def test_start_warns_about_typos_and_unimplemented_fields(tmp_path: Path) -> None:
    root = write_repository(
        tmp_path / "repo",
        {
            "echo": {
                "name": "echo",
                "implementation": "model.Echo",
                "warm_workers": True,
                "parameters": {"inference_pool_gid": "g", "verison": "1"},
            },
            "typo": {"name": "typo", "implementaton": "model.Echo"},
        },
        cache_enabled=True,
        debug="no",
        http_prot=9000,
    )
    settings = root / "settings.json"
    echo = root / "echo" / "model-settings.json"
    typo = root / "typo" / "model-settings.json"
    expected = [
        f"Ignoring 'cache_enabled' in {settings}: inferkit does not implement it"
        " (no response cache; requests always run the model)",
        f"Ignoring unknown setting 'http_prot' in {settings}; did you mean 'http_port'?",
        f"Ignoring 'warm_workers' in {echo}: inferkit does not implement it"
        " (workers load the model when they start; deprecated in MLServer too)",
        f"Ignoring 'parameters.inference_pool_gid' in {echo}: inferkit does not implement it"
        " (no shared inference pools; each model has its own workers)",
        f"Ignoring unknown setting 'parameters.verison' in {echo};"
        " did you mean 'parameters.version'?",
        f"Ignoring unknown setting 'implementaton' in {typo}; did you mean 'implementation'?",
    ]

    with inferkit_start(root) as running, httpx.Client(base_url=running.url) as http:
        body = {"inputs": [{"name": "x", "shape": [1], "datatype": "INT32", "data": [7]}]}
        assert http.post("/v2/models/echo/infer", json=body).status_code == 200
        # The misspelt implementation leaves "typo" without one: it fails to load; the client
        # is told the class (expose_load_errors is off), the log says why (below).
        failed = http.post("/v2/repository/models/typo/load").json()
        assert failed == {
            "error": "Model 'typo' failed to load: ModelLoadError"
            " (the reason is in the server log)",
            "code": "MODEL_LOAD_FAILED",
        }
        assert http.post("/v2/repository/index", json={}).status_code == 200
        assert http.post("/v2/repository/models/echo/load").status_code == 200
        code, log = running.stop()

    assert code == 0
    assert "Model 'typo' failed to load: No implementation set" in log
    warnings = [
        line.split(" WARNING - ", 1)[1] for line in log.splitlines() if " WARNING - " in line
    ]
    assert sorted(line for line in warnings if line.startswith("Ignoring")) == sorted(expected)
    assert "Traceback" not in log


def test_bad_log_level_is_one_line_and_exit_2(tmp_path: Path) -> None:
    root = write_repository(tmp_path / "repo", {}, log_level="chatty")
    done = subprocess.run(
        [sys.executable, "-m", "inferkit", "start", str(root)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 2
    assert done.stderr == (
        f"inferkit: error: Invalid settings in {root / 'settings.json'}: Expected one of"
        " DEBUG, INFO, WARNING, ERROR, CRITICAL, got 'chatty' - at `$.log_level`\n"
    )

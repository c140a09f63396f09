"""The ``inferkit`` command, without serving: settings warnings and one-line errors."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import inferkit.logs
import inferkit.runner
from inferkit.cli import main
from inferkit.server import Server

LEVELS = "DEBUG, INFO, WARNING, ERROR, CRITICAL"


@pytest.fixture
def served(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[Server]]:
    """Run ``main`` up to the runner: the servers it would serve, and the loggers put back."""
    servers: list[Server] = []
    monkeypatch.setattr(inferkit.runner, "serve", servers.append)
    logger = logging.getLogger("inferkit")
    saved = logger.handlers[:], logger.level, logger.propagate
    yield servers
    for handler in logger.handlers:
        if handler not in saved[0]:
            handler.close()
    logger.handlers[:], logger.propagate = saved[0], saved[2]
    logger.setLevel(saved[1])
    logging.getLogger(inferkit.logs.ACCESS_LOGGER).setLevel(logging.NOTSET)


def repository(root: Path, **settings: Any) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    (root / "settings.json").write_text(json.dumps(settings))
    return root


def test_settings_warnings_are_logged_one_by_one(
    tmp_path: Path,
    served: list[Server],
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    folder = repository(tmp_path, http_prot=9000, cache_enabled=True, debug="yes")
    monkeypatch.setenv("MLSERVER_KAFKA_ENABLED", "on")
    # Logging configured the test's way, so that caplog sees the records.
    monkeypatch.setattr(inferkit.logs, "configure_logging", lambda *a, **k: None)

    with caplog.at_level(logging.WARNING, logger="inferkit"):
        assert main(["start", str(folder)]) == 0

    path = folder / "settings.json"
    assert [(r.name, r.getMessage()) for r in caplog.records] == [
        (
            "inferkit.cli",
            f"Ignoring unknown setting 'http_prot' in {path}; did you mean 'http_port'?",
        ),
        (
            "inferkit.cli",
            f"Ignoring 'cache_enabled' in {path}: inferkit does not implement it"
            " (no response cache; requests always run the model)",
        ),
        (
            "inferkit.cli",
            "Ignoring 'kafka_enabled' in environment variable MLSERVER_KAFKA_ENABLED:"
            " inferkit does not implement it (no Kafka server; REST and gRPC only)",
        ),
    ]
    assert served[0].settings.debug is True


@pytest.mark.parametrize(
    ("settings", "argv", "error"),
    [
        (
            {"log_level": "verbose"},
            [],
            "Invalid settings in {path}: Expected one of " + LEVELS + ", got 'verbose'"
            " - at `$.log_level`",
        ),
        (
            {},
            ["--log-level", "loud"],
            f"Invalid settings in --log-level: Expected one of {LEVELS}, got 'loud'",
        ),
        (
            {"debug": "perhaps"},
            [],
            "Invalid settings in {path}: Expected `bool`, got `str` - at `$.debug`",
        ),
    ],
)
def test_bad_settings_are_one_line_and_exit_2(
    tmp_path: Path,
    served: list[Server],
    capsys: pytest.CaptureFixture[str],
    settings: dict[str, Any],
    argv: list[str],
    error: str,
) -> None:
    folder = repository(tmp_path, **settings)
    assert main(["start", str(folder), *argv]) == 2
    path = folder / "settings.json"
    assert capsys.readouterr().err == f"inferkit: error: {error.format(path=path)}\n"
    assert served == []


def test_log_level_flag_in_any_case(tmp_path: Path, served: list[Server]) -> None:
    folder = repository(tmp_path)
    assert main(["start", str(folder), "--log-level", "warning"]) == 0
    assert logging.getLogger("inferkit").level == logging.WARNING

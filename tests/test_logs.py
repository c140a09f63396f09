"""Logging: text and JSON formats, levels, logging_settings, and the REST access line."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from toymodels import sum_model

from inferkit import Server, Settings, errors
from inferkit.logs import configure_logging, escape_for_log, log_access
from inferkit.transports.rest import create_rest_app

BODY = {"inputs": [{"name": "x", "shape": [1, 3], "datatype": "FP32", "data": [1, 2, 3]}]}


@pytest.fixture
def restore_logging() -> Iterator[None]:
    """configure_logging changes the process-wide ``inferkit`` loggers: put them back."""
    names = ["inferkit", "inferkit.access", "inferkit.custom"]
    saved = [
        (logger, logger.handlers[:], logger.level, logger.propagate, logger.disabled)
        for logger in map(logging.getLogger, names)
    ]
    yield
    for logger, handlers, level, propagate, disabled in saved:
        for handler in logger.handlers:
            if handler not in handlers:
                handler.close()
        logger.handlers[:] = handlers
        logger.setLevel(level)
        logger.propagate = propagate
        logger.disabled = disabled


def configured(**settings: Any) -> io.StringIO:
    stream = io.StringIO()
    level = settings.pop("level", None)
    configure_logging(Settings(**settings), level=level, stream=stream)
    return stream


@pytest.mark.usefixtures("restore_logging")
def test_text_by_default() -> None:
    stream = configured()
    logging.getLogger("inferkit.server").info("hello %s", "there")
    logging.getLogger("inferkit.server").debug("not at INFO")
    line = stream.getvalue()
    assert line.endswith(" [inferkit.server] INFO - hello there\n")
    assert line.count("\n") == 1


@pytest.mark.usefixtures("restore_logging")
def test_json_lines_with_extra_fields_and_exceptions() -> None:
    stream = configured(use_structured_logging=True)
    log = logging.getLogger("inferkit.server")
    # A framework's private attribute (Ray's record factory adds one) is not a field.
    log.warning("careful", extra={"model": "iris", "_ray_timestamp_ns": 1})
    try:
        raise RuntimeError("boom")
    except RuntimeError:
        log.exception("failed")
    first, second = map(json.loads, stream.getvalue().splitlines())
    assert first["time"].endswith("+00:00")
    del first["time"]
    assert first == {
        "level": "WARNING",
        "logger": "inferkit.server",
        "message": "careful",
        "model": "iris",
    }
    assert second["level"] == "ERROR" and second["message"] == "failed"
    assert (
        second["exception"].startswith("Traceback") and "RuntimeError: boom" in second["exception"]
    )


@pytest.mark.parametrize(
    ("settings", "expected"),
    [
        ({}, logging.INFO),
        ({"log_level": "warning"}, logging.WARNING),
        ({"debug": True}, logging.DEBUG),
        ({"debug": True, "level": "ERROR"}, logging.ERROR),  # the CLI flag wins
    ],
)
@pytest.mark.usefixtures("restore_logging")
def test_level(settings: dict[str, Any], expected: int) -> None:
    configured(**settings)
    assert logging.getLogger("inferkit").level == expected


@pytest.mark.usefixtures("restore_logging")
def test_configuring_twice_keeps_one_handler() -> None:
    configured()
    stream = configured()
    logging.getLogger("inferkit").warning("once")
    assert stream.getvalue().count("once") == 1
    assert len(logging.getLogger("inferkit").handlers) == 1


@pytest.mark.usefixtures("restore_logging")
def test_logging_settings_are_applied_last(tmp_path: Path) -> None:
    config = {
        "version": 1,
        "disable_existing_loggers": False,
        "loggers": {"inferkit.custom": {"level": "ERROR"}},
    }
    configured(logging_settings=config)
    assert logging.getLogger("inferkit.custom").level == logging.ERROR
    path = tmp_path / "logging.json"
    path.write_text(json.dumps({**config, "loggers": {"inferkit.custom": {"level": "DEBUG"}}}))
    configured(logging_settings=str(path))
    assert logging.getLogger("inferkit.custom").level == logging.DEBUG


@pytest.mark.usefixtures("restore_logging")
def test_bad_logging_settings_are_a_settings_error(tmp_path: Path) -> None:
    missing = tmp_path / "nope.json"
    with pytest.raises(errors.SettingsError) as info:
        configured(logging_settings=str(missing))
    assert info.value.message.startswith(f"Invalid logging_settings ({missing}): ")
    with pytest.raises(errors.SettingsError) as info:
        configured(logging_settings={"version": 99})
    assert (
        info.value.message == "Invalid logging_settings (logging_settings): Unsupported version: 99"
    )


@pytest.mark.usefixtures("restore_logging")
def test_access_line_as_text_and_json() -> None:
    def access() -> None:
        log_access(
            method="POST",
            path="/v2/models/iris/infer",
            status=200,
            duration_s=0.0012345,
            request_id="r-1",
            model="iris",
            version="",
        )

    text = configured()
    access()
    assert text.getvalue().endswith(
        "[inferkit.access] INFO - POST /v2/models/iris/infer 200 1.234ms "
        "request_id=r-1 model=iris version=-\n"
    )
    structured = configured(use_structured_logging=True)
    access()
    entry = json.loads(structured.getvalue())
    assert {k: entry[k] for k in ("method", "path", "status", "duration_ms")} == {
        "method": "POST",
        "path": "/v2/models/iris/infer",
        "status": 200,
        "duration_ms": 1.234,
    }
    assert (entry["request_id"], entry["model"], entry["version"]) == ("r-1", "iris", "")


async def rest_call(path: str, **kwargs: Any) -> httpx.Response:
    server = Server([sum_model(), sum_model("v", version="1")])
    await server.start()
    transport = httpx.ASGITransport(app=create_rest_app(server))
    async with httpx.AsyncClient(transport=transport, base_url="http://t") as http:
        return await http.post(path, **kwargs)


@pytest.mark.parametrize(
    ("path", "body", "headers", "expected"),
    [
        # the V2 request id, the resolved model and version
        ("/v2/models/v/infer", {**BODY, "id": "abc"}, {}, "200 request_id=abc model=v version=1"),
        # a failed request: the proxy's X-Request-Id, the model from the path
        (
            "/v2/models/nope/infer",
            BODY,
            {"X-Request-Id": "px"},
            "404 request_id=px model=nope version=-",
        ),
        ("/v2/models/sum/infer", {"inputs": 1}, {}, "400 request_id=- model=sum version=-"),
    ],
)
async def test_one_access_line_per_rest_infer_request(
    caplog: pytest.LogCaptureFixture,
    path: str,
    body: dict[str, Any],
    headers: dict[str, str],
    expected: str,
) -> None:
    caplog.set_level(logging.INFO, logger="inferkit.access")
    await rest_call(path, json=body, headers=headers)
    (record,) = [r for r in caplog.records if r.name == "inferkit.access"]
    message = record.getMessage()
    assert message.startswith(f"POST {path} ")
    status, rest = expected.split(" ", 1)
    assert f" {status} " in message and message.endswith(rest)


async def test_the_access_line_of_a_success_has_the_generated_id(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="inferkit.access")
    response = await rest_call("/v2/models/sum/infer", json=BODY)
    (record,) = [r for r in caplog.records if r.name == "inferkit.access"]
    assert record.__dict__["request_id"] == response.json()["id"]
    assert record.__dict__["status"] == 200 and record.__dict__["model"] == "sum"


BAD_SHAPE = {"inputs": [{"name": "x", "shape": [7], "datatype": "FP32", "data": [1, 2, 3]}]}


@pytest.mark.parametrize(("body", "status"), [(BODY, 200), (BAD_SHAPE, 400)])
async def test_server_timing_on_infer_responses(body: Any, status: int) -> None:
    response = await rest_call("/v2/models/sum/infer", json=body)
    assert response.status_code == status
    queue, compute = response.headers["server-timing"].split(", ")
    assert queue.startswith("queue;dur=") and float(queue.split("=")[1]) >= 0
    assert compute.startswith("compute;dur=") and float(compute.split("=")[1]) >= 0


async def test_no_server_timing_when_the_request_never_reached_a_model() -> None:
    response = await rest_call("/v2/models/nope/infer", json=BODY)
    assert response.status_code == 404 and "server-timing" not in response.headers


@pytest.mark.usefixtures("restore_logging")
@pytest.mark.parametrize("enabled", [True, False])
def test_access_log_setting(enabled: bool) -> None:
    stream = io.StringIO()
    configure_logging(Settings(access_log=enabled), stream=stream)
    log_access(method="POST", path="/v2/models/m/infer", status=200, duration_s=0.001)
    logging.getLogger("inferkit.other").info("still logged")
    lines = stream.getvalue().splitlines()
    assert any("POST /v2/models/m/infer 200" in line for line in lines) is enabled
    assert any("still logged" in line for line in lines)


# -- #16.2: values a client chose cannot forge log lines ----------------------------------


@pytest.mark.parametrize(
    ("value", "escaped"),
    [
        ("plain-id_1.2", "plain-id_1.2"),
        ("é模型", "é模型"),  # printable non-ASCII is kept
        ("a\nFAKE", "a\\x0aFAKE"),
        ("a\r\nb", "a\\x0d\\x0ab"),
        ("\x1b[31mred", "\\x1b[31mred"),
        ("\x85\u2028\u2029", "\\x85\\u2028\\u2029"),  # NEL and Unicode line separators
        ("a\\x0ab", "a\\\\x0ab"),  # a literal backslash cannot pass for an escape
    ],
)
def test_escape_for_log(value: str, escaped: str) -> None:
    assert escape_for_log(value) == escaped
    assert len(escape_for_log(value).splitlines()) <= 1


@pytest.mark.usefixtures("restore_logging")
def test_an_access_line_stays_one_line_whatever_the_client_sent() -> None:
    def access() -> None:
        log_access(
            method="POST",
            path="/v2/models/ev\nil/infer",
            status=404,
            duration_s=0.001,
            request_id="r\n2026-12-06 00:00:00,000 [inferkit.access] INFO - forged",
            model="ev\nil",
            version="v\r1",
        )

    text = configured()
    access()
    (line,) = text.getvalue().splitlines()
    assert line.endswith(
        "POST /v2/models/ev\\x0ail/infer 404 1.000ms "
        "request_id=r\\x0a2026-12-06 00:00:00,000 [inferkit.access] INFO - forged "
        "model=ev\\x0ail version=v\\x0d1"
    )
    structured = configured(use_structured_logging=True)
    access()
    (line,) = structured.getvalue().splitlines()
    entry = json.loads(line)
    assert (entry["path"], entry["model"]) == ("/v2/models/ev\\x0ail/infer", "ev\\x0ail")


async def test_rest_access_line_of_a_forging_request_is_one_line(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="inferkit.access")
    await rest_call("/v2/models/su%0Am/infer", json=BODY)
    await rest_call("/v2/models/sum/infer", json={**BODY, "id": "x\nFORGED"})
    await rest_call("/v2/models/nope/infer", json=BODY, headers={"x-request-id": "p\x0bq"})
    messages = [r.getMessage() for r in caplog.records if r.name == "inferkit.access"]
    assert [len(m.splitlines()) for m in messages] == [1, 1, 1]
    assert "model=su\\x0am" in messages[0] and "/v2/models/su\\x0am/infer" in messages[0]
    assert "request_id=x\\x0aFORGED" in messages[1]
    assert "request_id=p\\x0bq" in messages[2]

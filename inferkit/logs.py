"""Logging: one ``inferkit`` logger tree, as text or as JSON lines, and the access log line.

Library code only ever logs to ``logging.getLogger("inferkit.<module>")``; nothing here runs on
import. The CLI calls :func:`configure_logging` once with the settings; an application that
embeds inferkit configures logging its own way and the ``inferkit`` loggers simply propagate.

Every inference request answered over REST (and gRPC, when it calls :func:`log_access`) logs
one line on ``inferkit.access`` at INFO, with the request id, model, version, status and
duration; in JSON mode they are separate fields. Set that logger to WARNING to silence it.
Values a client chose are escaped (:func:`escape_for_log`), so none can forge a line.
"""

from __future__ import annotations

import json
import logging
import logging.config
import sys
from datetime import datetime, timezone
from pathlib import Path
from typing import IO, Any

import msgspec

from .errors import SettingsError
from .events import Event, InferenceFinished
from .settings import Settings

__all__ = [
    "ACCESS_LOGGER",
    "JsonFormatter",
    "access_listener",
    "configure_logging",
    "escape_for_log",
    "log_access",
]

#: The logger of the access lines.
ACCESS_LOGGER = "inferkit.access"

TEXT_FORMAT = "%(asctime)s [%(name)s] %(levelname)s - %(message)s"

# The attributes every LogRecord has; anything else was passed with ``extra=`` and is a field.
_RECORD_ATTRIBUTES = frozenset(logging.LogRecord("", 0, "", 0, "", None, None).__dict__) | {
    "message",
    "asctime",
    "taskName",
}

_access = logging.getLogger(ACCESS_LOGGER)


def escape_for_log(value: str) -> str:
    """``value`` with what could forge or garble a log line escaped: control characters
    (newlines, carriage returns, ANSI escapes), every other unprintable character, and the
    backslash, so that an escape in the log always means one the server made.

    For values a client chose (a URL path, a request id, a model name): ``\\n`` becomes
    ``\\x0a``, as nginx writes them. Printable text, non-ASCII letters included, is kept.
    """
    if value.isprintable() and "\\" not in value:
        return value  # the common case, checked in C
    return "".join(_escape_char(c) for c in value)


def _escape_char(char: str) -> str:
    if char == "\\":
        return "\\\\"
    if char.isprintable():
        return char
    code = ord(char)
    if code < 0x100:
        return f"\\x{code:02x}"
    return f"\\u{code:04x}" if code < 0x10000 else f"\\U{code:08x}"


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, message, then the ``extra`` fields."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, timezone.utc).isoformat(
                timespec="milliseconds"
            ),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        for key, value in record.__dict__.items():
            # Names with "_" are frameworks' own, not fields: Ray's record factory adds
            # ``_ray_timestamp_ns`` to every record of a process that imports it.
            if key not in _RECORD_ATTRIBUTES and key not in entry and not key.startswith("_"):
                entry[key] = value
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        if record.stack_info:
            entry["stack"] = self.formatStack(record.stack_info)
        return msgspec.json.encode(entry, enc_hook=repr).decode()


def configure_logging(
    settings: Settings, *, level: str | None = None, stream: IO[str] | None = None
) -> logging.Logger:
    """Send the ``inferkit`` loggers to ``stream`` (stderr) as the settings say; returns the root.

    The level is ``level`` if given (the CLI's ``--log-level``), else DEBUG with ``debug``,
    else ``log_level``. ``use_structured_logging`` switches to JSON lines. ``logging_settings``
    (a ``logging.config`` dict, or a JSON / INI file path, as in MLServer) is applied last, so
    it can change any of this.
    """
    handler = logging.StreamHandler(stream if stream is not None else sys.stderr)
    formatter = (
        JsonFormatter() if settings.use_structured_logging else logging.Formatter(TEXT_FORMAT)
    )
    handler.setFormatter(formatter)
    root = logging.getLogger("inferkit")
    for old in root.handlers:
        old.close()
    root.handlers[:] = [handler]
    name = (level or ("DEBUG" if settings.debug else settings.log_level)).upper()
    try:
        root.setLevel(name)
    except ValueError:  # Settings built in code skip the loader's check: still no traceback
        raise SettingsError(f"Invalid log level {name!r}") from None
    # Our handler is the one that writes; an application's root handlers would print twice.
    root.propagate = False
    logging.getLogger(ACCESS_LOGGER).setLevel(
        logging.NOTSET if settings.access_log else logging.WARNING
    )
    if settings.logging_settings:
        _apply(settings.logging_settings)
    return root


def _apply(config: str | dict[str, Any]) -> None:
    try:
        if isinstance(config, dict):
            logging.config.dictConfig(config)
        elif config.endswith(".json"):
            logging.config.dictConfig(json.loads(Path(config).read_text()))
        else:
            logging.config.fileConfig(config, disable_existing_loggers=False)
    except (OSError, ValueError, TypeError, KeyError, RuntimeError) as exc:
        where = "logging_settings" if isinstance(config, dict) else config
        raise SettingsError(f"Invalid logging_settings ({where}): {exc}") from None


def log_access(
    *,
    method: str,
    path: str,
    status: int | str,
    duration_s: float,
    request_id: str = "",
    model: str = "",
    version: str = "",
) -> None:
    """Log one access line (a no-op unless ``inferkit.access`` is enabled for INFO)."""
    if not _access.isEnabledFor(logging.INFO):
        return
    # Every value but the duration may come from the client: escaped, none can start a line.
    method, path, request_id = map(escape_for_log, (method, path, request_id))
    model, version = escape_for_log(model), escape_for_log(version)
    if isinstance(status, str):
        status = escape_for_log(status)
    duration_ms = round(duration_s * 1000, 3)
    _access.info(
        "%s %s %s %.3fms request_id=%s model=%s version=%s",
        method,
        path,
        status,
        duration_ms,
        request_id or "-",
        model or "-",
        version or "-",
        extra={
            "method": method,
            "path": path,
            "status": status,
            "duration_ms": duration_ms,
            "request_id": request_id,
            "model": model,
            "version": version,
        },
    )


def access_listener(event: Event) -> None:
    """The access line of every call a transport answered, from its outcome record.

    A listener of every ``Server``: direct ``Server.infer`` calls have no transport and no line.
    """
    if type(event) is not InferenceFinished or not event.transport:
        return
    if not _access.isEnabledFor(logging.INFO):
        return
    status: int | str = int(event.status) if event.status.isdigit() else event.status
    log_access(
        method="POST",  # every inference call is a POST, gRPC's too (HTTP/2)
        path=event.path,
        status=status or "-",
        duration_s=event.duration_s,
        request_id=event.request_id,
        model=event.model,
        version=event.version,
    )

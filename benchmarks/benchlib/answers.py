"""Checking answers: fully once before the load, then cheaply on every response under load.

Before a server is loaded, one response is parsed and its first output compared with the
expected values. The exact bytes of that output's ``"data": [...]`` are then the *marker*: under
load, a response counts as correct only if it is 2xx and contains the marker, which is a substring
search the load generator can afford on every response (the rest of a body may legitimately vary,
such as MLServer's per-response ``id``). :func:`check_values` is the comparison itself, shared
with the gRPC answer check (``grpcwire``).
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from typing import Any

__all__ = ["AnswerError", "check_answer", "check_values", "data_marker"]


class AnswerError(Exception):
    """A response that is not the expected answer; the message says why."""


def check_answer(body: bytes, expected: Sequence[float], rtol: float) -> None:
    """Raise :class:`AnswerError` unless ``body``'s first output holds ``expected``."""
    try:
        document = json.loads(body)
        data = document["outputs"][0]["data"]
    except (ValueError, KeyError, IndexError, TypeError) as exc:
        raise AnswerError(f"not a V2 response with an output: {_excerpt(body)}") from exc
    check_values(_flatten(data), expected, rtol, _excerpt(body))


def check_values(got: Sequence[Any], expected: Sequence[float], rtol: float, where: str) -> None:
    """Raise :class:`AnswerError` unless ``got`` matches ``expected`` (``where``: for messages)."""
    if len(got) != len(expected):
        raise AnswerError(f"expected {len(expected)} values, got {len(got)}: {where}")
    for index, (value, want) in enumerate(zip(got, expected, strict=True)):
        # bool is an int to Python, never a right answer here.
        number = isinstance(value, (int, float)) and not isinstance(value, bool)
        if not number or not math.isclose(value, want, rel_tol=rtol):
            raise AnswerError(f"value {index} is {value!r}, expected {want!r}")


def data_marker(body: bytes) -> bytes:
    """The bytes of the first ``"data": [...]`` in ``body`` (brackets matched, nesting allowed)."""
    key = body.find(b'"data"')
    start = body.find(b"[", key)
    if key < 0 or start < 0:
        raise AnswerError(f"no data array in {_excerpt(body)}")
    depth = 0
    for index in range(start, len(body)):
        char = body[index]
        if char == ord("["):
            depth += 1
        elif char == ord("]"):
            depth -= 1
            if depth == 0:
                return body[key : index + 1]
    raise AnswerError(f"unterminated data array in {_excerpt(body)}")


def _flatten(data: Any) -> list[Any]:
    if isinstance(data, list):
        return [leaf for item in data for leaf in _flatten(item)]
    return [data]


def _excerpt(body: bytes, limit: int = 200) -> str:
    text = body[:limit].decode("utf-8", "replace")
    return text + ("..." if len(body) > limit else "")

"""``mlserver.errors`` for model files (see :mod:`inferkit.compat`).

MLServer's errors carry an HTTP status; inferkit's errors carry none (each transport maps them),
so ``status_code`` is accepted and dropped, and the class decides the status.
"""

from __future__ import annotations

from typing import Any

from ...errors import InferkitError, InvalidRequest

__all__ = ["InferenceError", "MLServerError"]


class MLServerError(InferkitError):
    """MLServer's base error: a 500 with the given message."""

    def __init__(self, msg: str, status_code: int = 500, **_: Any) -> None:
        super().__init__(msg)


class InferenceError(InvalidRequest):
    """Raised by model code for a request it cannot answer: a 400 with the given message."""

    def __init__(self, msg: str, status_code: int = 400, **_: Any) -> None:
        super().__init__(msg)

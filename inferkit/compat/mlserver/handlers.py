"""``mlserver.handlers`` (and ``mlserver.handlers.custom``) for model files written for MLServer:
``@custom_handler(rest_path, rest_method)``, served by inferkit's REST transport."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from ...handlers import CustomHandler, custom_handler, find_handlers

__all__ = ["CustomHandler", "custom_handler", "get_custom_handlers"]


def get_custom_handlers(model: object) -> list[tuple[CustomHandler, Callable[..., Any]]]:
    """The ``(handler, bound method)`` pairs of a model instance, as MLServer lists them."""
    return find_handlers(model)

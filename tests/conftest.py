"""Shared fixtures: a ``server`` factory over toy models. Kept small on purpose."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from toymodels import sum_model

from inferkit import Server, Settings


@pytest.fixture
def make_server() -> Callable[..., Server]:
    """``make_server(*models, **settings)``: a Server (not started) over the given models."""

    def make(*models: Any, **settings: Any) -> Server:
        return Server(models or [sum_model()], settings=Settings(**settings))

    return make

"""Fixtures of the worker tests (helpers live in ``parallel_support``)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from parallel_support import MODELS, Gate

from inferkit import ModelSettings


@pytest.fixture(scope="session")
def models_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("parallel_models")
    (folder / "parallel_toys.py").write_text(MODELS)
    return folder


@pytest.fixture(scope="session")
def settings_for(models_folder: Path) -> Callable[..., ModelSettings]:
    """``settings_for("Gated", name="gated")``: settings of a class in the models file."""

    def make(cls: str, name: str | None = None, **fields: Any) -> ModelSettings:
        return ModelSettings(
            name=name or cls.lower(),
            implementation=f"parallel_toys.{cls}",
            folder=str(models_folder),
            **fields,
        )

    return make


@pytest.fixture
def gate(tmp_path: Path) -> Iterator[Gate]:
    gate = Gate(tmp_path / "gate")
    yield gate
    gate.open()  # never leave a worker blocked if a test failed while holding it

"""The registry: the slot lifecycle as one transition table, and forgetting vanished versions."""

from __future__ import annotations

import asyncio
import itertools
from typing import get_args

import pytest
from toymodels import SumModel, sum_model

from inferkit import ModelSettings, errors
from inferkit.events import Event, ModelFailed
from inferkit.model import ModelProtocol
from inferkit.registry import Action, IllegalTransition, Registry, Slot
from inferkit.settings import ModelParameters
from inferkit.types import State

# Written out again rather than read from TRANSITIONS, so an edit of the table shows up here.
LEGAL: dict[tuple[State, Action], State] = {
    ("UNAVAILABLE", "load"): "LOADING",
    ("UNAVAILABLE", "fail"): "FAILED",  # settings that could not even be read
    ("UNAVAILABLE", "unload"): "UNAVAILABLE",
    ("FAILED", "load"): "LOADING",
    ("FAILED", "fail"): "FAILED",
    ("FAILED", "unload"): "FAILED",  # keeps its reason
    ("LOADING", "loaded"): "READY",
    ("LOADING", "fail"): "FAILED",
    ("READY", "load"): "READY",  # a reload serves the old instance meanwhile
    ("READY", "loaded"): "READY",
    ("READY", "fail"): "READY",  # a failed reload keeps the old instance
    ("READY", "unload"): "UNLOADING",
    ("UNLOADING", "unloaded"): "UNAVAILABLE",
}
MOVES = list(itertools.product(get_args(State), get_args(Action)))


def slot_in(state: State) -> Slot:
    slot = Slot("m", "", ModelSettings(name="m"), lambda _settings: sum_model("m"))
    slot.state = state
    return slot


@pytest.mark.parametrize(("state", "action"), [m for m in MOVES if m in LEGAL])
def test_every_legal_move(state: State, action: Action) -> None:
    slot = slot_in(state)
    assert slot.move(action) == LEGAL[state, action]
    assert slot.state == LEGAL[state, action]


@pytest.mark.parametrize(("state", "action"), [m for m in MOVES if m not in LEGAL])
def test_every_other_move_is_an_internal_error(state: State, action: Action) -> None:
    slot = slot_in(state)
    with pytest.raises(IllegalTransition, match=f"cannot '{action}' when {state}"):
        slot.move(action)
    assert slot.state == state


def test_an_illegal_move_is_no_client_error() -> None:
    # Transports answer any non-InferkitError with a generic internal error, never its text.
    assert not issubclass(IllegalTransition, errors.InferkitError)


class Gate:
    """Holds the loads of :class:`Gated` models until opened; then they fail if ``fails``."""

    def __init__(self) -> None:
        self.entered = asyncio.Event()
        self.opened = asyncio.Event()
        self.fails = False

    def factory(self, settings: ModelSettings) -> ModelProtocol:
        return Gated(settings, self)


class Gated(SumModel):
    def __init__(self, settings: ModelSettings, gate: Gate) -> None:
        super().__init__(settings)
        self.gate = gate

    async def load(self) -> bool:
        self.gate.entered.set()
        await self.gate.opened.wait()
        return not self.gate.fails


def registry_of(gate: Gate, *versions: str) -> tuple[Registry, list[Event]]:
    events: list[Event] = []
    registry = Registry(events.append)
    for version in versions:
        registry.add(
            ModelSettings(name="m", parameters=ModelParameters(version=version)), gate.factory
        )
    return registry, events


def states(registry: Registry) -> dict[str, State]:
    return {slot.version: slot.state for slot in registry}


async def test_a_failed_reload_keeps_the_old_instance_ready() -> None:
    gate = Gate()
    registry, events = registry_of(gate, "1")
    gate.opened.set()
    [slot] = await registry.load("m")
    old = slot.model
    gate.fails = True
    with pytest.raises(errors.ModelLoadError):
        await registry.load("m")
    assert (slot.state, slot.model, slot.reason) == ("READY", old, "")
    assert not any(isinstance(event, ModelFailed) for event in events)


async def test_a_failed_load_is_failed_with_its_reason_until_loaded_again() -> None:
    gate = Gate()
    registry, events = registry_of(gate, "1")
    gate.opened.set()
    gate.fails = True
    with pytest.raises(errors.ModelLoadError):
        await registry.load("m")
    [slot] = registry
    assert (slot.state, slot.model, slot.reason) == ("FAILED", None, "load() returned False")
    assert events == [ModelFailed(model="m", version="1", reason="load() returned False")]
    await registry.unload("m")
    assert (slot.state, slot.reason) == ("FAILED", "load() returned False")
    gate.fails = False
    await registry.load("m")
    assert (slot.state, slot.reason) == ("READY", "")


async def test_forgetting_a_version_that_is_not_loaded_is_at_once() -> None:
    registry, _ = registry_of(Gate(), "1", "2")
    registry.forget("m", "1")
    registry.forget("m", "3")  # unknown: nothing happens
    registry.forget("other", "")
    assert states(registry) == {"2": "UNAVAILABLE"}
    registry.forget("m", "2")
    assert "m" not in registry
    with pytest.raises(errors.ModelNotFound):
        registry.get("m")


async def test_a_forgotten_loaded_version_serves_until_unloaded() -> None:
    gate = Gate()
    registry, _ = registry_of(gate, "1", "2")
    gate.opened.set()
    await registry.load("m")
    registry.forget("m", "1")
    registry.forget("m", "2")
    assert states(registry) == {"1": "READY", "2": "READY"}
    slot = registry.get("m", "1")
    assert slot.enter() is slot.model  # still serving from memory
    slot.leave()
    await registry.unload("m", "1")
    assert states(registry) == {"2": "READY"}
    registry.add(registry.get("m", "2").settings, gate.factory)  # its folder came back
    await registry.unload("m", "2")
    assert states(registry) == {"2": "UNAVAILABLE"}


@pytest.mark.parametrize(("fails", "left"), [(False, {"2": "READY"}), (True, {})])
async def test_versions_forgotten_while_loading(fails: bool, left: dict[str, State]) -> None:
    gate = Gate()
    registry, _ = registry_of(gate, "1", "2")
    gate.fails = fails
    # The default version ("2", the newest) loads first and waits at the gate.
    loading = asyncio.create_task(registry.load("m"))
    await gate.entered.wait()
    registry.forget("m", "1")  # not loaded: goes now, and is not loaded afterwards
    registry.forget("m", "2")  # loading: goes only if its load fails
    gate.opened.set()
    if fails:
        with pytest.raises(errors.ModelLoadError):
            await loading
    else:
        assert [slot.version for slot in await loading] == ["2", "1"]
    assert states(registry) == left

"""Which models exist, which versions, in which state: name -> version -> slot.

Only :mod:`inferkit.server` imports this module. A slot keeps the settings of one model version,
how to build it, the instance currently serving, its state and the reason of a failure. Loads
and unloads of one model are serialised by a lock per name; inference never takes that lock, it
only reads ``slot.model`` once, so a reload keeps serving the old instance until the new one is
READY and swapped in. Unloading waits for in-flight requests of the slot before ``unload()``.

Rule: every change of ``slot.state`` goes through :data:`TRANSITIONS` (h11's ``_state.py``
style): the lifecycle is this table, and a move it does not list is a bug in inferkit, raised
as :class:`IllegalTransition`.
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Literal

from .errors import InferkitError, ModelLoadError, ModelNotFound, ModelNotReady
from .events import Event, ModelFailed, ModelLoaded, ModelUnloaded
from .model import ModelProtocol
from .settings import ModelSettings
from .types import State

__all__ = ["TRANSITIONS", "Action", "IllegalTransition", "ModelFactory", "Registry", "Slot"]

log = logging.getLogger("inferkit.registry")

#: Builds a (not yet loaded) model from its settings; raises to mark the slot FAILED.
ModelFactory = Callable[[ModelSettings], ModelProtocol]

#: What happens to a slot: a (re)load starts, succeeds or fails; an unload starts or finishes.
Action = Literal["load", "loaded", "fail", "unload", "unloaded"]

#: The legal moves: state -> action -> next state. A READY slot stays READY while it reloads,
#: and a failed reload keeps it READY on the old instance. Unloading a slot that holds no model
#: (UNAVAILABLE, FAILED) leaves it as it is, so a FAILED model keeps its reason.
TRANSITIONS: Mapping[State, Mapping[Action, State]] = MappingProxyType(
    {
        "UNAVAILABLE": {"load": "LOADING", "fail": "FAILED", "unload": "UNAVAILABLE"},
        "FAILED": {"load": "LOADING", "fail": "FAILED", "unload": "FAILED"},
        "LOADING": {"loaded": "READY", "fail": "FAILED"},
        "READY": {"load": "READY", "loaded": "READY", "fail": "READY", "unload": "UNLOADING"},
        "UNLOADING": {"unloaded": "UNAVAILABLE"},
    }
)

# States in which a slot holds no model: a version whose folder is gone may be forgotten.
_AT_REST: frozenset[State] = frozenset({"UNAVAILABLE", "FAILED"})


class IllegalTransition(Exception):
    """A slot was asked to move in a way :data:`TRANSITIONS` does not allow.

    Always a bug in inferkit (like h11's ``LocalProtocolError`` for API misuse), never a client
    error: it is no ``InferkitError``, so transports answer it as an internal error.
    """


@dataclass(eq=False)
class Slot:
    """One model version: settings, how to build it, and what is serving now."""

    name: str
    #: "" for an unversioned model.
    version: str
    settings: ModelSettings
    factory: ModelFactory
    model: ModelProtocol | None = None
    state: State = "UNAVAILABLE"
    reason: str = ""
    inflight: int = 0
    #: Its repository folder disappeared: the registry forgets it once it holds no model.
    gone: bool = False
    _idle: asyncio.Event | None = field(default=None, repr=False)

    def move(self, action: Action) -> State:
        """Apply ``action`` as :data:`TRANSITIONS` says and return the new state.

        Raises :class:`IllegalTransition` (and changes nothing) for a move the table lacks.
        """
        target = TRANSITIONS.get(self.state, {}).get(action)
        if target is None:
            raise IllegalTransition(
                f"Model '{self.name}'{_v(self.version)} cannot {action!r} when {self.state}"
            )
        self.state = target
        return target

    def enter(self) -> ModelProtocol:
        """Take the serving instance for one request (counted until :meth:`leave`)."""
        model = self.model
        if self.state != "READY" or model is None:
            raise ModelNotReady(
                f"Model '{self.name}'{_v(self.version)} is not ready ({self.state})",
                model=self.name,
                version=self.version,
            )
        self.inflight += 1
        return model

    def leave(self) -> None:
        """End a request started with :meth:`enter`."""
        self.inflight -= 1
        if self.inflight == 0 and self._idle is not None:
            self._idle.set()

    async def wait_idle(self) -> None:
        """Wait until no request is in flight on this slot."""
        while self.inflight:
            self._idle = asyncio.Event()
            await self._idle.wait()
        self._idle = None


class Registry:
    """Models by name and version, with their lifecycle."""

    def __init__(
        self,
        emit: Callable[[Event], None],
        *,
        attach: Callable[[Slot, ModelProtocol], None] | None = None,
        detach: Callable[[Slot], None] | None = None,
        expose_errors: bool = True,
    ) -> None:
        self._slots: dict[str, dict[str, Slot]] = {}
        # Whether a failure's text becomes the slot's reason (which clients see in the index
        # and load answers) or only its class does, the text going to the log alone.
        self._expose = expose_errors
        self._locks: dict[str, asyncio.Lock] = {}
        self._emit = emit
        # Called with a newly loaded model before it turns READY (raising fails the load), and
        # when a version stops holding a model: the server's custom handler table.
        self._attach = attach
        self._detach = detach

    def add(self, settings: ModelSettings, factory: ModelFactory) -> Slot:
        """Register a model version (not loaded). Re-adding a version replaces its settings."""
        name, version = settings.name, settings.version or ""
        versions = self._slots.setdefault(name, {})
        slot = versions.get(version)
        if slot is None:
            slot = versions[version] = Slot(name, version, settings, factory)
        else:
            slot.settings, slot.factory, slot.gone = settings, factory, False
        return slot

    def fail(self, name: str, version: str, error: InferkitError) -> Slot:
        """Record a model that could not even be described (e.g. a broken settings file):
        FAILED with ``error``, which loading it raises again."""
        slot = self.add(ModelSettings(name=name), _unbuildable(error))
        slot.version = version
        log.error("Model '%s'%s cannot be loaded: %s", name, _v(version), error.message)
        self._set_failed(slot, self._public(error), error.message)
        return slot

    def _public(self, exc: BaseException) -> str:
        """The reason clients are given for a failure: its text, or only its class."""
        return _reason(exc) if self._expose else _withheld(exc)

    def __iter__(self) -> Iterator[Slot]:
        for versions in self._slots.values():
            yield from versions.values()

    def __contains__(self, name: object) -> bool:
        return name in self._slots

    def versions(self, name: str) -> list[Slot]:
        """The versions of a model, default first; raises ModelNotFound."""
        versions = self._slots.get(name)
        if not versions:
            raise ModelNotFound(f"Model '{name}' not found", model=name)
        default = self._default(versions)
        return [default, *(s for s in versions.values() if s is not default)]

    def get(self, name: str, version: str | None = None) -> Slot:
        """The slot of a version, or of the default version; raises ModelNotFound."""
        versions = self._slots.get(name)
        if not versions:
            raise ModelNotFound(f"Model '{name}' not found", model=name, version=version)
        if not version:
            return self._default(versions)
        slot = versions.get(version)
        if slot is None:
            raise ModelNotFound(
                f"Model '{name}' with version '{version}' not found", model=name, version=version
            )
        return slot

    @staticmethod
    def _default(versions: dict[str, Slot]) -> Slot:
        # The unversioned one, else the newest (natural order, so v10 > v9), as MLServer picks.
        if "" in versions:
            return versions[""]
        return versions[max(versions, key=_natural_key)]

    def _lock(self, name: str) -> asyncio.Lock:
        return self._locks.setdefault(name, asyncio.Lock())

    async def load(self, name: str, version: str | None = None) -> list[Slot]:
        """Load (or reload) every version of ``name``, or one; failures end FAILED with a reason.

        Raises ModelLoadError after trying all versions if any of them failed.
        """
        async with self._lock(name):
            slots = [self.get(name, version)] if version else self.versions(name)
            failures = [reason for slot in slots if (reason := await self._load(slot))]
        if failures:
            raise ModelLoadError(
                f"Model '{name}' failed to load: {'; '.join(failures)}", model=name
            )
        return slots

    async def _load(self, slot: Slot) -> str:
        if slot.gone and slot.state in _AT_REST:
            return ""  # forgotten (its folder went away) while an earlier version was loading
        started = time.perf_counter()
        old = slot.model
        self._move(slot, "load")
        try:
            # A model given as an instance has a factory returning it: it reloads in place.
            new = slot.factory(slot.settings)
            if await new.load() is False:
                raise ModelLoadError("load() returned False")
            await self._attached(slot, new)
        except Exception as exc:
            reason = _reason(exc)
            log.error(
                "Model '%s'%s failed to load: %s",
                slot.name,
                _v(slot.version),
                reason,
                exc_info=not isinstance(exc, InferkitError),
            )
            public = self._public(exc)
            self._set_failed(slot, public, reason)
            return public
        _mark_ready(new)
        slot.model, slot.reason = new, ""
        self._move(slot, "loaded")
        if old is not None and old is not new:
            await self._retire(slot, old)
        duration = time.perf_counter() - started
        log.info("Loaded model '%s'%s in %.3fs", slot.name, _v(slot.version), duration)
        self._emit(ModelLoaded(model=slot.name, version=slot.version, duration_s=duration))
        return ""

    async def _attached(self, slot: Slot, model: ModelProtocol) -> None:
        if self._attach is None:
            return
        try:
            self._attach(slot, model)
        except Exception:
            # Loaded but refused (a custom handler path is taken): release what it loaded.
            try:
                await model.unload()
            except Exception:
                log.exception("Unloading the refused instance of model '%s' failed", slot.name)
            raise

    async def _retire(self, slot: Slot, old: ModelProtocol) -> None:
        # Requests that entered before the swap still hold ``old``; let them finish first.
        await slot.wait_idle()
        try:
            await old.unload()
        except Exception:
            log.exception("Unloading the replaced instance of model '%s' failed", slot.name)

    def _set_failed(self, slot: Slot, public: str, reason: str) -> None:
        """FAILED with ``public`` as the slot's reason; the event, which stays in the
        process, carries the full ``reason``."""
        if self._move(slot, "fail") != "FAILED":
            return  # a failed reload: the table keeps it READY on the old instance
        slot.reason, slot.model = public, None
        if self._detach is not None:
            self._detach(slot)
        self._emit(ModelFailed(model=slot.name, version=slot.version, reason=reason))

    def _move(self, slot: Slot, action: Action) -> State:
        state = slot.move(action)
        if slot.gone and state in _AT_REST:
            self._drop(slot)
        return state

    async def unload(self, name: str, version: str | None = None) -> list[Slot]:
        """Unload every version of ``name`` (or one), after in-flight requests finish."""
        async with self._lock(name):
            slots = [self.get(name, version)] if version else self.versions(name)
            for slot in slots:
                await self._unload(slot)
        return slots

    async def _unload(self, slot: Slot) -> None:
        model = slot.model
        self._move(slot, "unload")
        if self._detach is not None:
            self._detach(slot)  # its custom handlers go first: no new call reaches it
        if model is None:
            return
        await slot.wait_idle()
        try:
            await model.unload()
        except Exception:
            log.exception("Model '%s'%s failed to unload", slot.name, _v(slot.version))
        slot.model, slot.reason = None, ""
        self._move(slot, "unloaded")
        if hasattr(model, "ready"):
            model.ready = False
        self._emit(ModelUnloaded(model=slot.name, version=slot.version))

    def forget(self, name: str, version: str) -> None:
        """Forget a version whose repository folder disappeared (nothing if it is unknown).

        A version that holds no model (UNAVAILABLE, FAILED) goes at once. A loaded one is in
        memory and keeps serving until it is unloaded (or a load of it fails), then it goes. A
        later :meth:`add` of the same version (its folder came back) keeps it.
        """
        slot = self._slots.get(name, {}).get(version)
        if slot is None:
            return
        slot.gone = True
        if slot.state in _AT_REST:
            self._drop(slot)

    def _drop(self, slot: Slot) -> None:
        versions = self._slots.get(slot.name, {})
        if versions.get(slot.version) is slot:
            del versions[slot.version]
        if not versions:
            self._slots.pop(slot.name, None)


def _mark_ready(model: ModelProtocol) -> None:
    if hasattr(model, "ready"):
        model.ready = True


def _reason(exc: BaseException) -> str:
    if isinstance(exc, InferkitError):
        return exc.message
    text = str(exc)
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def _withheld(exc: BaseException) -> str:
    # The text of a load failure may hold secrets (a password in a connection string) and
    # absolute paths; clients get its class, the server log has the rest.
    return f"{type(exc).__name__} (the reason is in the server log)"


def _unbuildable(error: InferkitError) -> ModelFactory:
    def factory(settings: ModelSettings) -> ModelProtocol:
        raise error

    return factory


def _v(version: str) -> str:
    return f" version '{version}'" if version else ""


def _natural_key(version: str) -> list[tuple[int, int | str]]:
    return [(0, int(p)) if p.isdigit() else (1, p) for p in re.split(r"(\d+)", version) if p]

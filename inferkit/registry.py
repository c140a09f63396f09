"""Which models exist, which versions, in which state: name -> version -> slot.

Only :mod:`inferkit.server` imports this module. A slot keeps the settings of one model version,
how to build it, the instance currently serving, its state and the reason of a failure. Loads
and unloads of one model are serialised by a lock per name; inference never takes that lock, it
only reads ``slot.model`` once, so a reload keeps serving the old instance until the new one is
READY and swapped in. Unloading waits for in-flight requests of the slot before ``unload()``.
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

from .errors import InferkitError, ModelLoadError, ModelNotFound, ModelNotReady
from .events import Event, ModelFailed, ModelLoaded, ModelUnloaded
from .model import ModelProtocol
from .settings import ModelSettings
from .types import State

__all__ = ["ModelFactory", "Registry", "Slot"]

log = logging.getLogger("inferkit.registry")

#: Builds a (not yet loaded) model from its settings; raises to mark the slot FAILED.
ModelFactory = Callable[[ModelSettings], ModelProtocol]


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
    _idle: asyncio.Event | None = field(default=None, repr=False)

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

    def __init__(self, emit: Callable[[Event], None]) -> None:
        self._slots: dict[str, dict[str, Slot]] = {}
        self._locks: dict[str, asyncio.Lock] = {}
        self._emit = emit

    def add(self, settings: ModelSettings, factory: ModelFactory) -> Slot:
        """Register a model version (not loaded). Re-adding a version replaces its settings."""
        name, version = settings.name, settings.version or ""
        versions = self._slots.setdefault(name, {})
        slot = versions.get(version)
        if slot is None:
            slot = versions[version] = Slot(name, version, settings, factory)
        else:
            slot.settings, slot.factory = settings, factory
        return slot

    def fail(self, name: str, version: str, reason: str) -> Slot:
        """Record a model that could not even be described (e.g. a broken settings file)."""
        slot = self.add(ModelSettings(name=name), _unbuildable(reason))
        slot.version = version
        self._set_failed(slot, reason)
        return slot

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
        started = time.perf_counter()
        old = slot.model
        if old is None:
            slot.state = "LOADING"
        try:
            # A model given as an instance has a factory returning it: it reloads in place.
            new = slot.factory(slot.settings)
            if await new.load() is False:
                raise ModelLoadError("load() returned False")
        except Exception as exc:
            reason = _reason(exc)
            log.error(
                "Model '%s'%s failed to load: %s",
                slot.name,
                _v(slot.version),
                reason,
                exc_info=not isinstance(exc, InferkitError),
            )
            if old is None or slot.state != "READY":
                self._set_failed(slot, reason)
            return reason
        _mark_ready(new)
        slot.model, slot.state, slot.reason = new, "READY", ""
        if old is not None and old is not new:
            await self._retire(slot, old)
        duration = time.perf_counter() - started
        log.info("Loaded model '%s'%s in %.3fs", slot.name, _v(slot.version), duration)
        self._emit(ModelLoaded(model=slot.name, version=slot.version, duration_s=duration))
        return ""

    async def _retire(self, slot: Slot, old: ModelProtocol) -> None:
        # Requests that entered before the swap still hold ``old``; let them finish first.
        await slot.wait_idle()
        try:
            await old.unload()
        except Exception:
            log.exception("Unloading the replaced instance of model '%s' failed", slot.name)

    def _set_failed(self, slot: Slot, reason: str) -> None:
        slot.state, slot.reason, slot.model = "FAILED", reason, None
        self._emit(ModelFailed(model=slot.name, version=slot.version, reason=reason))

    async def unload(self, name: str, version: str | None = None) -> list[Slot]:
        """Unload every version of ``name`` (or one), after in-flight requests finish."""
        async with self._lock(name):
            slots = [self.get(name, version)] if version else self.versions(name)
            for slot in slots:
                await self._unload(slot)
        return slots

    async def _unload(self, slot: Slot) -> None:
        model = slot.model
        if model is None:
            if slot.state != "FAILED":
                slot.state = "UNAVAILABLE"
            return
        slot.state = "UNLOADING"
        await slot.wait_idle()
        try:
            await model.unload()
        except Exception:
            log.exception("Model '%s'%s failed to unload", slot.name, _v(slot.version))
        slot.model, slot.state, slot.reason = None, "UNAVAILABLE", ""
        if hasattr(model, "ready"):
            model.ready = False
        self._emit(ModelUnloaded(model=slot.name, version=slot.version))

    def remove(self, name: str) -> None:
        """Forget a model that is not loaded (used when its folder disappeared)."""
        self._slots.pop(name, None)


def _mark_ready(model: ModelProtocol) -> None:
    if hasattr(model, "ready"):
        model.ready = True


def _reason(exc: BaseException) -> str:
    if isinstance(exc, InferkitError):
        return exc.message
    text = str(exc)
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def _unbuildable(reason: str) -> ModelFactory:
    def factory(settings: ModelSettings) -> ModelProtocol:
        raise ModelLoadError(reason, model=settings.name)

    return factory


def _v(version: str) -> str:
    return f" version '{version}'" if version else ""


def _natural_key(version: str) -> list[tuple[int, int | str]]:
    return [(0, int(p)) if p.isdigit() else (1, p) for p in re.split(r"(\d+)", version) if p]

"""An asyncio event loop with a virtual clock, for tests of code that waits on the loop's timers.

``loop.time()`` starts at 0 and, whenever the loop has nothing ready to run, jumps to its next
timer instead of sleeping: ``asyncio.sleep(5)`` or a 60 s ``call_later`` take no real time,
and every time the code reads (``loop.time()``) is exact, so tests assert the batcher's
decisions (when a batch closes, how long a request waited) without sleeps or flaky margins.
Code that waits on real I/O or threads does not belong on it: a loop with nothing to run and no
timer raises instead of blocking.
"""

from __future__ import annotations

import asyncio
import selectors
from collections.abc import Coroutine
from typing import Any, TypeVar

__all__ = ["VirtualClockLoop", "run"]

_T = TypeVar("_T")


class _JumpingSelector(selectors.DefaultSelector):  # type: ignore[misc,valid-type]
    """Polls without blocking; a wait with nothing ready moves the loop's clock instead."""

    def __init__(self, loop: VirtualClockLoop) -> None:
        super().__init__()
        self._loop = loop

    def select(self, timeout: float | None = None) -> list[Any]:
        ready: list[Any] = super().select(0)
        if ready or timeout == 0:
            return ready
        if timeout is None:
            raise RuntimeError("deadlock: nothing to run, no timer set and no I/O to wait for")
        self._loop.now += timeout
        return ready


class VirtualClockLoop(asyncio.SelectorEventLoop):
    """A selector event loop whose clock only moves when it would otherwise sleep."""

    def __init__(self) -> None:
        self.now = 0.0
        super().__init__(_JumpingSelector(self))

    def time(self) -> float:
        return self.now


def run(coro: Coroutine[Any, Any, _T]) -> _T:
    """Run ``coro`` to completion on a new :class:`VirtualClockLoop`."""
    loop = VirtualClockLoop()
    try:
        return loop.run_until_complete(coro)
    finally:
        loop.close()

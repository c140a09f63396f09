"""Which waiting requests run together, and when: the batching decisions, with no I/O.

A :class:`BatchQueue` holds :class:`Entry` objects (one per waiting request) and answers two
questions for a driver that owns the clock: :meth:`BatchQueue.take` (is there a batch to run
now, and which?) and :meth:`BatchQueue.wake_at` (when must I ask again if nothing arrives?).
Time is a number passed in, so every rule is tested with plain floats, no event loop and no
sleeps (h11's way of keeping a protocol apart from its I/O).

The rules:

- Entries are served in order of priority level (smaller first, Triton's convention: 1 is the
  highest), then arrival.
- Only entries with the same ``key`` join (same input names, datatypes, trailing shapes, ...);
  the others wait for a batch of their own kind.
- A batch is the longest run of joinable entries, in that order, whose rows fit in
  ``max_rows``. It is *closed* (runs as soon as the driver has a free instance) when it cannot
  grow (full, or the next joinable entry does not fit), when its oldest entry has waited
  ``max_wait`` seconds, when no entry has joined it for ``idle`` seconds (requests stopped
  coming: waiting on would only add latency), or when one of its entries would miss its
  deadline by waiting longer (its deadline less the time a batch is expected to take).
- An entry whose deadline has passed never runs: :meth:`BatchQueue.expire` hands it back.
"""

from __future__ import annotations

import itertools
from collections.abc import Hashable
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

__all__ = ["DEFAULT_LEVEL", "BatchQueue", "Entry"]

_T = TypeVar("_T")

#: The level of a request without a ``priority``: after every request that gives one.
DEFAULT_LEVEL = 2**63


@dataclass(eq=False)
class Entry(Generic[_T]):
    """One waiting request: what it carries for the driver, and what the queue decides on."""

    item: _T
    #: Rows along the first dimension; a batch holds at most ``max_rows`` of them.
    rows: int
    #: Entries join only with entries of an equal key.
    key: Hashable
    #: The driver's clock when it arrived.
    arrived: float
    #: The driver's clock after which nobody waits for the answer; ``None``: no deadline.
    deadline: float | None = None
    #: Smaller runs first; :data:`DEFAULT_LEVEL` when the request gave no priority.
    level: int = DEFAULT_LEVEL
    #: Arrival order, set by the queue (ties of ``level`` go to the earlier entry).
    seq: int = field(default=0, repr=False)


@dataclass(eq=False)
class _Candidate(Generic[_T]):
    entries: list[Entry[_T]]
    rows: int
    #: It cannot grow: running it now loses nothing.
    full: bool = False


class BatchQueue(Generic[_T]):
    """Waiting entries and the batching rules (see the module docstring).

    ``max_rows`` bounds a batch's rows (a single entry larger than that runs alone),
    ``max_wait`` is how long (seconds of the driver's clock) a batch may wait to grow, and
    ``idle`` (if given) how long it waits for its next entry.
    """

    def __init__(self, max_rows: int, max_wait: float, idle: float | None = None) -> None:
        if max_rows < 1:
            raise ValueError(f"max_rows must be at least 1, got {max_rows}")
        self.max_rows = max_rows
        self.max_wait = max_wait
        self.idle = idle
        self._entries: list[Entry[_T]] = []
        self._seq = itertools.count()

    def __len__(self) -> int:
        return len(self._entries)

    def push(self, entry: Entry[_T]) -> None:
        """Queue an entry."""
        entry.seq = next(self._seq)
        self._entries.append(entry)

    def remove(self, entry: Entry[_T]) -> bool:
        """Take an entry out (its caller went away); False if it is not waiting any more."""
        try:
            self._entries.remove(entry)
        except ValueError:
            return False
        return True

    def expire(self, now: float) -> list[Entry[_T]]:
        """Take out and return the entries whose deadline has passed."""
        expired = [e for e in self._entries if e.deadline is not None and e.deadline <= now]
        if expired:
            self._entries = [e for e in self._entries if e not in expired]
        return expired

    def take(self, now: float, estimate: float = 0.0) -> list[Entry[_T]] | None:
        """The batch to run now, taken out of the queue, or ``None`` if every batch should
        wait longer. ``estimate`` is the seconds a batch is expected to take (for deadlines).
        Call :meth:`expire` first: an expired entry is not skipped here."""
        for candidate in self._candidates():
            if candidate.full or self._closes_at(candidate, estimate) <= now:
                taken = {id(e) for e in candidate.entries}
                self._entries = [e for e in self._entries if id(e) not in taken]
                return candidate.entries
        return None

    def wake_at(self, estimate: float = 0.0, *, closing: bool = True) -> float | None:
        """The earliest time at which :meth:`take` (unless ``closing`` is false: no instance
        is free to run a batch) or :meth:`expire` has something to do without a new arrival;
        ``None`` if nothing will."""
        times = [e.deadline for e in self._entries if e.deadline is not None]
        if closing:
            times += [self._closes_at(c, estimate) for c in self._candidates()]
        return min(times, default=None)

    def _candidates(self) -> list[_Candidate[_T]]:
        """The next batch of each kind of entry, most urgent kind first."""
        batches: dict[Hashable, _Candidate[_T]] = {}
        for entry in sorted(self._entries, key=_order):
            batch = batches.get(entry.key)
            if batch is None:
                batches[entry.key] = _Candidate([entry], entry.rows, entry.rows >= self.max_rows)
            elif not batch.full:
                if batch.rows + entry.rows > self.max_rows:
                    batch.full = True  # the next one does not fit: it cannot grow
                else:
                    batch.entries.append(entry)
                    batch.rows += entry.rows
                    batch.full = batch.rows >= self.max_rows
        return list(batches.values())

    def _closes_at(self, candidate: _Candidate[_T], estimate: float) -> float:
        arrivals = [e.arrived for e in candidate.entries]
        times = [e.deadline - estimate for e in candidate.entries if e.deadline is not None]
        times.append(min(arrivals) + self.max_wait)
        if self.idle is not None:
            times.append(max(arrivals) + self.idle)
        return min(times)


def _order(entry: Entry[Any]) -> tuple[int, int]:
    return entry.level, entry.seq

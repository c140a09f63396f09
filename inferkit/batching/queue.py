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
  coming: waiting on would only add latency; the driver may suspend this rule while it knows
  more requests are on their way), or when one of its entries would miss its
  deadline by waiting longer (its deadline less the time a batch is expected to take).
- An entry whose deadline has passed never runs: :meth:`BatchQueue.expire` hands it back.
"""

from __future__ import annotations

import bisect
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
    #: The latest time a batch holding it may start, less the expected batch time (``None``:
    #: its ``deadline``). A driver sets it earlier to leave the answer time to travel back.
    close_by: float | None = None
    #: Smaller runs first; :data:`DEFAULT_LEVEL` when the request gave no priority.
    level: int = DEFAULT_LEVEL
    #: Arrival order, set by the queue (ties of ``level`` go to the earlier entry).
    seq: int = field(default=0, repr=False)


@dataclass(eq=False)
class _Candidate(Generic[_T]):
    """The next batch of one kind: the longest prefix of its entries that fits."""

    entries: list[Entry[_T]]
    rows: int
    #: It cannot grow: running it now loses nothing.
    full: bool
    oldest: float
    newest: float
    close_by: float | None

    def add(self, entry: Entry[_T], max_rows: int) -> bool:
        """Grow by ``entry`` if it fits (else the batch is full); whether it joined."""
        if self.full:
            return False
        if self.rows + entry.rows > max_rows:
            self.full = True  # the next one does not fit: it cannot grow
            return False
        self.entries.append(entry)
        self.rows += entry.rows
        self.full = self.rows >= max_rows
        self.oldest = min(self.oldest, entry.arrived)
        self.newest = max(self.newest, entry.arrived)
        close_by = _close_by(entry)
        if close_by is not None and (self.close_by is None or close_by < self.close_by):
            self.close_by = close_by
        return True


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
        # The waiting entries of each kind (key), in (level, seq) order.
        self._kinds: dict[Hashable, list[Entry[_T]]] = {}
        # The next batch of each kind, kept up to date as entries arrive at the end of their
        # kind (the common case), so a push costs O(1) and not a new look at every entry.
        self._batches: dict[Hashable, _Candidate[_T]] = {}
        self._count = 0
        self._with_deadline = 0
        self._seq = itertools.count()

    def __len__(self) -> int:
        return self._count

    def push(self, entry: Entry[_T]) -> None:
        """Queue an entry."""
        entry.seq = next(self._seq)
        kind = self._kinds.setdefault(entry.key, [])
        if kind and _order(entry) < _order(kind[-1]):
            bisect.insort(kind, entry, key=_order)
            self._batches.pop(entry.key, None)  # it may belong in the batch: rebuilt when asked
        else:
            kind.append(entry)
            batch = self._batches.get(entry.key)
            if batch is not None:
                batch.add(entry, self.max_rows)
        self._count += 1
        self._with_deadline += entry.deadline is not None

    def remove(self, entry: Entry[_T]) -> bool:
        """Take an entry out (its caller went away); False if it is not waiting any more."""
        kind = self._kinds.get(entry.key)
        if kind is None or not any(e is entry for e in kind):
            return False
        kind.remove(entry)  # entries compare by identity
        self._forget(entry.key, [entry])
        return True

    def expire(self, now: float) -> list[Entry[_T]]:
        """Take out and return the entries whose deadline has passed."""
        if not self._with_deadline:
            return []
        expired: list[Entry[_T]] = []
        for key, kind in list(self._kinds.items()):
            gone = [e for e in kind if e.deadline is not None and e.deadline <= now]
            if gone:
                kind[:] = [e for e in kind if e not in gone]
                self._forget(key, gone)
                expired += gone
        expired.sort(key=_order)
        return expired

    def take(
        self, now: float, estimate: float = 0.0, *, quiet: bool = True
    ) -> list[Entry[_T]] | None:
        """The batch to run now, taken out of the queue, or ``None`` if every batch should
        wait longer. ``estimate`` is the seconds a batch is expected to take (for deadlines);
        ``quiet`` false suspends the ``idle`` rule (the driver knows more requests are on
        their way).
        Call :meth:`expire` first: an expired entry is not skipped here."""
        for key, batch in self._candidates():
            if batch.full or self._closes_at(batch, estimate, quiet) <= now:
                del self._kinds[key][: len(batch.entries)]  # a batch is a prefix of its kind
                self._forget(key, batch.entries)
                return batch.entries
        return None

    def wake_at(
        self, estimate: float = 0.0, *, closing: bool = True, quiet: bool = True
    ) -> float | None:
        """The earliest time at which :meth:`take` (unless ``closing`` is false: no instance
        is free to run a batch) or :meth:`expire` has something to do without a new arrival;
        ``None`` if nothing will. ``estimate`` and ``quiet`` are as for :meth:`take`."""
        times: list[float] = []
        if self._with_deadline:
            times += [e.deadline for k in self._kinds.values() for e in k if e.deadline is not None]
        if closing:
            times += [self._closes_at(b, estimate, quiet) for _, b in self._candidates()]
        return min(times, default=None)

    def _forget(self, key: Hashable, entries: list[Entry[_T]]) -> None:
        """Account for ``entries`` of kind ``key`` having left the queue."""
        self._count -= len(entries)
        self._with_deadline -= sum(e.deadline is not None for e in entries)
        self._batches.pop(key, None)
        if not self._kinds[key]:
            del self._kinds[key]

    def _candidates(self) -> list[tuple[Hashable, _Candidate[_T]]]:
        """The next batch of each kind of entry, most urgent kind first."""
        for key, kind in self._kinds.items():
            if key not in self._batches:
                first = kind[0]
                batch = _Candidate(
                    [first],
                    first.rows,
                    first.rows >= self.max_rows,
                    first.arrived,
                    first.arrived,
                    _close_by(first),
                )
                for entry in itertools.islice(kind, 1, None):
                    if not batch.add(entry, self.max_rows):
                        break
                self._batches[key] = batch
        batches = list(self._batches.items())
        if len(batches) > 1:
            batches.sort(key=lambda item: _order(item[1].entries[0]))
        return batches

    def _closes_at(self, batch: _Candidate[_T], estimate: float, quiet: bool) -> float:
        closes = batch.oldest + self.max_wait
        if quiet and self.idle is not None:
            closes = min(closes, batch.newest + self.idle)
        if batch.close_by is not None:
            closes = min(closes, batch.close_by - estimate)
        return closes


def _close_by(entry: Entry[Any]) -> float | None:
    return entry.deadline if entry.close_by is None else entry.close_by


def _order(entry: Entry[Any]) -> tuple[int, int]:
    return entry.level, entry.seq

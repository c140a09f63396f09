"""Ids for requests that arrive without one."""

from __future__ import annotations

import itertools
import os

__all__ = ["RequestIds"]

_COUNTER_MASK = 0xFFFF_FFFF_FFFF  # the UUID's last group: 12 hex digits


class RequestIds:
    """A source of request ids, one per server: UUID-shaped (version 4), unique, and cheap.

    ``str(uuid.uuid4())`` per request cost a few percent of a small request's CPU (an
    ``os.urandom`` call and ``UUID``'s arithmetic). Here the first four groups are drawn at
    random once (74 random bits, with the version and variant bits of a version-4 UUID), and
    the last group counts from a random start, so ids from different servers and restarts do
    not meet and each id costs one string format. They are not secrets: nothing should use a
    request id as one.
    """

    __slots__ = ("_counter", "_prefix")

    def __init__(self) -> None:
        drawn = os.urandom(10).hex()
        variant = "89ab"[int(drawn[15], 16) & 3]
        self._prefix = f"{drawn[:8]}-{drawn[8:12]}-4{drawn[12:15]}-{variant}{drawn[16:19]}-"
        self._counter = itertools.count(int.from_bytes(os.urandom(6), "big"))

    def __call__(self) -> str:
        """A new id."""
        return f"{self._prefix}{next(self._counter) & _COUNTER_MASK:012x}"

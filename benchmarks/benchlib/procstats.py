"""CPU time and memory of a server's process tree, read from ``/proc`` (Linux only).

A server is its process *and its descendants*: MLServer's default configuration predicts in a
worker process, and its CPU and memory count. CPU is ``utime + stime`` of every live process in
the tree; memory is the sum of ``VmRSS`` (now) or ``VmHWM`` (peak since :func:`reset_peaks`).
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path

__all__ = ["cpu_seconds", "peak_rss", "process_tree", "reset_peaks", "rss", "start_time"]

_PROC = Path("/proc")
_TICKS = os.sysconf("SC_CLK_TCK")


def _stat_fields(pid: int) -> list[str]:
    # The command name (field 2) may hold spaces and parentheses: split after the last ')'.
    text = (_PROC / str(pid) / "stat").read_text()
    return text[text.rindex(")") + 2 :].split()


def process_tree(root: int) -> list[int]:
    """``root`` and every live descendant."""
    children: dict[int, list[int]] = {}
    for entry in _PROC.iterdir():
        if not entry.name.isdigit():
            continue
        try:
            parent = int(_stat_fields(int(entry.name))[1])
        except (OSError, ValueError, IndexError):
            continue  # exited while we looked
        children.setdefault(parent, []).append(int(entry.name))
    tree, todo = [], [root]
    while todo:
        pid = todo.pop()
        tree.append(pid)
        todo.extend(children.get(pid, []))
    return tree


def start_time(pid: int) -> int | None:
    """When ``pid`` started (clock ticks after boot), or None if it is gone.

    A pid and its start time name one process for good: pids are reused, the pair is not.
    """
    try:
        return int(_stat_fields(pid)[19])
    except (OSError, ValueError, IndexError):
        return None


def cpu_seconds(pids: Iterable[int]) -> float:
    """User + system CPU seconds used so far by ``pids`` (exited ones count 0)."""
    ticks = 0
    for pid in pids:
        try:
            fields = _stat_fields(pid)
        except OSError:
            continue
        # Fields 14 and 15 of proc(5), counted from 1; we dropped the first two.
        ticks += int(fields[11]) + int(fields[12])
    return ticks / _TICKS


def _status_kib(pid: int, key: str) -> int:
    try:
        lines = (_PROC / str(pid) / "status").read_text().splitlines()
    except OSError:
        return 0
    for line in lines:
        if line.startswith(key + ":"):
            return int(line.split()[1])
    return 0


def rss(pids: Iterable[int]) -> int:
    """Resident memory of ``pids`` now, in bytes."""
    return sum(_status_kib(pid, "VmRSS") for pid in pids) * 1024


def peak_rss(pids: Iterable[int]) -> int:
    """Sum of each process's peak resident memory (since :func:`reset_peaks`), in bytes."""
    return sum(_status_kib(pid, "VmHWM") for pid in pids) * 1024


def reset_peaks(pids: Iterable[int]) -> bool:
    """Reset the peak RSS of ``pids`` to their current RSS (needs Linux 4.0 and permission)."""
    ok = True
    for pid in pids:
        try:
            (_PROC / str(pid) / "clear_refs").write_text("5")
        except OSError:
            ok = False
    return ok

"""Shared memory between the main process and a worker: one anonymous file, mapped by both.

Each direction of a worker's channel has its own :class:`Arena`: the main process writes request
tensors into one and the worker writes response tensors into the other, so each arena has a
single writer, which alone allocates and frees its blocks; the other side only reads at the
offsets it is sent. No locks are needed and no allocator state is shared.

The file is a Linux ``memfd`` (an unnamed file on the kernel's internal tmpfs): nothing appears
in ``/dev/shm``, so a crashed process leaves nothing behind, no resource tracker is involved,
and the 64 MiB ``/dev/shm`` of a default container does not cap it. Elsewhere an unlinked
temporary file is used. The file is sized once, sparsely: pages cost memory only once written,
and pages above :data:`KEEP_BYTES` are handed back to the kernel whenever the arena empties.
"""

from __future__ import annotations

import bisect
import mmap
import os
import sys
import tempfile
from multiprocessing import reduction
from typing import Any

__all__ = ["ALIGN", "KEEP_BYTES", "Arena", "InheritedFd"]

#: Blocks start on cache-line boundaries, so numpy views of them are aligned for any dtype.
ALIGN = 64
#: Resident bytes an empty arena keeps mapped; above this, freed pages return to the kernel.
KEEP_BYTES = 32 * 1024 * 1024


class InheritedFd:
    """A file descriptor handed to a ``spawn``-ed child when the child's arguments are pickled.

    Pickling goes through :func:`multiprocessing.reduction.DupFd`, the mechanism
    ``multiprocessing`` uses for its own pipes: the descriptor is passed to the new process and
    arrives under the same number.
    """

    def __init__(self, fd: int) -> None:
        self.fd = fd

    def __reduce__(self) -> tuple[Any, tuple[Any, ...]]:
        return _adopt, (reduction.DupFd(self.fd),)


def _adopt(dup: Any) -> InheritedFd:
    return InheritedFd(dup.detach())


class Arena:
    """A fixed-size shared mapping with a first-fit allocator (used by its writer only)."""

    def __init__(self, fd: int, size: int) -> None:
        self.fd = fd
        self.size = size
        self.buffer = mmap.mmap(fd, size)
        # Free blocks as parallel sorted lists of offsets and sizes; live blocks by offset.
        self._free_at: list[int] = [0]
        self._free_size: list[int] = [size]
        self._live: dict[int, int] = {}
        self._high = 0

    @classmethod
    def create(cls, size: int) -> Arena:
        """A new arena of ``size`` bytes (rounded up to whole pages), backed by a fresh file."""
        size = -(-size // mmap.PAGESIZE) * mmap.PAGESIZE
        fd = _anonymous_file()
        try:
            os.ftruncate(fd, size)
            return cls(fd, size)
        except BaseException:
            os.close(fd)
            raise

    @property
    def used(self) -> int:
        """Bytes in live blocks (rounded to :data:`ALIGN`)."""
        return sum(self._live.values())

    def alloc(self, nbytes: int) -> int | None:
        """The offset of a new block of ``nbytes``, or None when no free block is large enough."""
        need = max(ALIGN, -(-nbytes // ALIGN) * ALIGN)
        for i, free in enumerate(self._free_size):
            if free >= need:
                offset = self._free_at[i]
                if free == need:
                    del self._free_at[i], self._free_size[i]
                else:
                    self._free_at[i] += need
                    self._free_size[i] -= need
                self._live[offset] = need
                self._high = max(self._high, offset + need)
                return offset
        return None

    def free(self, offset: int) -> None:
        """Give a block back, merging it with free neighbours."""
        size = self._live.pop(offset)
        i = bisect.bisect(self._free_at, offset)
        if i < len(self._free_at) and offset + size == self._free_at[i]:
            size += self._free_size[i]
            del self._free_at[i], self._free_size[i]
        if i > 0 and self._free_at[i - 1] + self._free_size[i - 1] == offset:
            self._free_size[i - 1] += size
        else:
            self._free_at.insert(i, offset)
            self._free_size.insert(i, size)
        if not self._live:
            self._trim()

    def write(self, offset: int, data: Any) -> None:
        """Copy a buffer (bytes, or a contiguous array viewed as bytes) into a block."""
        view = memoryview(data).cast("B")
        self.buffer[offset : offset + view.nbytes] = view

    def view(self, offset: int, nbytes: int) -> memoryview:
        """A view of ``nbytes`` at ``offset``; copy out of it before the block is freed."""
        return memoryview(self.buffer)[offset : offset + nbytes]

    def close(self) -> None:
        """Unmap and close the file (the memory goes once every process has closed it)."""
        self.buffer.close()
        os.close(self.fd)

    def _trim(self) -> None:
        # An empty arena hands pages above KEEP_BYTES back to the kernel, so one huge request
        # does not pin its size in memory for the life of the worker. The kept low part serves
        # steady traffic without page faults.
        remove = getattr(mmap, "MADV_REMOVE", None)
        if remove is not None and self._high > KEEP_BYTES:
            self.buffer.madvise(remove, KEEP_BYTES, self._high - KEEP_BYTES)
        self._high = min(self._high, KEEP_BYTES)


def _anonymous_file() -> int:
    if sys.platform == "linux":
        return os.memfd_create("inferkit-parallel", os.MFD_CLOEXEC)
    with tempfile.TemporaryFile() as file:  # pragma: no cover - non-Linux fallback
        return os.dup(file.fileno())

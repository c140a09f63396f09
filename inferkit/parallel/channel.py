"""Length-prefixed frames over a stream socket, driven by the event loop (both sides).

A plain :class:`asyncio.Protocol` rather than streams: one callback per frame and no task per
read. The other side closing the socket (a worker that exits or is killed, a main process that
goes away) arrives as :meth:`connection_lost`, which is how each side notices the other is gone.
"""

from __future__ import annotations

import asyncio
import socket
import struct
from collections.abc import Callable
from typing import cast

__all__ = ["Channel", "open_channel"]

_HEADER = struct.Struct("<I")


class Channel(asyncio.Protocol):
    """Calls ``on_frame(frame)`` for every frame received and ``on_lost()`` once at the end.

    A frame may be a view of the received data: it is valid during the callback only.
    """

    def __init__(
        self, on_frame: Callable[[bytes | memoryview], None], on_lost: Callable[[], None]
    ) -> None:
        self._on_frame = on_frame
        self._on_lost = on_lost
        self._partial: list[bytes] = []
        self._partial_size = 0
        self._needed = 0
        self._transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports have the Transport methods without subclassing it.
        self._transport = cast(asyncio.Transport, transport)

    def data_received(self, data: bytes) -> None:
        if self._partial:
            # The rest of a frame that spans reads: joined once, when it is complete.
            self._partial.append(data)
            self._partial_size += len(data)
            if self._partial_size < self._needed:
                return
            data = b"".join(self._partial)
            self._partial.clear()
        view, start, total = memoryview(data), 0, len(data)
        needed = 4
        while total - start >= 4:
            (size,) = _HEADER.unpack_from(data, start)
            end = start + 4 + size
            if end > total:
                needed = 4 + size
                break
            self._on_frame(view[start + 4 : end])  # no copy: decoded before the callback returns
            start = end
        if start < total:
            self._partial.append(data[start:])
            self._partial_size = total - start
            self._needed = needed

    def connection_lost(self, exc: Exception | None) -> None:
        self._transport = None
        self._on_lost()

    @property
    def open(self) -> bool:
        """Whether frames can still be sent."""
        return self._transport is not None and not self._transport.is_closing()

    def send(self, frame: bytes) -> None:
        """Queue one frame (never blocks; the transport buffers what the socket cannot take)."""
        if self._transport is None or self._transport.is_closing():
            raise ConnectionError("The channel is closed")
        header = _HEADER.pack(len(frame))
        if len(frame) < 65536:
            self._transport.write(header + frame)  # one send for the common small frame
        else:
            self._transport.write(header)  # no copy of a large frame just to prefix it
            self._transport.write(frame)

    def close(self) -> None:
        """Close after queued frames are sent."""
        if self._transport is not None:
            self._transport.close()


async def open_channel(
    sock: socket.socket,
    on_frame: Callable[[bytes | memoryview], None],
    on_lost: Callable[[], None],
) -> Channel:
    """Drive a connected socket with a :class:`Channel` in the running loop."""
    loop = asyncio.get_running_loop()
    _, channel = await loop.connect_accepted_socket(lambda: Channel(on_frame, on_lost), sock=sock)
    return channel

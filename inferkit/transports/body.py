"""Reading a REST request body: within a size limit and a time limit, inflated if encoded.

Shared by the inference endpoints, the repository index and the custom handlers. The limits
are checked as early as they can be: the size from ``Content-Length`` before anything is read,
the time from when the app first asks for the body (a stalled or trickled body, "slow loris",
must not hold a connection and a task for ever).
"""

from __future__ import annotations

import asyncio
import zlib
from collections.abc import Awaitable
from typing import Any

from starlette.types import Message, Receive

from .. import errors
from ..pipeline import ClientGone

__all__ = ["BodyReader"]


class BodyReader:
    """Reads a request body from ASGI ``receive``: 413 past ``limit`` bytes, 408 past
    ``timeout`` seconds (``None``: no time limit).

    A body over the limit is refused as soon as that is known, from ``Content-Length`` before
    anything is read, and nothing more is read: the server sends the 413 and closes the
    connection. (Clients read an answer that arrives while they send; httpx, urllib3, curl
    and geventhttpclient all report the 413.)
    """

    def __init__(self, limit: int, timeout: float | None = None) -> None:
        self.limit = limit
        self.timeout = timeout
        self._deadlines = None if timeout is None else _Deadlines(timeout)

    async def read(self, receive: Receive, headers: dict[str, str]) -> bytes:
        """The whole body (inflated when gzip/deflate encoded), or
        PayloadTooLarge/RequestTimeout/ClientGone."""
        declared = headers.get("content-length")
        if declared is not None and _over(declared, self.limit):
            raise self._too_large()
        if self._deadlines is None:
            body = await self._receive(receive)
        else:
            try:
                body = await self._deadlines.within(self._receive(receive))
            except TimeoutError:
                raise errors.RequestTimeout(
                    f"The request body did not arrive within {self.timeout:g} seconds "
                    "(request_body_timeout)"
                ) from None
        encoding = headers.get("content-encoding")
        if encoding is not None and encoding.lower() in ("gzip", "deflate"):
            body = self._inflate(body, encoding.lower())
        return body

    async def _receive(self, receive: Receive) -> bytes:
        message = await receive()
        body = self._chunk(message)
        if message.get("more_body", False):
            # Most bodies arrive in one message; only longer ones pay for the list and join.
            chunks = [body]
            size = len(body)
            more = True
            while more:
                message = await receive()
                chunk = self._chunk(message)
                size += len(chunk)
                if size > self.limit:
                    raise self._too_large()
                chunks.append(chunk)
                more = message.get("more_body", False)
            body = b"".join(chunks)
        elif len(body) > self.limit:
            raise self._too_large()
        return body

    @staticmethod
    def _chunk(message: Message) -> bytes:
        if message["type"] == "http.disconnect":
            raise ClientGone
        body: bytes = message.get("body", b"")
        return body

    def _inflate(self, body: bytes, encoding: str) -> bytes:
        if not body:
            return body
        # RFC 1952: a gzip body is a series of members (``cat a.gz b.gz``), inflated one after
        # the other. Each must be whole, and nothing else may follow: a truncated body or one
        # with junk after it is refused (as MLServer refuses it), not served as what inflated.
        wbits = 31 if encoding == "gzip" else 15
        parts: list[bytes] = []
        size = 0
        rest = body
        while rest:
            if parts and not (encoding == "gzip" and rest.startswith(b"\x1f\x8b")):
                raise errors.InvalidRequest(
                    f"Unexpected {len(rest)} bytes after the {encoding} data"
                )
            inflater = zlib.decompressobj(wbits=wbits)
            try:
                # Bounded, so a small compressed body cannot expand past the limit (a "zip bomb").
                data = inflater.decompress(rest, self.limit + 1 - size)
            except zlib.error:
                raise errors.InvalidRequest(f"Body is not valid {encoding} data") from None
            size += len(data)
            if size > self.limit or inflater.unconsumed_tail:
                raise self._too_large()
            if not inflater.eof:
                raise errors.InvalidRequest(f"Body is truncated {encoding} data")
            parts.append(data)
            rest = inflater.unused_data
        return parts[0] if len(parts) == 1 else b"".join(parts)

    def _too_large(self) -> errors.PayloadTooLarge:
        return errors.PayloadTooLarge(
            f"Request body is larger than the limit of {self.limit} bytes (max_request_size)"
        )


def _over(declared: str, limit: int) -> bool:
    # Only ASCII digits are a length (str.isdigit takes "²", which int() refuses), and a value
    # longer than any limit's digits is over it without converting it (int() refuses more
    # than 4300 digits). Anything else is left to the server in front, which frames the body.
    if not (declared.isascii() and declared.isdigit()):
        return False
    return len(declared) > len(str(limit)) or int(declared) > limit


class _Deadlines:
    """The body reads in progress and when each must end, watched by one timer for all.

    ``asyncio.timeout`` around each read costs a timer handle and its bookkeeping per
    request, several times what reading a small body costs; here a read costs a dict entry.
    Deadlines are ``start + seconds`` with one ``seconds``, so the oldest read always ends
    first: the timer waits for it, cancels whatever has expired, and waits for the next.
    """

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self.reads: dict[asyncio.Task[Any], float] = {}
        #: Tasks this watcher cancelled, whose CancelledError is a timeout.
        self.expired: set[asyncio.Task[Any]] = set()
        self.timer: asyncio.TimerHandle | None = None
        self.loop: asyncio.AbstractEventLoop | None = None

    async def within(self, read: Awaitable[bytes]) -> bytes:
        """``await read``, or TimeoutError once it has taken ``seconds``."""
        task = asyncio.current_task()
        assert task is not None
        loop = asyncio.get_running_loop()
        self.reads[task] = loop.time() + self.seconds
        if self.timer is None or self.loop is not loop:  # an app may move to another loop
            self.loop = loop
            self.timer = loop.call_later(self.seconds, self._expire)
        try:
            return await read
        except asyncio.CancelledError:
            if task not in self.expired:
                raise
            self.expired.discard(task)
            if _uncancel(task):
                raise  # cancelled by someone else as well: that wins
            raise TimeoutError from None
        finally:
            self.reads.pop(task, None)
            self.expired.discard(task)

    def _expire(self) -> None:
        loop = self.loop
        assert loop is not None
        self.timer = None
        now = loop.time()
        for task, deadline in list(self.reads.items()):
            if deadline <= now:
                del self.reads[task]
                self.expired.add(task)
                task.cancel()
        if self.reads:
            self.timer = loop.call_at(min(self.reads.values()), self._expire)


def _uncancel(task: asyncio.Task[Any]) -> int:
    # Python >= 3.11 counts cancellations: take ours back, and say how many others remain.
    uncancel = getattr(task, "uncancel", None)
    return int(uncancel()) if uncancel is not None else 0

"""The worker's side of the protocol, run in this process over a socket pair, so the test
controls exactly which bytes arrive together."""

from __future__ import annotations

import asyncio
import socket
import struct
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any

import msgspec
import pytest_asyncio

from inferkit import InferenceRequest, ModelSettings, RequestInput
from inferkit.parallel.memory import Arena
from inferkit.parallel.messages import (
    Call,
    Cancel,
    Failure,
    MainMessage,
    Ready,
    Reply,
    Stop,
    Wire,
    WorkerMessage,
)
from inferkit.parallel.worker import WorkerConfig, _Worker

_HEADER = struct.Struct("<I")


@dataclass
class Peer:
    """The main process's end, driven by hand."""

    sock: socket.socket
    wire: Wire

    async def send(self, *messages: Any) -> None:
        frames = [self.wire.encode(m, shared=False)[0] for m in messages]
        data = b"".join(_HEADER.pack(len(f)) + f for f in frames)
        await asyncio.get_running_loop().sock_sendall(self.sock, data)  # one write

    async def receive(self) -> Any:
        (size,) = _HEADER.unpack(await self._exactly(4))
        return self.wire.decode(await self._exactly(size))

    async def _exactly(self, n: int) -> bytes:
        data = b""
        while len(data) < n:
            chunk = await asyncio.get_running_loop().sock_recv(self.sock, n - len(data))
            assert chunk, "the worker hung up"
            data += chunk
        return data


@pytest_asyncio.fixture
async def peer(settings_for: Callable[..., ModelSettings]) -> AsyncIterator[Peer]:
    config = WorkerConfig(settings=settings_for("Gated"), index=0, arena_size=65536, threshold=1024)
    requests, responses = Arena.create(65536), Arena.create(65536)
    ours, theirs = socket.socketpair()
    ours.setblocking(False)
    serving = asyncio.ensure_future(_Worker(config, requests, responses).serve(theirs))
    peer = Peer(ours, Wire(requests, responses, 1024, WorkerMessage))
    try:
        assert isinstance(await peer.receive(), Ready)
        yield peer
        await peer.send(Stop())
        assert await serving is True
    finally:
        ours.close()
        requests.close()
        responses.close()


def request(x: float) -> InferenceRequest:
    return InferenceRequest(inputs=[RequestInput(name="x", shape=[1], datatype="FP64", data=[x])])


async def test_calls_are_answered_by_id(peer: Peer) -> None:
    await peer.send(Call(id=4, request=request(1)), Call(id=5, request=request(2)))
    replies = {m.id: m for m in (await peer.receive(), await peer.receive())}
    assert {i: r.response.outputs[0].data.tolist() for i, r in replies.items()} == {
        4: [2.0],
        5: [4.0],
    }


async def test_a_call_cancelled_before_it_started_still_reports_its_end(peer: Peer) -> None:
    # Both arrive in one read: the task is cancelled before its first step.
    await peer.send(Call(id=1, request=request(1)), Cancel(id=1))
    assert await peer.receive() == Failure(id=1, error="InferenceFailed", message="Cancelled")
    await peer.send(Call(id=2, request=request(3)))
    reply = await peer.receive()
    assert isinstance(reply, Reply) and reply.id == 2


def test_worker_messages_are_compact() -> None:
    # Array-like and tagged: the field names never travel.
    encoded = msgspec.msgpack.encode(Cancel(id=3))
    assert encoded == msgspec.msgpack.encode(["Cancel", 3])
    assert msgspec.msgpack.decode(encoded, type=MainMessage) == Cancel(id=3)

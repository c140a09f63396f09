"""The real ``inferkit start`` refusing an oversize gRPC message on its length prefix, before
its body arrives, driven by a raw HTTP/2 client (h2, which grpclib brings) so the test controls
every frame: a 5-byte prefix declaring 700 MB, then as much of the body as flow control lets
through, up to a bounded budget."""

from __future__ import annotations

import select
import socket
import time
import urllib.parse
from collections.abc import Iterator
from pathlib import Path

import h2.config
import h2.connection
import h2.events
import h2.exceptions
import pytest
from harness import Running, inferkit_start, write_repository

pytestmark = pytest.mark.e2e

LIMIT = 1_000_000
DECLARED = 700 * 1024 * 1024
#: The most body a client sends before giving up: far more than a flow control window, far
#: less than the declared size.
BUDGET = 128 * 1024 * 1024
#: Bound of the whole exchange; generous for a loaded 2-core machine (not a timing assert).
DEADLINE_S = 60.0


@pytest.fixture(scope="module")
def running(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Running]:
    models = {"echo": {"name": "echo", "implementation": "model.Echo"}}
    root = write_repository(tmp_path_factory.mktemp("repo"), models, grpc_max_message_length=LIMIT)
    with inferkit_start(root) as server:
        yield server


def rss(pid: int) -> int:
    """Resident memory of a process, in bytes (Linux)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS")


class Outcome:
    """What the raw client saw: the gRPC status headers, a reset, and how much it sent."""

    def __init__(self) -> None:
        self.status: dict[str, str] = {}
        self.reset = False
        self.sent = 0


def send_oversize(address: tuple[str, int], path: str) -> Outcome:
    """One call whose prefix declares DECLARED bytes, its body sent as the server's window
    allows, until the server answers (or BUDGET is sent, or DEADLINE_S passes)."""
    outcome = Outcome()
    conn = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True))
    deadline = time.monotonic() + DEADLINE_S
    with socket.create_connection(address, timeout=DEADLINE_S) as sock:
        conn.initiate_connection()
        sid = conn.get_next_available_stream_id()
        headers = [
            (":method", "POST"),
            (":scheme", "http"),
            (":path", path),
            (":authority", f"{address[0]}:{address[1]}"),
            ("content-type", "application/grpc"),
            ("te", "trailers"),
        ]
        conn.send_headers(sid, headers)
        conn.send_data(sid, b"\x00" + DECLARED.to_bytes(4, "big"))
        sock.sendall(conn.data_to_send())
        chunk = bytes(16384)
        answered = False
        while not answered and time.monotonic() < deadline:
            window = 0
            if outcome.sent < BUDGET:
                window = min(conn.local_flow_control_window(sid), conn.max_outbound_frame_size)
            if window > 0:
                try:
                    conn.send_data(sid, chunk[:window])
                except h2.exceptions.StreamClosedError:
                    window = 0
                else:
                    outcome.sent += window
                    sock.sendall(conn.data_to_send())
            # Sending: only look for an answer; blocked by flow control: wait for one.
            wait = 0.0 if window > 0 else max(0.0, deadline - time.monotonic())
            readable, _, _ = select.select([sock], [], [], wait)
            if not readable:
                continue
            data = sock.recv(65536)
            if not data:
                break
            for event in conn.receive_data(data):
                if isinstance(event, (h2.events.ResponseReceived, h2.events.TrailersReceived)):
                    found = {
                        k.decode() if isinstance(k, bytes) else k: v.decode()
                        if isinstance(v, bytes)
                        else v
                        for k, v in event.headers
                    }
                    if "grpc-status" in found:
                        outcome.status = found
                        answered = True
                elif isinstance(event, h2.events.StreamReset):
                    outcome.reset = True
                    answered = True
            sock.sendall(conn.data_to_send())
    return outcome


@pytest.mark.parametrize(
    "path",
    ["/inference.GRPCInferenceService/ModelInfer", "/inference.GRPCInferenceService/ServerLive"],
    ids=["ModelInfer", "ServerLive"],
)
def test_an_oversize_message_is_refused_on_its_prefix(running: Running, path: str) -> None:
    before = rss(running.process.pid)
    outcome = send_oversize(("127.0.0.1", running.grpc_port), path)
    grown = rss(running.process.pid) - before
    assert outcome.status.get("grpc-status") == "8", (outcome.status, outcome.sent)  # EXHAUSTED
    message = urllib.parse.unquote(outcome.status.get("grpc-message", ""))
    assert f"Message of {DECLARED} bytes is larger than the limit of {LIMIT} bytes" in message
    # Answered before the body was all sent (it never is), and without buffering what was.
    assert outcome.sent < BUDGET
    assert grown < 64 * 1024 * 1024, grown
    # The server goes on serving.
    assert "Traceback" not in running.log()

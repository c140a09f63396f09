"""The real ``inferkit start`` against hostile HTTP clients (issue #16), over raw sockets.

What only the real server shows: how hypercorn frames a body that stalls, stops or never
comes, what ``Expect: 100-continue`` gets, what the access log and the metrics record.
Every socket has a timeout and every loop a bound, so a regression fails instead of hanging.
"""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator

import httpx
import numpy as np
import pytest
import tritonclient.grpc as triton_grpc
from harness import Running, inferkit_start, write_repository
from tritonclient.utils import InferenceServerException

pytestmark = pytest.mark.e2e

LIMIT = 100_000
BODY = b'{"inputs":[{"name":"x","shape":[1],"datatype":"INT32","data":[1]}]}'
#: Generous for a loaded machine; only reached when the server fails to answer.
SOCKET_TIMEOUT_S = 30.0


@pytest.fixture(scope="module")
def running(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Running]:
    root = write_repository(
        tmp_path_factory.mktemp("repo"),
        {"echo": {"name": "echo", "implementation": "model.Echo"}},
        max_request_size=LIMIT,
        request_body_timeout=1.0,
    )
    with inferkit_start(root) as server:
        yield server


def connect(running: Running) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", running.http_port), timeout=SOCKET_TIMEOUT_S)
    return sock


def head(path: str, length: int | str, *extra: str) -> bytes:
    lines = [
        f"POST {path} HTTP/1.1",
        "Host: 127.0.0.1",
        "Content-Type: application/json",
        f"Content-Length: {length}",
        *extra,
    ]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


def read_answer(sock: socket.socket) -> bytes:
    """Everything the server sends until it closes the connection (or 1 MiB)."""
    data = b""
    while len(data) < 1 << 20:
        try:
            chunk = sock.recv(65536)
        except ConnectionResetError:
            break
        if not chunk:
            break
        data += chunk
    return data


def final_response(data: bytes) -> tuple[int, bytes]:
    """The status and body of the last response in ``data`` (after any ``100 Continue``)."""
    responses = data.split(b"HTTP/1.1 ")[1:]
    assert responses, data
    status_line, _, rest = responses[-1].partition(b"\r\n")
    _, _, body = rest.partition(b"\r\n\r\n")
    return int(status_line.split()[0]), body


def rest_requests(running: Running, route: str) -> dict[str, float]:
    """``inferkit_rest_requests_total`` of a route, by status."""
    text = httpx.get(f"http://127.0.0.1:{running.metrics_port}/metrics", timeout=10).text
    counts: dict[str, float] = {}
    for line in text.splitlines():
        if line.startswith("inferkit_rest_requests_total{") and f'route="{route}"' in line:
            status = line.split('status="')[1].split('"')[0]
            counts[status] = counts.get(status, 0) + float(line.rsplit(" ", 1)[1])
    return counts


def test_expect_100_continue_over_the_limit_is_refused_from_the_header(running: Running) -> None:
    # #16.7. hypercorn itself answers `Expect: 100-continue` with `100 Continue` as soon as the
    # headers arrive, before the app runs; the 413 must follow at once, with no body sent.
    with connect(running) as sock:
        sock.sendall(head("/v2/models/echo/infer", 50 * LIMIT, "Expect: 100-continue"))
        status, body = final_response(read_answer(sock))
    assert status == 413
    assert b'"code":"PAYLOAD_TOO_LARGE"' in body


def test_a_declared_length_over_the_limit_is_answered_before_the_body(running: Running) -> None:
    # #16.7: only a part of the body is sent, and the client then waits for an answer.
    with connect(running) as sock:
        sock.sendall(head("/v2/models/echo/infer", 50 * LIMIT) + b" " * 1000)
        status, body = final_response(read_answer(sock))
    assert status == 413
    assert b'"code":"PAYLOAD_TOO_LARGE"' in body


def test_httpx_sending_a_body_over_the_limit_reads_the_413(running: Running) -> None:
    # The server reads none of it and closes: a client still sending gets the answer anyway.
    response = httpx.post(
        f"{running.url}/v2/models/echo/infer", content=b" " * (20 * LIMIT), timeout=30
    )
    assert response.status_code == 413
    assert response.json()["code"] == "PAYLOAD_TOO_LARGE"


def test_a_body_that_stops_arriving_gets_408_and_a_closed_connection(running: Running) -> None:
    # #16.6: slow loris. The settings give the body 1 s; the client sends half of it, stops.
    with connect(running) as sock:
        sock.sendall(head("/v2/models/echo/infer", len(BODY)) + BODY[:20])
        status, body = final_response(read_answer(sock))  # returns once the server closes
    assert status == 408
    assert b'"code":"REQUEST_TIMEOUT"' in body


@pytest.mark.parametrize(
    ("path", "route"),
    [
        ("/v2/models/echo/infer", "/v2/models/{name}/infer"),
        ("/v2/repository/index", "/v2/repository/index"),
    ],
)
def test_a_client_gone_mid_body_is_counted_apart_from_server_errors(
    running: Running, path: str, route: str
) -> None:
    # #16.5: counted as 499 (nginx's "client closed request"), not as a 500.
    before = rest_requests(running, route)
    with connect(running) as sock:
        sock.sendall(head(path, len(BODY)) + BODY[:20])
    deadline = time.monotonic() + 30
    counts = before
    while time.monotonic() < deadline:  # the server records it when it sees the close
        counts = rest_requests(running, route)
        if counts.get("499", 0) > before.get("499", 0):
            break
        time.sleep(0.1)
    assert counts.get("499", 0) == before.get("499", 0) + 1
    assert counts.get("500", 0) == before.get("500", 0)
    assert "Traceback" not in running.log()


@pytest.mark.parametrize(
    "value",
    [b"9" * 5000, "²".encode("latin-1"), b"12junk"],
    ids=["5000-digits", "superscript", "junk"],
)
def test_a_binary_header_length_that_is_no_integer_is_400(running: Running, value: bytes) -> None:
    # #16.4
    with connect(running) as sock:
        request = head("/v2/models/echo/infer", len(BODY), "Connection: close")
        request = request[:-2] + b"Inference-Header-Content-Length: " + value + b"\r\n\r\n"
        sock.sendall(request + BODY)
        status, body = final_response(read_answer(sock))
    assert status == 400
    assert b'"code":"INVALID_REQUEST"' in body
    assert "Traceback" not in running.log()


def test_no_client_value_forges_an_access_line(running: Running) -> None:
    # #16.2: a newline in the URL path, in the V2 request id, in a gRPC model name.
    forged = "2026-12-06 00:00:00,000 [inferkit.access] INFO - FORGED"
    with connect(running) as sock:
        sock.sendall(head("/v2/models/ev%0Ail/infer", len(BODY), "Connection: close") + BODY)
        assert final_response(read_answer(sock))[0] == 404
    body = BODY.replace(b'{"inputs"', b'{"id":"a\\n' + forged.encode() + b'","inputs"')
    with connect(running) as sock:
        sock.sendall(head("/v2/models/echo/infer", len(body), "Connection: close") + body)
        assert final_response(read_answer(sock))[0] == 200
    grpc = triton_grpc.InferenceServerClient(running.grpc)
    tensor = triton_grpc.InferInput("x", [1], "INT32")
    tensor.set_data_from_numpy(np.array([1], dtype=np.int32))
    with pytest.raises(InferenceServerException):
        grpc.infer(f"gr\n{forged}", [tensor])
    grpc.close()
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and running.log().count("[inferkit.access]") < 3:
        time.sleep(0.1)
    lines = running.log().splitlines()
    # A forged line would start with the fake time stamp, or with the path's tail.
    assert not [line for line in lines if line.startswith(("2026-12-06 00:00:00", "il/infer"))]
    assert any("/v2/models/ev\\x0ail/infer 404" in line for line in lines)
    assert any(f"request_id=a\\x0a{forged}" in line for line in lines)
    assert any(f"model=gr\\x0a{forged}" in line for line in lines)


def test_the_server_still_serves(running: Running) -> None:
    response = httpx.post(f"{running.url}/v2/models/echo/infer", content=BODY, timeout=10)
    assert response.status_code == 200

"""Load generators: their result line, the Lua script's strings and the fallback's HTTP reader."""

from __future__ import annotations

import asyncio

import pytest
from benchlib.loaders import LoadError, LoadResult, lua_string, parse_result, pinned, wrk_script
from benchlib.pyload import post_request, read_response

LINE = (
    'BENCH_RESULT {"requests": 200, "duration_s": 2.0, "bad": 3, "socket_errors": 1, '
    '"timeouts": 2, "p50_us": 1500.0, "p99_us": 9000.5}'
)


def test_parse_result_reads_the_result_line_among_others() -> None:
    result = parse_result(f"Running 2s test\n{LINE}\nbye\n")
    assert result == LoadResult(200, 2.0, 3, 1, 2, 1500.0, 9000.5)
    assert (result.errors, result.rps) == (6, 100.0)


def test_parse_result_without_a_result_line_says_so() -> None:
    with pytest.raises(LoadError, match=r"^no BENCH_RESULT line in the load generator's output"):
        parse_result("wrk: connection refused\n")


def test_rps_of_an_empty_run_is_zero() -> None:
    assert LoadResult(0, 0.0, 0, 0, 0, 0.0, 0.0).rps == 0.0


@pytest.mark.parametrize(
    ("data", "literal"),
    [
        (b"", '""'),
        (b"a1", r'"\097\049"'),
        (b'"data":[1]', r'"\034\100\097\116\097\034\058\091\049\093"'),
        (b"\n\\\x00\xff", r'"\010\092\000\255"'),
    ],
)
def test_lua_string_escapes_every_byte(data: bytes, literal: str) -> None:
    assert lua_string(data) == literal


def test_wrk_script_embeds_body_path_and_marker_as_lua_strings() -> None:
    from pathlib import Path

    script = wrk_script(Path("/tmp/b.json"), b"[1]")
    assert f"io.open({lua_string(b'/tmp/b.json')}, " in script
    assert f"local marker = {lua_string(b'[1]')}" in script
    assert "string.find(body, marker, 1, true)" in script  # a plain search, not a pattern
    assert f"wrk.headers[{lua_string(b'Content-Type')}] = {lua_string(b'application/json')}" in (
        script
    )


def test_wrk_script_sends_the_binary_extensions_headers() -> None:
    from pathlib import Path

    headers = {"Content-Type": "application/octet-stream", "Inference-Header-Content-Length": "9"}
    script = wrk_script(Path("/tmp/b.bin"), b"[1]", headers)
    for name, value in headers.items():
        assert f"wrk.headers[{lua_string(name.encode())}] = {lua_string(value.encode())}" in script
    assert "application/json" not in script
    assert "io.open(" in script and ', "rb")' in script  # the body is read as bytes


@pytest.mark.parametrize(
    ("headers", "lines"),
    [
        (None, [b"Content-Type: application/json"]),
        (
            ["Content-Type: application/octet-stream", "Inference-Header-Content-Length: 2"],
            [b"Content-Type: application/octet-stream", b"Inference-Header-Content-Length: 2"],
        ),
    ],
)
def test_the_fallbacks_request_carries_the_headers_and_the_raw_body(
    headers: list[str] | None, lines: list[bytes]
) -> None:
    body = b"{}\x00\xff\r\n"
    request = post_request("127.0.0.1", 8080, "/v2/models/sum/infer", headers, body)
    head, _, rest = request.partition(b"\r\n\r\n")
    assert head.split(b"\r\n") == [
        b"POST /v2/models/sum/infer HTTP/1.1",
        b"Host: 127.0.0.1:8080",
        *lines,
        b"Content-Length: 6",
    ]
    assert rest == body


@pytest.mark.parametrize(
    ("cpu", "expected_tail"),
    [(None, ["wrk", "-t1"]), (1, ["wrk", "-t1"])],
)
def test_pinned_keeps_the_command_at_the_end(cpu: int | None, expected_tail: list[str]) -> None:
    command = pinned(["wrk", "-t1"], cpu)
    assert command[-2:] == expected_tail
    assert (command == ["wrk", "-t1"]) == (cpu is None)


async def _read(raw: bytes) -> tuple[int, bytes, bool]:
    reader = asyncio.StreamReader()
    reader.feed_data(raw)
    reader.feed_eof()
    return await read_response(reader)


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        (b"HTTP/1.1 200 OK\r\ncontent-length: 4\r\n\r\nabcd", (200, b"abcd", True)),
        (b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n", (404, b"", True)),
        (
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n2;x=1\r\nde\r\n"
            b"0\r\nTrailer: 1\r\n\r\n",
            (200, b"abcde", True),
        ),
        (
            b"HTTP/1.1 503 Service Unavailable\r\nConnection: close\r\nContent-Length: 2\r\n\r\nno",
            (503, b"no", False),
        ),
    ],
)
async def test_read_response(raw: bytes, expected: tuple[int, bytes, bool]) -> None:
    assert await _read(raw) == expected


async def test_read_response_of_a_cut_body_raises() -> None:
    with pytest.raises(asyncio.IncompleteReadError):
        await _read(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nabc")

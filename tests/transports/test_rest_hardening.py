"""REST answers to hostile or broken requests (issue #16): 4xx with a stable code, never a 5xx.

Most run in-process through httpx's ASGI transport; the ones about how the body arrives drive
the ASGI app with hand-made ``receive`` channels, so a request can stop half-way or never end.
"""

from __future__ import annotations

import asyncio
import gzip
import logging
import zlib
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any

import httpx
import msgspec
import pytest
from toymodels import sum_model

from inferkit import Server, Settings, errors
from inferkit.transports.body import BodyReader
from inferkit.transports.metrics import create_metrics_app, instrument_rest_app
from inferkit.transports.rest import create_rest_app

BODY = {"inputs": [{"name": "x", "shape": [1, 3], "datatype": "FP32", "data": [1, 2, 3]}]}
RAW = msgspec.json.encode(BODY)
INFER = "/v2/models/sum/infer"

Message = dict[str, Any]


@asynccontextmanager
async def client(**settings: Any) -> AsyncIterator[httpx.AsyncClient]:
    server = Server([sum_model()], settings=Settings(**settings))
    await server.start()
    transport = httpx.ASGITransport(app=create_rest_app(server))
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as http:
        yield http
    await server.stop()


def error(response: httpx.Response) -> tuple[int, str, str]:
    body = response.json()
    return response.status_code, body["code"], body["error"]


def nested(depth: int) -> bytes:
    return b"[" * depth + b"1" + b"]" * depth


# -- #16.3: JSON nested deeper than the decoder's recursion limit -----------------------------


@pytest.mark.parametrize(
    ("path", "body"),
    [
        # in a tensor's data
        (
            INFER,
            b'{"inputs":[{"name":"x","shape":[1],"datatype":"FP32","data":' + nested(5000) + b"}]}",
        ),
        # in the request's parameters
        (INFER, b'{"parameters":{"a":' + nested(5000) + b'},"inputs":[]}'),
        # in an input's parameters
        (
            INFER,
            b'{"inputs":[{"name":"x","shape":[1],"datatype":"FP32","data":[1],'
            b'"parameters":{"a":' + nested(5000) + b"}}]}",
        ),
        # in an unknown field, on another route that decodes JSON (msgspec skips it recursively)
        ("/v2/repository/index", b'{"x":' + nested(5000) + b"}"),
    ],
    ids=["data", "parameters", "input-parameters", "index"],
)
async def test_deeply_nested_json_is_an_invalid_request(path: str, body: bytes) -> None:
    async with client() as http:
        response = await http.post(path, content=body)
        assert error(response) == (
            400,
            "INVALID_REQUEST",
            "Invalid JSON: nested too deeply",
        )
        assert (await http.post(INFER, json=BODY)).status_code == 200


# -- #16.4: Inference-Header-Content-Length that is not a plain integer -----------------------


@pytest.mark.parametrize(
    ("value", "shown"),
    [
        ("9" * 5000, "'99999999999999999999...' (5000 characters)"),
        ("²", "'²'"),  # a digit to str.isdigit, not to int()
        ("١٢", "'١٢'"),  # Arabic-Indic digits: int() would take them
        ("-1", "'-1'"),
        (" 12", "' 12'"),
    ],
    ids=["5000-digits", "superscript", "arabic-indic", "negative", "space"],
)
async def test_binary_header_length_must_be_ascii_digits(value: str, shown: str) -> None:
    async with client() as http:
        response = await http.post(
            INFER,
            content=RAW,
            headers={"inference-header-content-length": value.encode()},
        )
    # The header travels as latin-1 (what ASGI hands over): the message shows what arrived.
    shown = shown if value.isascii() else repr(value.encode().decode("latin-1"))
    assert error(response) == (
        400,
        "INVALID_REQUEST",
        f"Inference-Header-Content-Length must be a non-negative integer, got {shown}",
    )


async def test_binary_header_length_past_the_body_is_an_invalid_request() -> None:
    async with client() as http:
        response = await http.post(
            INFER, content=RAW, headers={"inference-header-content-length": "9" * 19}
        )
    assert error(response) == (
        400,
        "INVALID_REQUEST",
        f"Inference-Header-Content-Length is {'9' * 19}, but the body has {len(RAW)} bytes",
    )


# -- #16.8: gzip bodies that are truncated or followed by junk ------------------------------


@pytest.mark.parametrize(
    ("body", "message"),
    [
        # only the trailer (CRC and length) is missing: the JSON itself inflates whole
        (gzip.compress(RAW)[:-8], "Body is truncated gzip data"),
        (gzip.compress(RAW)[:-20], "Body is truncated gzip data"),
        (gzip.compress(RAW) + b"junk", "Unexpected 4 bytes after the gzip data"),
        (gzip.compress(RAW) + gzip.compress(b"")[:5], "Body is truncated gzip data"),
        (b"not gzip at all", "Body is not valid gzip data"),
    ],
    ids=["no-trailer", "cut", "junk", "cut-second-member", "not-gzip"],
)
async def test_broken_gzip_bodies_are_invalid_requests(body: bytes, message: str) -> None:
    async with client() as http:
        response = await http.post(INFER, content=body, headers={"content-encoding": "gzip"})
    assert error(response) == (400, "INVALID_REQUEST", message)


async def test_deflate_followed_by_junk_is_an_invalid_request() -> None:
    async with client() as http:
        response = await http.post(
            INFER, content=zlib.compress(RAW) + b"!", headers={"content-encoding": "deflate"}
        )
    assert error(response) == (400, "INVALID_REQUEST", "Unexpected 1 bytes after the deflate data")


async def test_gzip_of_several_members_is_one_body() -> None:
    # RFC 1952: a gzip file is a series of members (what `cat a.gz b.gz` makes).
    half = len(RAW) // 2
    body = gzip.compress(RAW[:half]) + gzip.compress(RAW[half:])
    async with client() as http:
        response = await http.post(INFER, content=body, headers={"content-encoding": "gzip"})
    assert response.status_code == 200, response.text
    assert response.json()["outputs"][0]["data"] == [6.0]


async def test_several_gzip_members_together_stay_within_the_limit() -> None:
    member = gzip.compress(b" " * 600)
    async with client(max_request_size=1000) as http:
        response = await http.post(
            INFER, content=member + member, headers={"content-encoding": "gzip"}
        )
    assert error(response)[:2] == (413, "PAYLOAD_TOO_LARGE")


# -- the ASGI app driven by hand: bodies that stop, never end, or are too large --------------


class Channel:
    """A request's ``receive`` from a list of messages, then ``then`` (hang or disconnect)."""

    def __init__(self, messages: list[Message], then: str = "hang") -> None:
        self.messages = list(messages)
        self.then = then
        self.reads = 0
        self.sent: list[Message] = []

    async def receive(self) -> Message:
        self.reads += 1
        if self.messages:
            return self.messages.pop(0)
        if self.then == "disconnect":
            return {"type": "http.disconnect"}
        await asyncio.Event().wait()  # a client that sends nothing more, ever
        raise AssertionError("unreachable")

    async def send(self, message: Message) -> None:
        self.sent.append(message)

    @property
    def status(self) -> int | None:
        starts = [m["status"] for m in self.sent if m["type"] == "http.response.start"]
        return starts[0] if starts else None

    @property
    def body(self) -> Any:
        return msgspec.json.decode(b"".join(m.get("body", b"") for m in self.sent[1:]))


def scope(path: str, headers: dict[str, str]) -> Message:
    return {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "root_path": "",
        "query_string": b"",
        "headers": [(k.encode(), v.encode()) for k, v in headers.items()],
        "client": ("127.0.0.1", 1234),
        "server": ("127.0.0.1", 80),
        "state": {},
    }


App = Callable[[Message, Callable[[], Awaitable[Message]], Callable[[Message], Any]], Any]


async def run(app: App, path: str, headers: dict[str, str], channel: Channel) -> None:
    # Bounded: a regression that waits for the body forever fails here instead of hanging.
    await asyncio.wait_for(app(scope(path, headers), channel.receive, channel.send), 30)


def body_part(data: bytes, more: bool = True) -> Message:
    return {"type": "http.request", "body": data, "more_body": more}


@pytest.mark.parametrize("path", [INFER, "/v2/repository/index"])
async def test_a_declared_length_over_the_limit_is_refused_before_reading(path: str) -> None:
    # #16.7: the answer comes from the header alone; the client may still be sending.
    server = Server([sum_model()], settings=Settings(max_request_size=1000))
    await server.start()
    channel = Channel([body_part(b" " * 100)])  # more is coming, and then nothing
    await run(create_rest_app(server), path, {"content-length": "5000000"}, channel)
    assert channel.reads == 0
    assert channel.status == 413
    assert channel.body == {
        "error": "Request body is larger than the limit of 1000 bytes (max_request_size)",
        "code": "PAYLOAD_TOO_LARGE",
    }
    await server.stop()


async def test_a_streamed_body_over_the_limit_is_refused_without_reading_on() -> None:
    server = Server([sum_model()], settings=Settings(max_request_size=1000))
    await server.start()
    channel = Channel([body_part(b" " * 600), body_part(b" " * 600)])  # then nothing more
    await run(create_rest_app(server), INFER, {}, channel)
    assert (channel.status, channel.reads) == (413, 2)
    await server.stop()


@pytest.mark.parametrize("path", [INFER, "/v2/repository/index"])
async def test_a_body_that_stops_arriving_times_out_with_408(path: str) -> None:
    # #16.6: a client that sends part of a body and then nothing (slow loris) is answered.
    server = Server([sum_model()], settings=Settings(request_body_timeout=0.2))
    await server.start()
    channel = Channel([body_part(b'{"inputs"')])
    await run(create_rest_app(server), path, {"content-length": "100"}, channel)
    assert channel.status == 408
    assert channel.body == {
        "error": "The request body did not arrive within 0.2 seconds (request_body_timeout)",
        "code": "REQUEST_TIMEOUT",
    }
    await server.stop()


def test_the_body_timeout_has_a_default() -> None:
    assert Settings().request_body_timeout == 60.0


async def test_a_client_gone_mid_body_is_counted_as_499_not_500() -> None:
    # #16.5: a disconnect is the client's doing, not a server error to alert on.
    server = Server([sum_model()])
    await server.start()
    app = instrument_rest_app(create_rest_app(server), server)
    for path in (INFER, "/v2/repository/index"):
        channel = Channel([body_part(b'{"inputs"')], then="disconnect")
        await run(app, path, {"content-length": "100"}, channel)
    metrics = httpx.AsyncClient(
        transport=httpx.ASGITransport(app=create_metrics_app(server)), base_url="http://t"
    )
    async with metrics:
        text = (await metrics.get("/metrics")).text
    total = "inferkit_rest_requests_total"
    lines = [line for line in text.splitlines() if line.startswith(total)]
    assert sorted(lines) == [
        f'{total}{{method="POST",route="/v2/models/{{name}}/infer",status="499"}} 1.0',
        f'{total}{{method="POST",route="/v2/repository/index",status="499"}} 1.0',
    ]
    await server.stop()


async def test_a_client_gone_mid_body_logs_no_error(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="inferkit.access")
    server = Server([sum_model()])
    await server.start()
    app = create_rest_app(server)
    for path in (INFER, "/v2/repository/index"):
        await run(app, path, {}, Channel([body_part(b"{")], then="disconnect"))
    assert [r.getMessage() for r in caplog.records if r.levelname in ("ERROR", "CRITICAL")] == []
    (access,) = [r for r in caplog.records if r.name == "inferkit.access"]
    assert access.__dict__["status"] == 499
    await server.stop()


async def test_the_body_timeout_watches_every_read_and_is_rearmed() -> None:
    reader = BodyReader(1000, timeout=0.2)
    for _ in range(2):  # the second round needs the timer armed again
        stalled = asyncio.create_task(reader.read(Channel([]).receive, {}))
        done = await reader.read(Channel([body_part(b"{}", more=False)]).receive, {})
        assert done == b"{}"
        with pytest.raises(errors.RequestTimeout):
            await asyncio.wait_for(stalled, 30)


async def test_a_read_cancelled_by_someone_else_stays_cancelled() -> None:
    reader = BodyReader(1000, timeout=30)
    read = asyncio.create_task(reader.read(Channel([]).receive, {}))
    await asyncio.sleep(0)  # let it start waiting for the body
    read.cancel()
    with pytest.raises(asyncio.CancelledError):
        await read

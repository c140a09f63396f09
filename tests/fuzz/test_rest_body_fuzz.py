"""Fuzzing what the OpenAPI document does not describe (issue #16): the bytes of a body, its
encoding, and the binary extension's ``Inference-Header-Content-Length``.

Hypothesis sends odd bodies (random bytes, JSON nested thousands deep, gzip cut short or
followed by junk) and odd header values (5000 digits, other scripts' digits) to the inference
route of a behaving model, in-process. No answer may be a 5xx or carry a traceback.
"""

from __future__ import annotations

import asyncio
import gzip
import zlib
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from toymodels import EchoModel, named

from inferkit import Server, Settings
from inferkit.transports.rest import create_rest_app

INFER = "/v2/models/echo/infer"
VALID = b'{"inputs":[{"name":"x","shape":[2],"datatype":"INT32","data":[1,2]}]}'


class Client:
    """One started server and an httpx client on it, in a loop of their own."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.server = Server([named(EchoModel, "echo")], settings=Settings(max_request_size=10_000))
        self.loop.run_until_complete(self.server.start())
        transport = httpx.ASGITransport(app=create_rest_app(self.server))
        self.http = httpx.AsyncClient(transport=transport, base_url="http://test")

    def post(self, body: bytes, headers: dict[str, bytes]) -> httpx.Response:
        return self.loop.run_until_complete(self.http.post(INFER, content=body, headers=headers))

    def close(self) -> None:
        self.loop.run_until_complete(self.http.aclose())
        self.loop.run_until_complete(self.server.stop())
        self.loop.close()


@pytest.fixture(scope="module")
def client() -> Iterator[Client]:
    client = Client()
    yield client
    client.close()


def nested(depth: int) -> bytes:
    return b"[" * depth + b"1" + b"]" * depth


json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=5), inner),
    max_leaves=20,
)

bodies = st.one_of(
    st.binary(max_size=300),
    st.just(VALID),
    st.builds(lambda v: httpx.Request("POST", "/", json=v).content, json_values),
    # deep nesting where the schema has `Any`: data and parameters
    st.integers(0, 5000).map(
        lambda d: (
            b'{"inputs":[{"name":"x","shape":[1],"datatype":"INT32","data":' + nested(d) + b"}]}"
        )
    ),
    st.integers(0, 5000).map(lambda d: b'{"parameters":{"p":' + nested(d) + b'},"inputs":[]}'),
)

header_lengths = st.one_of(
    st.none(),
    st.integers(-3, 200).map(str),
    st.text(max_size=6),  # includes other scripts' digits ("²", "٣")
    st.integers(20, 6000).map(lambda n: "9" * n),
)


@st.composite
def requests(draw: Any) -> tuple[bytes, dict[str, bytes]]:
    body = draw(bodies)
    headers: dict[str, bytes] = {}
    length = draw(header_lengths)
    if length is not None:
        headers["inference-header-content-length"] = length.encode()
    encoding = draw(st.sampled_from([None, "gzip", "deflate"]))
    if encoding is not None:
        packed = gzip.compress(body) if encoding == "gzip" else zlib.compress(body)
        cut = draw(st.integers(0, len(packed)))
        body = packed[:cut] + draw(st.binary(max_size=8))  # whole or cut short, maybe junk
        headers["content-encoding"] = encoding.encode()
    return body, headers


@given(request=requests())
@settings(
    max_examples=150,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
def test_no_body_or_header_gets_a_5xx(
    client: Client, request: tuple[bytes, dict[str, bytes]]
) -> None:
    body, headers = request
    response = client.post(body, headers)
    assert response.status_code < 500, response.text
    assert "Traceback" not in response.text
    if response.status_code >= 400:
        assert list(response.json()) == ["error", "code"]

"""REST streaming in process: ``infer_stream`` / ``generate_stream`` as Server-Sent Events."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import httpx
import msgspec
import pytest
from toymodels import WordStream, named, sum_model, text_request

from inferkit import Server
from inferkit.events import InferenceFinished
from inferkit.transports.rest import create_rest_app
from inferkit.types import MetadataTensor, encode_json


@asynccontextmanager
async def client(*models: Any) -> AsyncIterator[httpx.AsyncClient]:
    server = Server(models or [named(WordStream, "words", version="v1"), sum_model()])
    await server.start()
    transport = httpx.ASGITransport(app=create_rest_app(server))
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as http:
        yield http
    await server.stop()


def events(text: str) -> list[tuple[str, Any]]:
    """(event type, decoded data) of each Server-Sent Event."""
    parsed = []
    for block in text.split("\n\n"):
        if not block:
            continue
        fields = dict(line.split(": ", 1) for line in block.split("\n"))
        parsed.append((fields.get("event", "message"), msgspec.json.decode(fields["data"])))
    return parsed


@pytest.mark.parametrize(
    "path",
    [
        "/v2/models/words/infer_stream",
        "/v2/models/words/generate_stream",
        "/v2/models/words/versions/v1/infer_stream",
        "/v2/models/words/versions/v1/generate_stream",
    ],
)
async def test_each_response_is_one_data_event(path: str) -> None:
    async with client() as http:
        response = await http.post(path, content=encode_json(text_request("to be", id="q")))
    assert response.status_code == 200
    assert response.headers["content-type"] == "text/event-stream"
    assert response.headers["cache-control"] == "no-cache"
    got = events(response.text)
    assert [(kind, data["outputs"][0]["data"]) for kind, data in got] == [
        ("message", ["to"]),
        ("message", ["be"]),
    ]
    assert {(d["model_name"], d["model_version"], d["id"]) for _, d in got} == {
        ("words", "v1", "q")
    }


async def test_a_model_without_a_stream_answers_one_event() -> None:
    body = {"inputs": [{"name": "x", "shape": [1, 2], "datatype": "FP32", "data": [1, 2]}]}
    async with client() as http:
        response = await http.post("/v2/models/sum/infer_stream", json=body)
    ((kind, data),) = events(response.text)
    assert (kind, data["outputs"][0]["data"]) == ("message", [3.0])


@pytest.mark.parametrize(
    ("path", "body", "status", "code"),
    [
        ("/v2/models/nope/infer_stream", b'{"inputs": []}', 404, "MODEL_NOT_FOUND"),
        ("/v2/models/words/infer_stream", b'{"inputs": [', 400, "INVALID_REQUEST"),
        ("/v2/models/words/versions/v9/generate_stream", b'{"inputs": []}', 404, "MODEL_NOT_FOUND"),
    ],
)
async def test_an_error_before_the_first_event_is_a_plain_error_answer(
    path: str, body: bytes, status: int, code: str
) -> None:
    async with client() as http:
        response = await http.post(path, content=body)
    assert response.status_code == status
    assert response.headers["content-type"] == "application/json"
    assert response.json()["code"] == code


async def test_a_request_a_model_stream_refuses_is_a_plain_error_and_one_record() -> None:
    declared = [MetadataTensor(name="text", datatype="BYTES", shape=[-1, 1])]
    server = Server([named(WordStream, "words", inputs=declared)])
    records: list[InferenceFinished] = []
    server.add_listener(lambda e: records.append(e) if isinstance(e, InferenceFinished) else None)
    await server.start()
    body = {"inputs": [{"name": "text", "shape": [1, 1], "datatype": "FP32", "data": [1]}]}
    transport = httpx.ASGITransport(app=create_rest_app(server))
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as http:
        response = await http.post("/v2/models/words/infer_stream", json=body)
    assert (response.status_code, response.json()["code"]) == (400, "INVALID_REQUEST")
    assert [(r.model, r.code, r.status, r.found) for r in records] == [
        ("words", "INVALID_REQUEST", "400", True)
    ]


async def test_an_error_after_the_first_event_is_an_error_event_and_the_end() -> None:
    async with client() as http:
        response = await http.post(
            "/v2/models/words/infer_stream", content=encode_json(text_request("one boom two"))
        )
    assert response.status_code == 200
    got = events(response.text)
    assert [kind for kind, _ in got] == ["message", "error"]
    assert got[1][1] == {
        "error": "Model 'words' failed to run inference; see the server log",
        "code": "INFERENCE_FAILED",
    }
    assert "secret" not in response.text


async def test_generate_is_infer() -> None:
    body = {
        "id": "g",
        "inputs": [{"name": "x", "shape": [1, 2], "datatype": "FP32", "data": [1, 2]}],
    }
    async with client() as http:
        generated = await http.post("/v2/models/sum/generate", json=body)
        inferred = await http.post("/v2/models/sum/infer", json=body)
    assert generated.status_code == inferred.status_code == 200
    assert generated.json() == inferred.json()


async def test_a_client_that_disconnects_cancels_the_model_stream() -> None:
    # Driven at the ASGI level: the client disconnects after the first event.
    closed = asyncio.Event()

    class Slow(WordStream):
        async def predict_stream(self, payloads: Any) -> Any:
            try:
                async for response in super().predict_stream(payloads):
                    yield response
                    await asyncio.Event().wait()  # the next word never comes
            finally:
                closed.set()

    server = Server([named(Slow, "slow")])
    await server.start()
    app = create_rest_app(server)
    first_event = asyncio.Event()
    sent: list[dict[str, Any]] = []
    inbox: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
    await inbox.put(
        {"type": "http.request", "body": encode_json(text_request("a b")), "more_body": False}
    )

    async def receive() -> dict[str, Any]:
        return await inbox.get()

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)
        if message.get("body"):
            first_event.set()

    scope = {
        "type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "POST",
        "scheme": "http", "path": "/v2/models/slow/infer_stream", "raw_path": b"",
        "root_path": "", "query_string": b"", "headers": [], "client": None, "server": None,
    }  # fmt: skip
    task = asyncio.create_task(app(scope, receive, send))
    await asyncio.wait_for(first_event.wait(), 5)
    await inbox.put({"type": "http.disconnect"})
    await asyncio.wait_for(task, 5)  # the endpoint returns once the stream is cancelled
    assert closed.is_set()
    assert [m["type"] for m in sent] == ["http.response.start", "http.response.body"]
    await asyncio.wait_for(server.unload("slow"), 5)  # nothing left in flight

"""The real ``inferkit start`` streaming: gRPC ``ModelStreamInfer`` with tritonclient.grpc,
REST ``infer_stream`` / ``generate_stream`` (Server-Sent Events) with httpx, and a client that
leaves mid-stream; each in process and with ``parallel_workers: 2``.

The streaming model is ``toymodels.WordStream`` (one response per word of its BYTES input; the
word ``boom`` makes it raise with a secret in the text), imported by the server through
``PYTHONPATH``. The ticker (written into the repository) streams forever and, when its
iterator is closed, writes a marker file named after its request's id.
"""

from __future__ import annotations

import os
import queue
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import msgspec
import numpy as np
import pytest
import tritonclient.grpc as triton
from harness import Running, inferkit_start, write_repository

pytestmark = pytest.mark.e2e

TICKER_MODEL = '''
import asyncio
import os
from pathlib import Path

import numpy as np

from inferkit import InferenceResponse, Model
from inferkit.codecs import encode_tensor


class Ticker(Model):
    """Yields a tick about every 20 ms until its iterator is closed, then writes its pid to
    ``{parameters.extra.markers}/{id of the first request}.closed``."""

    async def predict_stream(self, payloads):
        first = await payloads.__anext__()
        marker = Path(self.settings.parameters.extra["markers"]) / f"{first.id}.closed"
        try:
            tick = 0
            while True:
                yield InferenceResponse(
                    model_name=self.name, outputs=[encode_tensor("tick", np.array([tick]))]
                )
                tick += 1
                await asyncio.sleep(0.02)
        finally:
            marker.write_text(str(os.getpid()))
'''

TESTS = Path(__file__).resolve().parents[1]
#: Bound for any one answer (a response, an event, a marker file) to arrive.
WAIT_S = 10.0
GENERIC = "Model '{}' failed to run inference; see the server log"


def models(workers: int, markers: Path) -> dict[str, dict[str, Any]]:
    common = {"parallel_workers": workers}
    return {
        "words": {"name": "words", "implementation": "toymodels.WordStream", **common},
        # The same, for the tests that make it fail: a failure cannot spoil the other tests.
        "faulty": {"name": "faulty", "implementation": "toymodels.WordStream", **common},
        "echo": {"name": "echo", "implementation": "model.Echo", **common},
        "boom": {"name": "boom", "implementation": "model.Boom", **common},
        "ticker": {
            "name": "ticker",
            "implementation": "ticker.Ticker",
            "parameters": {"extra": {"markers": str(markers)}},
            **common,
        },
    }


@dataclass
class Server:
    """A running server, its models' parallel_workers, and where its ticker leaves markers."""

    running: Running
    workers: int
    markers: Path


@pytest.fixture(scope="module", params=[0, 2], ids=["in-process", "2-workers"])
def server(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Server]:
    workers: int = request.param
    markers = tmp_path_factory.mktemp("markers")
    root = write_repository(tmp_path_factory.mktemp("repo"), models(workers, markers))
    (root / "ticker" / "ticker.py").write_text(TICKER_MODEL)
    path = os.pathsep.join(filter(None, [str(TESTS), os.environ.get("PYTHONPATH")]))
    with inferkit_start(root, env={"PYTHONPATH": path}) as running:
        yield Server(running, workers, markers)


# -- gRPC: ModelStreamInfer with tritonclient ---------------------------------------------------

Answer = tuple[Any, Any]  # (InferResult | None, InferenceServerException | None)


class Stream:
    """A tritonclient stream whose callback's answers are taken one by one, each bounded."""

    def __init__(self, client: triton.InferenceServerClient) -> None:
        self.client = client
        self.answers: queue.Queue[Answer] = queue.Queue()
        client.start_stream(
            callback=lambda result, error: self.answers.put((result, error)),
            stream_timeout=60,
        )

    def send(self, model: str, text: str, request_id: str) -> None:
        self.client.async_stream_infer(model, [text_input(text)], request_id=request_id)

    def take(self, count: int) -> list[Answer]:
        """The next ``count`` answers, each within WAIT_S."""
        got: list[Answer] = []
        for _ in range(count):
            try:
                got.append(self.answers.get(timeout=WAIT_S))
            except queue.Empty:
                seen = [outcome(answer) for answer in got]
                raise AssertionError(f"expected {count} answers, got {seen}") from None
        return got

    def stop(self) -> list[Answer]:
        """Close the stream (waiting for the server to end it); answers not taken yet."""
        self.client.stop_stream()
        rest = []
        while not self.answers.empty():
            rest.append(self.answers.get_nowait())
        return rest


@pytest.fixture
def client(server: Server) -> Iterator[triton.InferenceServerClient]:
    client = triton.InferenceServerClient(server.running.grpc)
    yield client
    client.close()


def text_input(text: str) -> triton.InferInput:
    tensor = triton.InferInput("text", [1], "BYTES")
    tensor.set_data_from_numpy(np.array([text.encode()], dtype=np.object_))
    return tensor


def outcome(answer: Answer) -> tuple[str, str, list[Any]] | str:
    """(request id, model, data of its one output, flattened) of a response; an error's
    message."""
    result, error = answer
    if error is not None:
        assert result is None
        return str(error.message())
    response = result.get_response()
    [output] = response.outputs
    data = result.as_numpy(output.name)
    assert data is not None
    return response.id, response.model_name, data.reshape(-1).tolist()


def test_grpc_model_stream_yields_every_response_in_order(
    client: triton.InferenceServerClient,
) -> None:
    stream = Stream(client)
    try:
        stream.send("words", "to be or", "r1")
        stream.send("echo", "not mine", "x")  # refused: the stream is the words model's
        stream.send("words", "not to be", "r2")
        got = stream.take(7)
    finally:
        rest = stream.stop()
    answers = [outcome(answer) for answer in got]
    # The model's responses in the order it yielded them, each with its request's id; where the
    # refusal comes among them depends on when the request is read, and is not checked.
    assert [answer for answer in answers if not isinstance(answer, str)] == [
        ("r1", "words", [b"to"]),
        ("r1", "words", [b"be"]),
        ("r1", "words", [b"or"]),
        ("r2", "words", [b"not"]),
        ("r2", "words", [b"to"]),
        ("r2", "words", [b"be"]),
    ]
    assert [answer for answer in answers if isinstance(answer, str)] == [
        "This stream serves model 'words' (named by its first request); "
        "send requests for model 'echo' on a stream of their own"
    ]
    assert rest == []


def test_grpc_plain_model_stream_answers_one_response_per_request(
    client: triton.InferenceServerClient,
) -> None:
    stream = Stream(client)
    try:
        stream.send("echo", "first words", "e1")
        stream.send("boom", "anything", "e2")  # fails alone; the stream goes on
        stream.send("echo", "last words", "e3")
        got = stream.take(3)
    finally:
        rest = stream.stop()
    assert [outcome(answer) for answer in got] == [
        ("e1", "echo", [b"first words"]),
        GENERIC.format("boom"),
        ("e3", "echo", [b"last words"]),
    ]
    assert rest == []


def test_grpc_plain_stream_answers_a_streaming_model_on_its_own(
    client: triton.InferenceServerClient,
) -> None:
    # The first message's model (echo, without a predict_stream of its own) decides: every
    # message is answered on its own, one predict each, a streaming model's too.
    stream = Stream(client)
    try:
        stream.send("echo", "hello", "p1")
        stream.send("words", "two words", "p2")
        stream.send("echo", "bye", "p3")
        got = stream.take(3)
    finally:
        rest = stream.stop()
    assert [outcome(answer) for answer in got] == [
        ("p1", "echo", [b"hello"]),
        ("p2", "words", [b"two words"]),
        ("p3", "echo", [b"bye"]),
    ]
    assert rest == []


def test_grpc_model_error_is_one_generic_error_and_the_server_goes_on(
    server: Server, client: triton.InferenceServerClient
) -> None:
    stream = Stream(client)
    try:
        stream.send("faulty", "fine boom never", "bad")
        got = stream.take(2)
    finally:
        rest = stream.stop()  # the server ended the stream after the error
    assert [outcome(answer) for answer in got] == [
        ("bad", "faulty", [b"fine"]),
        GENERIC.format("faulty"),
    ]
    assert rest == []
    assert "secret" not in str(got[1][1])

    stream = Stream(client)
    try:
        stream.send("faulty", "still here", "ok")
        again = stream.take(2)
    finally:
        rest = stream.stop()
    assert [outcome(answer) for answer in again] == [
        ("ok", "faulty", [b"still"]),
        ("ok", "faulty", [b"here"]),
    ]
    assert rest == []
    assert "secret-token-456" in server.running.log()  # the text went to the log only


# -- REST: infer_stream / generate_stream as Server-Sent Events ---------------------------------


def text_body(text: str, id: str) -> dict[str, Any]:
    return {
        "id": id,
        "inputs": [{"name": "text", "shape": [1], "datatype": "BYTES", "data": [text]}],
    }


def sse(lines: Iterator[str]) -> Iterator[tuple[str, Any]]:
    """(event type, decoded data) of each Server-Sent Event, as the lines arrive."""
    fields: dict[str, str] = {}
    for line in lines:
        if line:
            name, _, value = line.partition(": ")
            fields[name] = value
            continue
        if fields:
            yield fields.get("event", "message"), msgspec.json.decode(fields["data"])
            fields = {}
    assert not fields, f"an event was cut short: {fields}"


@pytest.fixture
def http(server: Server) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=server.running.url, timeout=WAIT_S) as client:
        yield client


def stream_events(http: httpx.Client, path: str, body: dict[str, Any]) -> list[tuple[str, Any]]:
    with http.stream("POST", path, json=body) as response:
        assert response.status_code == 200, response.read()
        assert response.headers["content-type"] == "text/event-stream"
        return list(sse(response.iter_lines()))


@pytest.mark.parametrize("action", ["infer_stream", "generate_stream"])
def test_rest_stream_is_one_event_per_response(http: httpx.Client, action: str) -> None:
    got = stream_events(http, f"/v2/models/words/{action}", text_body("to be or not", "s1"))
    assert [(kind, data["outputs"][0]["data"]) for kind, data in got] == [
        ("message", ["to"]),
        ("message", ["be"]),
        ("message", ["or"]),
        ("message", ["not"]),
    ]
    assert {(data["model_name"], data["id"]) for _, data in got} == {("words", "s1")}
    assert {data["outputs"][0]["name"] for _, data in got} == {"word"}


def test_rest_stream_of_a_plain_model_is_one_event(http: httpx.Client) -> None:
    got = stream_events(http, "/v2/models/echo/infer_stream", text_body("just one", "p"))
    assert [(kind, data["model_name"], data["id"]) for kind, data in got] == [
        ("message", "echo", "p")
    ]
    assert got[0][1]["outputs"][0]["data"] == ["just one"]


def test_rest_generate_is_infer(http: httpx.Client) -> None:
    generated = http.post("/v2/models/words/generate", json=text_body("a b", "g"))
    inferred = http.post("/v2/models/words/infer", json=text_body("a b", "g"))
    assert generated.status_code == inferred.status_code == 200
    assert generated.json() == inferred.json()
    assert generated.json()["outputs"][0]["data"] == ["a b"]  # one predict, not a stream


@pytest.mark.parametrize("action", ["infer_stream", "generate_stream"])
def test_rest_stream_of_an_unknown_model_is_a_404(http: httpx.Client, action: str) -> None:
    response = http.post(f"/v2/models/nope/{action}", json=text_body("a", "n"))
    assert response.status_code == 404
    assert response.headers["content-type"] == "application/json"
    assert response.json()["code"] == "MODEL_NOT_FOUND"


def test_rest_model_error_before_the_first_event_is_a_json_error(http: httpx.Client) -> None:
    response = http.post("/v2/models/faulty/infer_stream", json=text_body("boom", "b0"))
    assert response.status_code == 500
    assert response.headers["content-type"] == "application/json"
    assert response.json() == {"error": GENERIC.format("faulty"), "code": "INFERENCE_FAILED"}
    # The server goes on.
    ok = stream_events(http, "/v2/models/faulty/infer_stream", text_body("ok", "b0-after"))
    assert [kind for kind, _ in ok] == ["message"]


@pytest.mark.parametrize("action", ["infer_stream", "generate_stream"])
def test_rest_model_error_midway_is_an_error_event_and_the_end(
    http: httpx.Client, action: str
) -> None:
    with http.stream(
        "POST", f"/v2/models/faulty/{action}", json=text_body("one two boom three", "b1")
    ) as response:
        assert response.status_code == 200
        lines = list(response.iter_lines())
    got = list(sse(iter(lines)))
    assert got == [
        ("message", got[0][1]),
        ("message", got[1][1]),
        ("error", {"error": GENERIC.format("faulty"), "code": "INFERENCE_FAILED"}),
    ]
    assert [data["outputs"][0]["data"] for _, data in got[:2]] == [["one"], ["two"]]
    assert not any("secret" in line for line in lines)
    # The server goes on.
    assert [
        kind
        for kind, _ in stream_events(http, f"/v2/models/faulty/{action}", text_body("ok", "b2"))
    ] == ["message"]


# -- Clients that leave mid-stream --------------------------------------------------------------


def wait_for_marker(server: Server, request_id: str) -> int:
    """Poll (bounded) for the ticker's marker of ``request_id``; the pid that wrote it."""
    marker = server.markers / f"{request_id}.closed"
    deadline = time.monotonic() + WAIT_S
    while time.monotonic() < deadline:
        if marker.exists() and marker.read_text():
            return int(marker.read_text())
        time.sleep(0.02)  # polling a file, bounded by the deadline
    raise AssertionError(
        f"the ticker's iterator was not closed within {WAIT_S}s of the client leaving:\n"
        + server.running.log()
    )


def assert_written_by_the_right_process(server: Server, pid: int) -> None:
    if server.workers:
        assert pid != server.running.process.pid  # a worker process closed the ticker
    else:
        assert pid == server.running.process.pid


def test_rest_client_leaving_closes_the_model_stream(server: Server) -> None:
    # A client of its own, closed with the response: the connection goes away.
    with httpx.Client(base_url=server.running.url, timeout=WAIT_S) as leaving:
        with leaving.stream(
            "POST", "/v2/models/ticker/infer_stream", json=text_body("go", "leave-rest")
        ) as response:
            assert response.status_code == 200
            kind, data = next(sse(response.iter_lines()))
    assert (kind, data["model_name"], data["outputs"][0]["data"]) == ("message", "ticker", [0])
    assert_written_by_the_right_process(server, wait_for_marker(server, "leave-rest"))
    with httpx.Client(base_url=server.running.url, timeout=WAIT_S) as http:
        assert [
            kind
            for kind, _ in stream_events(
                http, "/v2/models/words/infer_stream", text_body("after", "a")
            )
        ] == ["message"]
        assert http.post("/v2/models/echo/infer", json=text_body("x", "b")).status_code == 200


def test_grpc_client_cancelling_closes_the_model_stream(
    server: Server, client: triton.InferenceServerClient
) -> None:
    stream = Stream(client)
    try:
        stream.send("ticker", "go", "leave-grpc")
        [first] = stream.take(1)
    finally:
        client.stop_stream(cancel_requests=True)
    assert outcome(first) == ("leave-grpc", "ticker", [0])
    assert_written_by_the_right_process(server, wait_for_marker(server, "leave-grpc"))
    stream = Stream(client)
    try:
        stream.send("words", "after", "after-grpc")
        assert [outcome(answer) for answer in stream.take(1)] == [
            ("after-grpc", "words", [b"after"])
        ]
    finally:
        stream.stop()


def test_no_worker_process_died_on_a_stream(server: Server) -> None:
    # Last of the module for each server: none of the streams above (failed, refused, left)
    # cost a worker process its life.
    log = server.running.log()
    assert [line for line in log.splitlines() if "restarting it" in line] == [], log

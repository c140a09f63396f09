"""Every gRPC method of the service fed bytes that are not what it expects, in process.

Hypothesis makes random bytes and mutations of valid messages (a byte flipped, cut short,
inserted, or a field appended), sends them as the request message of each method, and checks
that a client error is answered as one: never INTERNAL or UNKNOWN, never a traceback in the
status message or in the server's log. Examples are bounded and derandomized, so the suite
stays fast and repeatable; the strict parsing and the framing cases it stands on have tests of
their own below.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Iterator

import proto_convert
import pytest
from grpclib.client import Channel
from grpclib.const import Cardinality, Status
from grpclib.exceptions import GRPCError, StreamTerminatedError
from grpclib.health.v1.health_pb2 import HealthCheckRequest
from grpclib.testing import ChannelFor
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from toymodels import sum_model

from inferkit import InferenceRequest, RequestInput, Server, Settings
from inferkit.transports.grpc import create_grpc_service
from inferkit.transports.grpc._generated import inference as pb
from inferkit.transports.grpc._generated.inference import model_repository as mr

V2 = "/inference.GRPCInferenceService"
MR = "/inference.model_repository.ModelRepositoryService"
HEALTH = "/grpc.health.v1.Health"

SUM = InferenceRequest(
    inputs=[RequestInput(name="x", shape=[1, 3], datatype="FP32", data=[1.0, 2.0, 3.0])]
)

#: A valid request of each method, the seed of the mutations.
VALID: dict[str, bytes] = {
    f"{V2}/ServerLive": bytes(pb.ServerLiveRequest()),
    f"{V2}/ServerReady": bytes(pb.ServerReadyRequest()),
    f"{V2}/ModelReady": bytes(pb.ModelReadyRequest(name="sum")),
    f"{V2}/ServerMetadata": bytes(pb.ServerMetadataRequest()),
    f"{V2}/ModelMetadata": bytes(pb.ModelMetadataRequest(name="sum", version="")),
    f"{V2}/ModelInfer": bytes(proto_convert.request_to_proto(SUM, "sum")),
    f"{V2}/ModelStreamInfer": bytes(proto_convert.request_to_proto(SUM, "sum")),
    f"{V2}/ModelStatistics": bytes(pb.ModelStatisticsRequest(name="sum")),
    f"{V2}/RepositoryIndex": bytes(pb.RepositoryIndexRequest(ready=True)),
    f"{V2}/RepositoryModelLoad": bytes(pb.RepositoryModelLoadRequest(model_name="sum")),
    f"{V2}/RepositoryModelUnload": bytes(pb.RepositoryModelUnloadRequest(model_name="nope")),
    f"{MR}/RepositoryIndex": bytes(mr.RepositoryIndexRequest(ready=True)),
    f"{MR}/RepositoryModelLoad": bytes(mr.RepositoryModelLoadRequest(model_name="sum")),
    f"{MR}/RepositoryModelUnload": bytes(mr.RepositoryModelUnloadRequest(model_name="nope")),
    f"{HEALTH}/Check": HealthCheckRequest(service="").SerializeToString(),
}

#: Statuses that say the server failed, not the client.
SERVER_FAULTS = {Status.INTERNAL, Status.UNKNOWN}


class Raw:
    """A message already serialized (grpclib's codec calls ``SerializeToString``)."""

    def __init__(self, data: bytes) -> None:
        self.data = data

    def SerializeToString(self) -> bytes:  # the protobuf API's name
        return self.data

    @classmethod
    def FromString(cls, data: bytes) -> Raw:  # the protobuf API's name
        return cls(data)


class Served:
    """A started server behind grpclib's in-memory channel, on a loop of the test's own (so
    hypothesis, which calls the test synchronously, can use it for every example)."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.server = Server([sum_model()], settings=Settings())
        self.loop.run_until_complete(self.server.start())
        self._channel = ChannelFor(create_grpc_service(self.server))
        self.channel: Channel = self.loop.run_until_complete(self._channel.__aenter__())

    def call(self, path: str, data: bytes) -> tuple[Status, str]:
        """The status and message of one call carrying ``data`` as its request message."""
        return self.loop.run_until_complete(asyncio.wait_for(_call(self.channel, path, data), 30))

    def close(self) -> None:
        self.loop.run_until_complete(self._channel.__aexit__(None, None, None))
        self.loop.run_until_complete(self.server.stop())
        self.loop.close()


async def _call(channel: Channel, path: str, data: bytes) -> tuple[Status, str]:
    streaming = path.endswith("ModelStreamInfer")
    cardinality = Cardinality.STREAM_STREAM if streaming else Cardinality.UNARY_UNARY
    async with channel.request(path, cardinality, Raw, Raw) as stream:
        await stream.send_message(Raw(data), end=True)
        try:
            replies = [reply async for reply in stream] if streaming else []
            if not streaming:
                await stream.recv_message()
        except GRPCError as exc:
            return exc.status, exc.message or ""
        except StreamTerminatedError as exc:  # pragma: no cover - reported, not expected
            return Status.UNKNOWN, f"stream terminated: {exc}"
    # A stream answers a bad message with a message of its own (``error_message``).
    errors = [pb.ModelStreamInferResponse.FromString(r.data).error_message for r in replies]
    return Status.OK, " ".join(errors)


@pytest.fixture(scope="module")
def served() -> Iterator[Served]:
    served = Served()
    yield served
    served.close()


@pytest.fixture
def no_server_tracebacks(caplog: pytest.LogCaptureFixture) -> Iterator[None]:
    """Fail if anything logged an exception with its traceback while the test ran."""
    with caplog.at_level(logging.ERROR):
        yield
    assert not [r for r in caplog.records if r.exc_info], caplog.text


def check(served: Served, path: str, data: bytes) -> tuple[Status, str]:
    status, message = served.call(path, data)
    assert status not in SERVER_FAULTS, (path, data, status, message)
    assert "Traceback" not in message, message
    return status, message


# -- mutations ------------------------------------------------------------------------------


def _flip(data: bytes, at: int, byte: int) -> bytes:
    if not data:
        return bytes([byte])
    at %= len(data)
    return data[:at] + bytes([byte]) + data[at + 1 :]


def _cut(data: bytes, at: int, byte: int) -> bytes:
    return data[: at % (len(data) + 1)]


def _insert(data: bytes, at: int, byte: int) -> bytes:
    at %= len(data) + 1
    return data[:at] + bytes([byte]) + data[at:]


def _append(data: bytes, at: int, byte: int) -> bytes:
    # A field of a random number and wire type, as a key byte and one more byte.
    return data + bytes([byte, at % 256])


MUTATIONS: list[Callable[[bytes, int, int], bytes]] = [_flip, _cut, _insert, _append]


def mutated(valid: bytes) -> st.SearchStrategy[bytes]:
    """``valid`` after one to four random mutations."""
    step = st.tuples(st.sampled_from(MUTATIONS), st.integers(0, 1 << 16), st.integers(0, 255))

    def apply(steps: list[tuple[Callable[[bytes, int, int], bytes], int, int]]) -> bytes:
        data = valid
        for mutate, at, byte in steps:
            data = mutate(data, at, byte)
        return data

    return st.lists(step, min_size=1, max_size=4).map(apply)


FUZZ = settings(
    max_examples=40,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)


@pytest.mark.parametrize("path", sorted(VALID))
def test_random_bytes_are_a_client_error(
    served: Served, path: str, no_server_tracebacks: None
) -> None:
    @FUZZ
    @given(st.binary(max_size=64))
    def run(data: bytes) -> None:
        check(served, path, data)

    run()


@pytest.mark.parametrize("path", sorted(VALID))
def test_mutated_messages_are_a_client_error(
    served: Served, path: str, no_server_tracebacks: None
) -> None:
    @FUZZ
    @given(mutated(VALID[path]))
    def run(data: bytes) -> None:
        check(served, path, data)

    run()


@pytest.mark.parametrize("path", sorted(VALID))
def test_the_seeds_are_valid(served: Served, path: str, no_server_tracebacks: None) -> None:
    # The mutations start from messages the server takes (unloading an unknown model aside).
    status, _ = check(served, path, VALID[path])
    assert status == (Status.NOT_FOUND if path.endswith("Unload") else Status.OK)


# -- strict parsing of the messages betterproto2 would take --------------------------------


@pytest.mark.parametrize(
    ("data", "fault"),
    [
        (b"\xff\xff\xff", "past the end"),  # no protobuf at all (once read as an empty message)
        (b"garbage bytes here", "wire type"),
        (b"\x0a\x05ab", "past the end"),  # a name of 5 bytes with 2 (once read as 'ab')
        (b"\x08\x01", "wire type varint, expected length-delimited"),  # once name=1
        (b"\x0a\x02\xff\xfe", "UTF-8"),
    ],
    ids=["no-protobuf", "text", "length-past-the-end", "wrong-wire-type", "not-utf8"],
)
def test_garbage_is_invalid_argument_naming_the_message(
    served: Served, data: bytes, fault: str, no_server_tracebacks: None
) -> None:
    status, message = check(served, f"{V2}/ModelReady", data)
    assert status == Status.INVALID_ARGUMENT, message
    assert message.startswith("Expected a `ModelReadyRequest` message"), message
    assert fault in message


def test_garbage_in_a_nested_message_names_its_field(
    served: Served, no_server_tracebacks: None
) -> None:
    # KServe's load request: parameters {"k": {string_param: b"\xff"}}, a map entry whose
    # value message holds a string that is not UTF-8.
    entry = b"\x0a\x01k" + b"\x12\x03" + b"\x1a\x01\xff"
    data = b"\x12\x03sum" + b"\x1a" + bytes([len(entry)]) + entry
    status, message = check(served, f"{V2}/RepositoryModelLoad", data)
    assert status == Status.INVALID_ARGUMENT, message
    assert message == (
        "Expected a `RepositoryModelLoadRequest` message: "
        "at `parameters.value.string_param`: a string that is not UTF-8"
    )


# -- framing: what grpclib's reader would fail on ------------------------------------------


async def _raw_frames(channel: Channel, path: str, frames: bytes) -> tuple[Status, str]:
    """Send ``frames`` as the whole request body, grpclib's framing bypassed."""
    async with channel.request(path, Cardinality.UNARY_UNARY, Raw, Raw) as stream:
        await stream.send_request()
        await stream._stream.send_data(frames, end_stream=True)  # the raw h2 stream
        stream._end_done = True  # grpclib's client: its side is ended, by the line above
        try:
            await stream.recv_message()
        except GRPCError as exc:
            return exc.status, exc.message or ""
    return Status.OK, ""


@pytest.mark.parametrize(
    ("frames", "status", "fault"),
    [
        (b"\x00\x00\x00", Status.INVALID_ARGUMENT, "ended inside a message"),
        (b"\x00\x00\x00\x00\x09\x0a\x03", Status.INVALID_ARGUMENT, "ended inside a message"),
        (b"\x01\x00\x00\x00\x02\x0a\x00", Status.INVALID_ARGUMENT, "Compressed messages"),
        (b"\x00\xff\xff\xff\xff", Status.RESOURCE_EXHAUSTED, "4294967295 bytes is larger"),
    ],
    ids=["truncated-prefix", "truncated-body", "compressed", "oversize"],
)
def test_broken_framing_is_a_client_error(
    served: Served, frames: bytes, status: Status, fault: str, no_server_tracebacks: None
) -> None:
    got, message = served.loop.run_until_complete(
        asyncio.wait_for(_raw_frames(served.channel, f"{V2}/ModelReady", frames), 30)
    )
    assert (got, fault in message) == (status, True), message

"""The pieces between processes, in one process: the arena allocator, the message wire with
shared tensors, and the framing of the channel."""

from __future__ import annotations

import itertools
import json
import struct
from collections.abc import Iterator
from typing import Any

import msgspec
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from inferkit import InferenceRequest, InferenceResponse, RequestInput, ResponseOutput
from inferkit.codecs import decode_tensor
from inferkit.metrics import HistogramSample, ModelMetrics
from inferkit.parallel.channel import Channel
from inferkit.parallel.memory import ALIGN, Arena
from inferkit.parallel.messages import Call, MainMessage, Reply, Wire, WorkerMessage
from inferkit.parallel.metrics import MetricsDiff, apply_changes
from inferkit.transports.json_numbers import NumbersDecoder

# -- arena ----------------------------------------------------------------------------------


@pytest.fixture
def arena() -> Iterator[Arena]:
    arena = Arena.create(4096)
    yield arena
    arena.close()


def free_list(arena: Arena) -> list[tuple[int, int]]:
    return list(zip(arena._free_at, arena._free_size, strict=True))


# (allocation sizes, indexes of the allocations to free in order, expected free blocks)
ARENA_CASES = {
    "rounded to the alignment": ([1, 65], [], [(192, 4096 - 192)]),
    "free merges with the next": ([64, 64], [1], [(64, 4096 - 64)]),
    "free merges with the previous": ([64, 64, 64], [0, 1], [(0, 128), (192, 4096 - 192)]),
    "free merges both sides": ([64, 64, 64], [0, 2, 1], [(0, 4096)]),
    "a hole is kept": ([64, 64, 64], [1], [(64, 64), (192, 4096 - 192)]),
}


@pytest.mark.parametrize(("sizes", "frees", "expected"), ARENA_CASES.values(), ids=ARENA_CASES)
def test_arena_allocates_first_fit_and_merges_freed_blocks(
    arena: Arena, sizes: list[int], frees: list[int], expected: list[tuple[int, int]]
) -> None:
    offsets = [arena.alloc(size) for size in sizes]
    assert all(o is not None and o % ALIGN == 0 for o in offsets)
    for i in frees:
        arena.free(offsets[i])  # type: ignore[arg-type]
    assert free_list(arena) == expected


def test_arena_reuses_a_hole_first_and_says_when_nothing_fits(arena: Arena) -> None:
    a, b = arena.alloc(64), arena.alloc(4096 - 128)
    assert (a, b) == (0, 64)
    assert arena.alloc(128) is None
    arena.free(a)  # type: ignore[arg-type]
    assert arena.alloc(64) == 0
    assert arena.used == 4096 - 64


def test_arena_is_shared_through_its_file(arena: Arena) -> None:
    other = Arena(__import__("os").dup(arena.fd), arena.size)
    try:
        offset = arena.alloc(5)
        assert offset is not None
        arena.write(offset, b"hello")
        assert bytes(other.view(offset, 5)) == b"hello"
    finally:
        other.close()


# -- wire -----------------------------------------------------------------------------------


@pytest.fixture
def wires() -> Iterator[tuple[Wire, Wire, Arena]]:
    """(main side, worker side, the main-to-worker arena), threshold 1 KiB."""
    requests, responses = Arena.create(1 << 20), Arena.create(1 << 20)
    main = Wire(requests, responses, 1024, WorkerMessage)
    worker = Wire(responses, requests, 1024, MainMessage)
    yield main, worker, requests
    requests.close()
    responses.close()


def call(*data: Any, datatype: str = "FP64") -> Call:
    inputs = [
        RequestInput(
            name=f"in{i}",
            shape=[np.size(d) if not isinstance(d, bytes) else len(d)],
            datatype=datatype,
            data=d,
        )
        for i, d in enumerate(data)
    ]
    return Call(id=7, request=InferenceRequest(inputs=inputs))


def test_large_tensors_use_the_arena_until_freed(wires: tuple[Wire, Wire, Arena]) -> None:
    main, worker, arena = wires
    big, raw = np.arange(1000, dtype=np.float64), b"\x05" * 2000
    frame, blocks = main.encode(call(big, raw))
    assert len(blocks) == 2 and arena.used == 8000 + 2048
    assert len(frame) < 200  # only offsets travel in the message
    received = worker.decode(frame)
    assert worker.read_shared
    assert received.request.inputs[0].data.tolist() == big.tolist()
    assert received.request.inputs[1].data == raw
    main.free(blocks)
    assert arena.used == 0


def test_small_tensors_travel_inline(wires: tuple[Wire, Wire, Arena]) -> None:
    main, worker, arena = wires
    frame, blocks = main.encode(call(np.arange(3.0), b"\x01\x02"))
    assert blocks == [] and arena.used == 0
    received = worker.decode(frame)
    assert not worker.read_shared
    assert received.request.inputs[0].data.tolist() == [0.0, 1.0, 2.0]
    assert received.request.inputs[1].data == b"\x01\x02"


def test_a_tensor_larger_than_the_free_space_travels_inline(
    wires: tuple[Wire, Wire, Arena],
) -> None:
    main, worker, arena = wires
    huge = np.ones(200_000)  # 1.6 MB > the 1 MiB arena
    frame, blocks = main.encode(call(huge))
    assert blocks == [] and arena.used == 0
    assert worker.decode(frame).request.inputs[0].data.sum() == 200_000


def test_shared_false_sends_everything_inline(wires: tuple[Wire, Wire, Arena]) -> None:
    main, worker, _ = wires
    frame, blocks = main.encode(call(np.ones(1000)), shared=False)
    assert blocks == []
    assert worker.decode(frame).request.inputs[0].data.sum() == 1000


def test_a_failed_encoding_frees_what_it_allocated(wires: tuple[Wire, Wire, Arena]) -> None:
    main, _, arena = wires
    structured = np.zeros(2, dtype=[("a", "i4"), ("b", "f8")])
    with pytest.raises(TypeError) as info:
        main.encode(call(np.ones(1000), structured))
    assert str(info.value) == (
        "Cannot send arrays of dtype [('a', '<i4'), ('b', '<f8')] to a worker"
    )
    assert arena.used == 0


def test_the_caller_request_is_not_modified(wires: tuple[Wire, Wire, Arena]) -> None:
    main, _, _ = wires
    message = call(b"\x00" * 4096)
    main.encode(message)
    assert message.request.inputs[0].data == b"\x00" * 4096


def test_replies_carry_numpy_scalars_and_object_arrays(wires: tuple[Wire, Wire, Arena]) -> None:
    main, worker, _ = wires
    response = InferenceResponse(
        model_name="m",
        parameters={"score": np.float32(0.5)},
        outputs=[
            ResponseOutput(
                name="s", shape=[2], datatype="BYTES", data=np.array(["a", "b"], dtype=object)
            ),
            ResponseOutput(name="u", shape=[2], datatype="BYTES", data=np.array(["xy", "z"])),
        ],
    )
    frame, _ = worker.encode(Reply(id=1, response=response))
    got = main.decode(frame).response
    assert got.parameters == {"score": 0.5}
    assert got.outputs[0].data.dtype == object and got.outputs[0].data.tolist() == ["a", "b"]
    assert got.outputs[1].data.dtype == np.dtype("<U2")
    assert got.outputs[1].data.tolist() == ["xy", "z"]


# -- channel framing ------------------------------------------------------------------------


def frames_of(chunks: list[bytes]) -> tuple[list[bytes], bool]:
    got: list[bytes] = []
    lost: list[bool] = []
    channel = Channel(lambda frame: got.append(bytes(frame)), lambda: lost.append(True))
    for chunk in chunks:
        channel.data_received(chunk)
    channel.connection_lost(None)
    return got, lost == [True]


@given(
    frames=st.lists(st.binary(max_size=300), max_size=8),
    cuts=st.lists(st.integers(min_value=0, max_value=3000), max_size=10),
)
def test_frames_survive_any_split_of_the_stream(frames: list[bytes], cuts: list[int]) -> None:
    stream = b"".join(struct.pack("<I", len(f)) + f for f in frames)
    points = sorted({0, len(stream), *(c for c in cuts if c < len(stream))})
    chunks = [stream[a:b] for a, b in itertools.pairwise(points)]
    assert frames_of(chunks) == (frames, True)


# -- custom metrics -------------------------------------------------------------------------


def test_metric_changes_carry_only_what_changed_and_add_up() -> None:
    worker, main = ModelMetrics("m", "v1"), ModelMetrics("m", "v1")
    diff = MetricsDiff(worker)
    hits = worker.counter("hits", "Hits", ["cache"])
    sizes = worker.histogram("sizes", "", buckets=[1, 10])
    level = worker.gauge("level")
    assert diff.changes() == []  # declared, nothing recorded yet
    hits.labels("a").inc(2)
    sizes.observe(0.5)
    sizes.observe(50)
    level.set(7)
    first = diff.changes()
    assert [(c.name, c.labels, c.value, c.counts) for c in first] == [
        ("hits", ["a"], 2.0, []),
        ("sizes", [], 0.0, [1, 0, 1]),
        ("level", [], 7.0, []),
    ]
    hits.labels("a").inc()
    second = diff.changes()
    assert [(c.name, c.value) for c in second] == [("hits", 1.0)]
    assert diff.changes() == []
    for changes in (first, second, first):  # a second worker sending the same: they add up
        apply_changes(main, changes)
    got = {family.name: dict(family.snapshot().samples) for family in main.families()}
    assert got["hits"] == {("m", "v1", "a"): 5.0}
    assert got["sizes"] == {("m", "v1"): HistogramSample((2, 2, 4), 101.0, 4)}
    assert got["level"] == {("m", "v1"): 7.0}


@pytest.mark.parametrize("datatype", ["FP16", "FP32", "FP64"])
def test_a_large_json_tensor_reaches_the_worker_through_shared_memory(
    wires: tuple[Wire, Wire, Arena], datatype: str
) -> None:
    # The REST fast path stores large JSON float arrays as float64 arrays
    # (inferkit/transports/json_numbers.py): sent as an array in the arena, not as a list, and
    # the worker's model decodes what it would have from the list.
    main, worker, _ = wires
    values = [i / 7 for i in range(1000)] + [-0.0, 1e-310]
    data = json.dumps(values)
    body = (
        f'{{"inputs":[{{"name":"x","shape":[{len(values)}],"datatype":"{datatype}",'
        f'"data":{data}}}]}}'
    ).encode()
    plain = msgspec.json.Decoder(InferenceRequest).decode
    request = NumbersDecoder(plain, min_bytes=1024).decode(body)
    assert request is not None and type(request.inputs[0].data) is np.ndarray
    frame, blocks = main.encode(Call(id=7, request=request))
    assert len(blocks) == 1 and len(frame) < 1024  # the numbers went through the arena
    got = worker.decode(frame).request.inputs[0]
    assert got.data.dtype == np.float64 and got.data.tolist() == values
    expected = decode_tensor(plain(body).inputs[0])
    array = decode_tensor(got)
    assert (array.dtype, array.tobytes()) == (expected.dtype, expected.tobytes())
    main.free(blocks)

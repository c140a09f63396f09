"""rows_of / join_key / join / split: requests into one batch request and the answer back."""

from __future__ import annotations

import struct
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from inferkit.batching.tensors import join, join_key, rows_of, split
from inferkit.codecs import decode_tensor
from inferkit.errors import InferenceFailed
from inferkit.types import (
    InferenceRequest,
    InferenceResponse,
    RequestInput,
    RequestOutput,
    ResponseOutput,
    encode_json,
)


def inp(
    data: Any,
    shape: list[int],
    datatype: str = "FP32",
    name: str = "x",
    parameters: dict[str, Any] | None = None,
) -> RequestInput:
    return RequestInput(name=name, shape=shape, datatype=datatype, parameters=parameters, data=data)


def req(
    *inputs: RequestInput,
    parameters: dict[str, Any] | None = None,
    outputs: list[RequestOutput] | None = None,
    id: str | None = None,
) -> InferenceRequest:
    return InferenceRequest(id=id, parameters=parameters, inputs=list(inputs), outputs=outputs)


def out(
    data: Any,
    shape: list[int],
    datatype: str = "FP32",
    name: str = "y",
    parameters: dict[str, Any] | None = None,
) -> ResponseOutput:
    return ResponseOutput(
        name=name, shape=shape, datatype=datatype, parameters=parameters, data=data
    )


def resp(*outputs: ResponseOutput, parameters: dict[str, Any] | None = None) -> InferenceResponse:
    return InferenceResponse(
        model_name="m", model_version="2", parameters=parameters, outputs=list(outputs)
    )


def values(data: Any) -> list[Any]:
    """A tensor's elements as a flat Python list, whatever its form."""
    return np.asarray(data, dtype=object).reshape(-1).tolist()


# --- rows_of ---

ROWS = [
    ([], None),
    ([inp([1], [])], None),  # a scalar has no rows to batch on
    ([inp([1, 2], [2]), inp([3], [])], None),
    ([inp([1, 2, 3], [3])], 3),
    ([inp([], [0, 4])], 0),
    ([inp([0] * 5, [5, 1, 1])], 5),
    ([inp([1, 2, 3], [3]), inp([0] * 6, [3, 2], "INT32", "z")], 3),
    ([inp([1, 2, 3], [3]), inp([1, 2], [2], name="z")], None),  # the inputs disagree
    ([inp([1, 2], [2]), inp([1, 2], [2], name="z"), inp([1], [1], name="w")], None),
]


@pytest.mark.parametrize(("inputs", "rows"), ROWS)
def test_rows_of(inputs: list[RequestInput], rows: int | None) -> None:
    assert rows_of(req(*inputs)) == rows


# --- join_key ---


def keyed(
    shape: list[int] | None = None,
    datatype: str = "FP32",
    name: str = "x",
    input_params: dict[str, Any] | None = None,
    params: dict[str, Any] | None = None,
    outputs: list[RequestOutput] | None = None,
    extra: list[RequestInput] | None = None,
) -> InferenceRequest:
    """A request; ``keyed()`` is the base every variant below differs from in one thing."""
    shape = [2, 3] if shape is None else shape
    if input_params is None:
        input_params = {"content_type": "np"}
    if params is None:
        params = {"content_type": "dict"}
    tensor = inp([0] * int(np.prod(shape)), shape, datatype, name, input_params)
    return req(tensor, *(extra or []), parameters=params, outputs=outputs)


def test_join_key_is_equal_for_requests_that_may_run_together() -> None:
    a = keyed()
    b = req(
        inp([9] * 15, [5, 3], "FP32", "x", {"content_type": "np", "other": 1}),
        parameters={"content_type": "dict", "headers": {"x-a": "1"}},
        id="b",
    )
    assert join_key(a) == join_key(b)
    assert hash(join_key(a)) == hash(join_key(b))


def test_join_key_is_equal_without_any_parameters() -> None:
    a = req(inp([1], [1]))
    b = req(inp([2, 3], [2], parameters={}), parameters={"headers": {"h": "v"}})
    assert join_key(a) == join_key(b)


VARIANTS = {
    "datatype": keyed(datatype="INT32"),
    "trailing shape": keyed(shape=[2, 4]),
    "trailing rank": keyed(shape=[2, 3, 1]),
    "input name": keyed(name="z"),
    "input content type": keyed(input_params={"content_type": "str"}),
    "no input content type": keyed(input_params={}),
    "request content type": keyed(params={"content_type": "pd"}),
    "no request content type": keyed(params={}),
    "outputs asked for": keyed(outputs=[RequestOutput(name="y")]),
    "no outputs asked for": keyed(outputs=[]),
    "another input": keyed(extra=[inp([0, 0], [2], name="w")]),
}


@pytest.mark.parametrize("other", list(VARIANTS.values()), ids=list(VARIANTS))
def test_join_key_differs_when_requests_may_not_join(other: InferenceRequest) -> None:
    assert join_key(keyed()) != join_key(other)


def test_join_key_differs_by_which_outputs_are_asked_for() -> None:
    y = keyed(outputs=[RequestOutput(name="y")])
    z = keyed(outputs=[RequestOutput(name="z")])
    yz = keyed(outputs=[RequestOutput(name="y"), RequestOutput(name="z")])
    assert len({join_key(y), join_key(z), join_key(yz)}) == 3


def test_join_key_follows_the_order_of_inputs() -> None:
    x, w = inp([0, 0], [2]), inp([0, 0], [2], name="w")
    assert join_key(req(x, w)) != join_key(req(w, x))


def test_join_key_is_hashable_with_an_unhashable_content_type() -> None:
    a = keyed(params={"content_type": {"kind": "a"}})
    same = keyed(params={"content_type": {"kind": "a"}})
    other = keyed(params={"content_type": {"kind": "b"}})
    assert hash(join_key(a)) == hash(join_key(same))
    assert join_key(a) == join_key(same)
    assert join_key(a) != join_key(other)


def test_join_key_differs_by_requested_output_content_type() -> None:
    # The content type picks the output's codec, and a batch keeps one request's outputs.
    as_str = keyed(outputs=[RequestOutput(name="y", parameters={"content_type": "str"})])
    as_np = keyed(outputs=[RequestOutput(name="y", parameters={"content_type": "np"})])
    assert join_key(as_str) != join_key(as_np)


# --- join ---


def test_join_of_one_request_is_that_request() -> None:
    only = req(inp([[1, 2]], [1, 2]), parameters={"a": 1}, id="only")
    assert join([only]) is only


def test_join_of_flat_lists_stays_a_list_in_order() -> None:
    joined = join([req(inp([1, 2], [2])), req(inp([3, 4, 5], [3])), req(inp([6], [1]))])
    [x] = joined.inputs
    assert type(x.data) is list
    assert x.data == [1, 2, 3, 4, 5, 6]
    assert x.shape == [6]
    assert (x.name, x.datatype) == ("x", "FP32")


def test_join_of_requests_with_several_rows_of_several_values() -> None:
    joined = join([req(inp([1, 2, 3, 4], [2, 2])), req(inp([5, 6], [1, 2]))])
    [x] = joined.inputs
    assert x.shape == [3, 2]
    assert x.data == [1, 2, 3, 4, 5, 6]


def test_join_joins_every_input_by_position() -> None:
    joined = join(
        [
            req(inp([1], [1]), inp([10, 11], [1, 2], "INT32", "z")),
            req(inp([2, 3], [2]), inp([12, 13, 14, 15], [2, 2], "INT32", "z")),
        ]
    )
    x, z = joined.inputs
    assert (x.name, x.shape, x.datatype, x.data) == ("x", [3], "FP32", [1, 2, 3])
    assert (z.name, z.shape, z.datatype, z.data) == ("z", [3, 2], "INT32", [10, 11, 12, 13, 14, 15])


def test_join_leaves_the_requests_as_they_were() -> None:
    a, b = req(inp([1, 2], [2])), req(inp([3], [1]))
    join([a, b])
    assert (a.inputs[0].shape, a.inputs[0].data) == ([2], [1, 2])
    assert (b.inputs[0].shape, b.inputs[0].data) == ([1], [3])


# Data that is not a flat list on every request: concatenated by numpy, as the datatype.
NUMPY_JOINS = [
    pytest.param(
        [([[1, 2], [3, 4]], [2, 2]), ([[5, 6]], [1, 2])],
        "FP32",
        np.array([[1, 2], [3, 4], [5, 6]], np.float32),
        id="nested lists",
    ),
    pytest.param(
        [(np.array([1, 2], np.float32), [2]), (np.array([3.5], np.float32), [1])],
        "FP32",
        np.array([1, 2, 3.5], np.float32),
        id="arrays",
    ),
    pytest.param(
        [([1, 2, 3, 4], [2, 2]), (np.array([[5, 6]], np.int64), [1, 2])],
        "INT64",
        np.array([[1, 2], [3, 4], [5, 6]], np.int64),
        id="flat list then array",
    ),
    pytest.param(
        [(np.array([7], np.int32), [1]), ([8, 9], [2])],
        "INT32",
        np.array([7, 8, 9], np.int32),
        id="array then flat list",
    ),
    pytest.param(
        [(struct.pack("<2i", 1, -2), [2]), ([3], [1])],
        "INT32",
        np.array([1, -2, 3], np.int32),
        id="raw bytes",
    ),
]


@pytest.mark.parametrize(("parts", "datatype", "expected"), NUMPY_JOINS)
def test_join_of_other_data_concatenates_arrays(
    parts: list[tuple[Any, list[int]]], datatype: str, expected: Any
) -> None:
    joined = join([req(inp(data, shape, datatype)) for data, shape in parts])
    [x] = joined.inputs
    assert isinstance(x.data, np.ndarray)
    assert x.data.dtype == expected.dtype
    np.testing.assert_array_equal(x.data, expected)
    assert x.shape == list(expected.shape)
    assert x.datatype == datatype


def test_join_of_bytes_lists_keeps_each_item() -> None:
    joined = join([req(inp(["a", b"b"], [2], "BYTES")), req(inp(["c"], [1], "BYTES"))])
    [x] = joined.inputs
    assert x.data == ["a", b"b", "c"]
    assert x.shape == [3]
    assert x.datatype == "BYTES"


def test_join_of_nested_bytes_gives_an_array_of_bytes() -> None:
    joined = join(
        [
            req(inp([["a"], [b"b"]], [2, 1], "BYTES")),
            req(inp(np.array([[b"c"]], dtype=object), [1, 1], "BYTES")),
        ]
    )
    [x] = joined.inputs
    assert isinstance(x.data, np.ndarray)
    assert x.data.tolist() == [[b"a"], [b"b"], [b"c"]]
    assert x.shape == [3, 1]


def test_join_merges_request_parameters_later_wins() -> None:
    joined = join(
        [
            req(inp([1], [1]), parameters={"a": 1, "b": 1}),
            req(inp([2], [1])),
            req(inp([3], [1]), parameters={"b": 2, "c": 2}),
        ]
    )
    assert joined.parameters == {"a": 1, "b": 2, "c": 2}


def test_join_without_parameters_has_none() -> None:
    assert join([req(inp([1], [1])), req(inp([2], [1]))]).parameters is None


def test_join_keeps_the_first_requests_input_parameters() -> None:
    first = {"content_type": "np", "note": "first"}
    joined = join(
        [
            req(inp([1], [1], parameters=first)),
            req(inp([2], [1], parameters={"content_type": "np", "note": "second"})),
        ]
    )
    assert joined.inputs[0].parameters == first


def test_join_keeps_the_first_requests_outputs() -> None:
    first = [RequestOutput(name="y", parameters={"n": 1})]
    joined = join(
        [
            req(inp([1], [1]), outputs=first),
            req(inp([2], [1]), outputs=[RequestOutput(name="y", parameters={"n": 2})]),
        ]
    )
    assert joined.outputs == first


def test_join_asks_for_every_output_when_the_requests_do() -> None:
    assert join([req(inp([1], [1])), req(inp([2], [1]))]).outputs is None


# --- split ---


def test_split_gives_each_request_its_rows_in_order() -> None:
    batch = resp(out([10, 11, 12, 13, 14], [5], "INT32"))
    first, second = split(batch, [2, 3], "m")
    assert first.outputs == [out([10, 11], [2], "INT32")]
    assert second.outputs == [out([12, 13, 14], [3], "INT32")]


def test_split_cuts_every_output() -> None:
    batch = resp(out([1, 2, 3], [3]), out(["a", "b", "c"], [3, 1], "BYTES", "z"))
    parts = split(batch, [1, 1, 1], "m")
    assert [[o.name for o in p.outputs] for p in parts] == [["y", "z"]] * 3
    assert [p.outputs[0].data for p in parts] == [[1], [2], [3]]
    assert [p.outputs[1].data for p in parts] == [["a"], ["b"], ["c"]]
    assert [p.outputs[1].shape for p in parts] == [[1, 1]] * 3
    assert [p.outputs[1].datatype for p in parts] == ["BYTES"] * 3


def test_split_of_several_values_per_row() -> None:
    batch = resp(out([1, 2, 3, 4, 5, 6, 7, 8], [4, 2]))
    first, second = split(batch, [1, 3], "m")
    assert (first.outputs[0].shape, first.outputs[0].data) == ([1, 2], [1, 2])
    assert (second.outputs[0].shape, second.outputs[0].data) == ([3, 2], [3, 4, 5, 6, 7, 8])


def test_split_a_request_of_no_rows_gets_an_empty_part() -> None:
    batch = resp(out([1, 2], [1, 2]))
    empty, one = split(batch, [0, 1], "m")
    assert (empty.outputs[0].shape, empty.outputs[0].data) == ([0, 2], [])
    assert (one.outputs[0].shape, one.outputs[0].data) == ([1, 2], [1, 2])


def test_split_copies_output_parameters() -> None:
    params = {"content_type": "np", "n": 1}
    batch = resp(out([1, 2], [2], parameters=params))
    parts = split(batch, [1, 1], "m")
    for part in parts:
        assert part.outputs[0].parameters == params
        assert part.outputs[0].parameters is not params
    assert parts[0].outputs[0].parameters is not parts[1].outputs[0].parameters


def test_split_copies_response_parameters() -> None:
    params = {"content_type": "dict", "n": 1}
    parts = split(resp(out([1, 2], [2]), parameters=params), [1, 1], "m")
    for part in parts:
        assert part.parameters == params
        assert part.parameters is not params
    assert parts[0].parameters is not parts[1].parameters


def test_split_without_parameters_keeps_none() -> None:
    for part in split(resp(out([1, 2], [2])), [1, 1], "m"):
        assert part.parameters is None
        assert part.outputs[0].parameters is None


def test_split_keeps_the_model_name_and_version() -> None:
    for part in split(resp(out([1, 2], [2])), [1, 1], "other"):
        assert (part.model_name, part.model_version) == ("m", "2")


def test_split_for_one_request_is_the_response() -> None:
    batch = resp(out([1, 2, 3], [3]))
    [only] = split(batch, [3], "m")
    assert only is batch


def test_split_leaves_the_response_as_it_was() -> None:
    batch = resp(out([1, 2, 3], [3]))
    split(batch, [1, 2], "m")
    assert batch.outputs == [out([1, 2, 3], [3])]


def test_split_of_an_array_gives_arrays() -> None:
    data = np.arange(8, dtype=np.float32).reshape(4, 2)
    first, second = split(resp(out(data, [4, 2])), [3, 1], "m")
    a, b = first.outputs[0], second.outputs[0]
    assert isinstance(a.data, np.ndarray)
    assert isinstance(b.data, np.ndarray)
    np.testing.assert_array_equal(a.data, data[:3])
    np.testing.assert_array_equal(b.data, data[3:])
    assert (a.shape, b.shape) == ([3, 2], [1, 2])
    assert (a.datatype, b.datatype) == ("FP32", "FP32")


def test_split_of_a_flat_array_in_the_wrong_layout() -> None:
    # The data's own shape does not matter, only its size: the output's shape decides.
    first, second = split(resp(out(np.arange(6, dtype=np.int32), [3, 2], "INT32")), [2, 1], "m")
    np.testing.assert_array_equal(first.outputs[0].data, [[0, 1], [2, 3]])
    np.testing.assert_array_equal(second.outputs[0].data, [[4, 5]])


def test_split_of_nested_lists() -> None:
    first, second = split(resp(out([[1, 2], [3, 4], [5, 6]], [3, 2])), [1, 2], "m")
    np.testing.assert_array_equal(first.outputs[0].data, [[1, 2]])
    np.testing.assert_array_equal(second.outputs[0].data, [[3, 4], [5, 6]])
    assert (first.outputs[0].shape, second.outputs[0].shape) == ([1, 2], [2, 2])


def test_split_of_raw_bytes() -> None:
    raw = struct.pack("<3i", 1, 2, 3)
    first, second = split(resp(out(raw, [3], "INT32")), [2, 1], "m")
    np.testing.assert_array_equal(first.outputs[0].data, np.array([1, 2], np.int32))
    np.testing.assert_array_equal(second.outputs[0].data, np.array([3], np.int32))


def test_split_of_a_bytes_array() -> None:
    data = np.array([b"a", b"bc", b""], dtype=object)
    first, second = split(resp(out(data, [3], "BYTES")), [1, 2], "m")
    assert first.outputs[0].data.tolist() == [b"a"]
    assert second.outputs[0].data.tolist() == [b"bc", b""]


@pytest.mark.parametrize(
    ("output", "rows", "message"),
    [
        pytest.param(
            out([1, 2, 3, 4], [4], name="scores"),
            [2, 3],
            "Model 'm' answered a batch of 5 rows with output 'scores' of shape [4]: "
            "outputs of a batching model need one row per input row",
            id="fewer rows",
        ),
        pytest.param(
            out([0] * 12, [6, 2], name="scores"),
            [2, 3],
            "Model 'm' answered a batch of 5 rows with output 'scores' of shape [6, 2]: "
            "outputs of a batching model need one row per input row",
            id="more rows",
        ),
        pytest.param(
            out([7], [], name="total"),
            [1, 1],
            "Model 'm' answered a batch of 2 rows with output 'total' of shape []: "
            "outputs of a batching model need one row per input row",
            id="scalar",
        ),
    ],
)
def test_split_refuses_an_output_without_a_row_per_input_row(
    output: ResponseOutput, rows: list[int], message: str
) -> None:
    with pytest.raises(InferenceFailed) as info:
        split(resp(out([0] * sum(rows), [sum(rows)], name="fine"), output), rows, "m")
    assert str(info.value) == message


@pytest.mark.parametrize(
    "data",
    [
        pytest.param([1, 2, 3], id="short flat list"),
        pytest.param([1, 2, 3, 4, 5], id="long flat list"),
        pytest.param([[1, 2], [3]], id="ragged nested list"),
        pytest.param([[1], [2], [3]], id="nested list of too few"),
        pytest.param(np.zeros(3, np.float32), id="small array"),
        pytest.param(b"\x00" * 12, id="short raw bytes"),
        pytest.param(None, id="no data"),
        pytest.param("1234", id="a string"),
    ],
)
def test_split_refuses_data_that_does_not_match_the_shape(data: Any) -> None:
    with pytest.raises(InferenceFailed) as info:
        split(resp(out(data, [4], name="scores")), [1, 3], "m")
    assert str(info.value) == (
        "Model 'm' answered output 'scores' with data that does not match its shape [4]"
    )


# --- round trip: join, a model that echoes its inputs, split ---

DATATYPES = ["INT32", "FP32", "BYTES"]
ELEMENTS = {
    "INT32": st.integers(-(2**31), 2**31 - 1),
    "FP32": st.floats(width=32, allow_nan=False, allow_infinity=False),
    "BYTES": st.text(max_size=4),
}
DTYPES = {"INT32": np.int32, "FP32": np.float32, "BYTES": object}


def nest(flat: list[Any], shape: list[int]) -> Any:
    if len(shape) <= 1:
        return list(flat)
    size = len(flat) // shape[0] if shape[0] else 0
    return [nest(flat[i * size : (i + 1) * size], shape[1:]) for i in range(shape[0])]


def as_form(flat: list[Any], shape: list[int], datatype: str, form: str) -> Any:
    if form == "flat":
        return flat
    if form == "nested":
        return nest(flat, shape)
    array = np.empty(len(flat), DTYPES[datatype])
    array[:] = [x.encode() for x in flat] if datatype == "BYTES" else flat
    return array.reshape(shape)


@st.composite
def batches(draw: Any) -> tuple[str, list[InferenceRequest]]:
    datatype = draw(st.sampled_from(DATATYPES))
    trailing = draw(st.lists(st.integers(1, 3), max_size=2))
    size = int(np.prod(trailing))
    requests = []
    for index, rows in enumerate(draw(st.lists(st.integers(0, 4), min_size=1, max_size=5))):
        shape = [rows, *trailing]
        flat = draw(st.lists(ELEMENTS[datatype], min_size=rows * size, max_size=rows * size))
        form = draw(st.sampled_from(["flat", "flat", "nested", "array"]))
        x = inp(as_form(flat, shape, datatype, form), shape, datatype)
        tag = inp([index] * rows, [rows], "INT32", "tag")  # which request a row came from
        requests.append(req(x, tag))
    return datatype, requests


def flat(data: Any) -> bool:
    return type(data) is list and all(type(item) is not list for item in data)


def echo(request: InferenceRequest) -> InferenceResponse:
    outputs = [out(t.data, list(t.shape), t.datatype, t.name, t.parameters) for t in request.inputs]
    return InferenceResponse(model_name="echo", outputs=outputs)


@settings(max_examples=200, deadline=None)
@given(batches())
def test_join_echo_split_gives_each_request_its_own_data(
    batch: tuple[str, list[InferenceRequest]],
) -> None:
    datatype, requests = batch
    assert len({join_key(r) for r in requests}) == 1
    rows = [rows_of(r) for r in requests]
    assert None not in rows
    joined = join(requests)
    assert [t.shape[0] for t in joined.inputs] == [sum(r for r in rows if r is not None)] * 2
    answers = split(echo(joined), [r for r in rows if r is not None], "echo")
    assert len(answers) == len(requests)
    for index, (request, answer) in enumerate(zip(requests, answers, strict=True)):
        x, tag = answer.outputs
        sent = request.inputs[0]
        assert (x.name, x.shape, x.datatype) == ("x", sent.shape, datatype)
        assert values(decode_tensor(tag)) == [index] * sent.shape[0]
        got, expected = decode_tensor(x), decode_tensor(sent)
        assert got.shape == expected.shape
        assert got.tolist() == expected.tolist()
        if all(flat(r.inputs[0].data) for r in requests):
            assert x.data == sent.data  # flat lists all the way: the very same items back


def test_large_json_number_arrays_join_as_the_lists_would() -> None:
    # The REST transport stores large JSON float arrays as float64 arrays, whatever the
    # datatype (inferkit/transports/json_numbers.py): joined, the model gets the very array a
    # batch of the same lists gives, and `data` holds the clients' floats (not cast).
    a, b = [0.1, 2.5, -0.0], [1e-40, 3.0, 7.1]
    for datatype in ("FP16", "FP32", "FP64"):
        arrays = [inp(np.array(v), [1, 3], datatype) for v in (a, b)]
        batch = join([req(t) for t in arrays]).inputs[0]
        lists = join([req(inp(v, [1, 3], datatype)) for v in (a, b)]).inputs[0]
        assert batch.shape == lists.shape == [2, 3]
        assert batch.data.dtype == np.float64 and batch.data.tolist() == [a, b]
        assert encode_json(batch) == encode_json(lists)  # the same numbers, echoed
        got, expected = decode_tensor(batch), decode_tensor(lists)
        assert (got.dtype, got.tobytes()) == (expected.dtype, expected.tobytes())
        # With a list among them: arrays of the datatype, as any other mix of forms.
        mixed = join([req(arrays[0]), req(inp(b, [1, 3], datatype))]).inputs[0]
        assert decode_tensor(mixed).tobytes() == expected.tobytes()

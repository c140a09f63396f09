"""Answer checks: the full check before the load and the marker the load generator looks for."""

from __future__ import annotations

import pytest
from benchlib.answers import AnswerError, check_answer, data_marker

V2 = b'{"model_name":"sum","id":"x","outputs":[{"name":"total","data":%s}]}'


@pytest.mark.parametrize(
    ("data", "expected", "rtol"),
    [
        (b"[17.0]", (17.0,), 0.0),
        (b"[[1, 2], [3, 4]]", (1, 2, 3, 4), 0.0),
        (b"[500377.27]", (500377.2696,), 1e-4),
        (b"[8]", (8,), 0.0),
    ],
)
def test_check_answer_accepts(data: bytes, expected: tuple[float, ...], rtol: float) -> None:
    check_answer(V2 % data, expected, rtol)


@pytest.mark.parametrize(
    ("body", "expected", "message"),
    [
        (V2 % b"[16.0]", (17.0,), "value 0 is 16.0, expected 17.0"),
        (V2 % b"[17.0, 1.0]", (17.0,), "expected 1 values, got 2: "),
        (V2 % b'["17"]', (17.0,), "value 0 is '17', expected 17.0"),
        (b'{"error": "boom"}', (17.0,), 'not a V2 response with an output: {"error": "boom"}'),
        (b"<html>", (17.0,), "not a V2 response with an output: <html>"),
    ],
)
def test_check_answer_rejects(body: bytes, expected: tuple[float, ...], message: str) -> None:
    with pytest.raises(AnswerError) as caught:
        check_answer(body, expected, 0.0)
    assert str(caught.value).startswith(message)


@pytest.mark.parametrize(
    ("body", "marker"),
    [
        (V2 % b"[17.0]", b'"data":[17.0]'),
        (V2 % b"[[1, 2], [3]]", b'"data":[[1, 2], [3]]'),
        (b'{"outputs":[{"data" : [ 1 ],"shape":[1]}]}', b'"data" : [ 1 ]'),
    ],
)
def test_data_marker_is_the_whole_first_data_array(body: bytes, marker: bytes) -> None:
    assert data_marker(body) == marker


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (b'{"outputs":[]}', 'no data array in {"outputs":[]}'),
        (b'{"data":[1, [2]', 'unterminated data array in {"data":[1, [2]'),
    ],
)
def test_data_marker_refuses(body: bytes, message: str) -> None:
    with pytest.raises(AnswerError, match="^" + message.replace("[", r"\[") + "$"):
        data_marker(body)

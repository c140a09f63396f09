"""The REST fast path for large numeric tensors in JSON: their numbers parsed in C, once.

Decoding a JSON tensor of a million FP32 values the plain way builds a million Python floats
(msgspec) and then converts them to numpy: most of a large request's cost. Here the flat number
arrays of a body are cut out of the text, the rest (small) is decoded by the same msgspec decoder
as always, and each array is parsed by simdjson straight into float64s (correctly rounded, like
``float()``). The input's ``data`` is that float64 array, as the gRPC transport puts arrays
there: not cast to the datatype, so ``data.tolist()`` is the very list of Python floats msgspec
would have decoded (and :func:`~inferkit.types.encode_json` writes the same text), and the
codecs cast it to the tensor's dtype exactly as they cast those floats.

The fast path only answers when it can prove it gives the plain path's result, and returns
``None`` otherwise (the caller then decodes the body the plain way, errors included):

- an array is taken only after ``"data":`` with no ``[`` (nesting) and no ``"`` (strings) up to
  its ``]``; it is replaced by a random marker string, and the decoded request must hold each
  marker as the ``data`` of exactly one input (so it was that field, and not text inside a
  string or a ``parameters`` value, or a duplicate key);
- only FP16, FP32 and FP64 inputs whose numbers are all written as floats (with a ``.`` or an
  exponent) get an array: msgspec decodes ``1`` as the int ``1``, which a model reading
  ``data`` would see (and echo) as ``1.0`` from an array. Windows of the text are looked at for
  integers before parsing, and all of it after if a parsed value is integral. Other inputs get
  the list msgspec decodes from the same text (integer datatypes must stay exact and raise on
  overflow);
- simdjson must accept the array as numbers only: ``true``, ``null``, ``1e400``, ``NaN`` or
  malformed JSON send the whole body to the plain path.

simdjson (``pysimdjson``) comes with the ``rest`` extra; without it this path is off.
"""

from __future__ import annotations

import re
import secrets
from collections.abc import Callable
from typing import Any

import msgspec
import numpy as np

from ..types import InferenceRequest

__all__ = ["MIN_ARRAY_BYTES", "NumbersDecoder"]

#: Arrays shorter than this (in bytes of JSON) are left to msgspec: the fast path pays off
#: only past a few thousand numbers, and small requests must not pay for looking.
MIN_ARRAY_BYTES = 64 * 1024

# JSON whitespace is only these four characters.
_DATA_KEY = re.compile(rb'"data"[ \t\n\r]*:[ \t\n\r]*\[')

_FLOATS = frozenset({"FP16", "FP32", "FP64"})

# What is left of a JSON number array without digits, signs and whitespace, its brackets made
# commas: a comma between numbers, and each float's "." or exponent. An integer (1, -0) leaves
# nothing between its separators: ",,".
_NOT_FLOAT_MARKS = b"0123456789+- \t\n\r"
_SEPARATORS = bytes.maketrans(b"[]", b",,")
#: Before an array is parsed, this many windows of this many bytes spread over it are looked at
#: for integers: an array of integers, or with more than a few among its floats (as JavaScript
#: writes 0.0: 0), goes to msgspec straight away instead of being parsed twice.
_WINDOWS = 16
_WINDOW = 1024


class _NotNumbers(Exception):
    """simdjson refused an array: the whole body is left to the plain path."""


class NumbersDecoder:
    """Decodes request bodies with large flat number arrays; ``None`` when it cannot.

    ``decode`` is the plain decoder of the small remainder of the body. One instance per
    endpoint (simdjson's parser keeps buffers between calls; it is not shared across threads).
    """

    def __init__(self, decode: Callable[[bytes], Any], min_bytes: int = MIN_ARRAY_BYTES) -> None:
        self._decode = decode
        self._min_bytes = min_bytes
        try:
            import simdjson
        except ImportError:  # pragma: no cover - the rest extra installs it
            self._parser: Any = None
        else:
            self._parser = simdjson.Parser()

    @property
    def available(self) -> bool:
        """Whether simdjson is installed (else :meth:`decode` always answers ``None``)."""
        return self._parser is not None

    def decode(self, body: bytes) -> InferenceRequest | None:
        """The request, or ``None``: no large flat array, or one the plain path must judge."""
        if self._parser is None or len(body) < self._min_bytes:
            return None
        spans = _spans(body, self._min_bytes)
        if not spans:
            return None
        token = secrets.token_hex(16)
        pieces: list[bytes] = []
        markers: dict[str, int] = {}
        last = 0
        for k, (start, end) in enumerate(spans):
            marker = f"{token}-{k}"
            markers[marker] = k
            pieces += (body[last:start], b'"', marker.encode(), b'"')
            last = end
        pieces.append(body[last:])
        try:
            request: InferenceRequest = self._decode(b"".join(pieces))
        except Exception:  # the plain path gives the error (its message names the place)
            return None
        found = 0
        view = memoryview(body)
        for tensor in request.inputs:
            data = tensor.data
            if type(data) is not str or data not in markers:
                continue
            found += 1
            start, end = spans[markers.pop(data)]
            text = view[start:end]
            try:
                array = self._floats(text) if tensor.datatype in _FLOATS else None
            except _NotNumbers:
                return None
            if array is not None:
                tensor.data = array
                continue
            try:
                tensor.data = msgspec.json.decode(text)  # the plain decoder's list
            except msgspec.DecodeError:
                return None
        if markers or found != len(spans):
            return None  # a marker landed elsewhere (inside a string, parameters, ...)
        return request

    def _floats(self, text: memoryview) -> np.ndarray[Any, Any] | None:
        """The array's numbers as float64s; ``None`` if one is written as an integer (msgspec
        decodes it as an int, which a model echoing ``data`` would write back as such)."""
        if _sampled_integers(text):
            return None
        try:
            buffer = self._parser.parse(text).as_buffer(of_type="d")
        # Not JSON, or not all numbers (true, 1e400...); RuntimeError: the parser is still in
        # use (it never should be: nothing of a parse is kept but the copied buffer).
        except (ValueError, TypeError, RuntimeError):
            raise _NotNumbers from None
        # Writable, and the input's own: as a list converted by the codecs would be.
        array = np.frombuffer(buffer, np.float64)
        # Only an integral value can be written as an integer: the text is read again (a pass
        # over all of it) only if there is one.
        if np.any(np.trunc(array) == array) and _has_integers(bytes(text)):
            return None
        return array


def _sampled_integers(text: memoryview) -> bool:
    """Whether a few windows spread over a JSON number array show a number written as an
    integer (``False`` says nothing about the rest)."""
    step = max(len(text) // _WINDOWS, _WINDOW)
    for start in range(0, len(text), step):
        window = bytes(text[start : start + _WINDOW])
        first = window.find(b",") if start else 0  # whole numbers only: comma to comma
        last = window.rfind(b",")
        if first < last and _has_integers(window[first : last + 1]):
            return True
    return False


def _has_integers(text: bytes) -> bool:
    """Whether a JSON number array (or a part of it from comma to comma) has a number written
    as an integer (``1``, ``-0``), not as a float (``1.0``, ``1e3``)."""
    return b",," in text.translate(_SEPARATORS, _NOT_FLOAT_MARKS)


def _spans(body: bytes, min_bytes: int) -> list[tuple[int, int]]:
    """Where the large flat arrays following a ``"data":`` key are: [start, end) of each."""
    spans: list[tuple[int, int]] = []
    pos = 0
    while True:
        match = _DATA_KEY.search(body, pos)
        if match is None:
            return spans
        start = match.end() - 1
        end = body.find(b"]", start)
        if end < 0:
            return spans
        end += 1
        pos = end
        if (
            end - start >= min_bytes
            and body.find(b"[", start + 1, end) < 0
            and body.find(b'"', start, end) < 0
        ):
            spans.append((start, end))

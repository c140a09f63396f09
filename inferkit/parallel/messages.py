"""The messages between the main process and a worker, and how tensors travel in them.

Every message is a small tagged msgspec Struct encoded as msgpack (array-like, so field names
are not repeated on the wire). Requests and responses are the V2 Structs themselves; their
tensor ``data`` travels by kind:

* JSON lists stay lists (msgpack encodes them in C, and the model sees what it would see
  in-process);
* numeric numpy arrays and raw ``bytes`` of at least ``threshold`` bytes are copied into the
  sender's shared :class:`~inferkit.parallel.memory.Arena` and only ``(dtype, shape, offset,
  nbytes)`` is sent; smaller ones go inline as an msgpack extension holding their bytes;
* ``BYTES`` (object) arrays go inline as a list of their elements.

The receiver copies shared blocks out as soon as it decodes the message: the sender frees its
blocks when the work they belong to is over, and the arrays a model holds stay valid however
long it keeps them. Nothing is pickled.
"""

from __future__ import annotations

import struct
from typing import Any

import msgspec
import numpy as np

from ..types import InferenceRequest, InferenceResponse, MetadataModelResponse
from .memory import Arena
from .metrics import MetricChange

__all__ = [
    "Call",
    "Cancel",
    "Close",
    "Done",
    "Failure",
    "Item",
    "LoadFailed",
    "MainMessage",
    "Metrics",
    "Open",
    "Push",
    "Ready",
    "Release",
    "Reply",
    "Stop",
    "Wire",
    "WorkerMessage",
]


class _Message(msgspec.Struct, tag=True, array_like=True, gc=False):
    pass


# -- main process -> worker ----------------------------------------------------------------


class Call(_Message):
    """Run ``predict`` on a request."""

    id: int
    request: InferenceRequest


class Cancel(_Message):
    """The caller gave up on a call (e.g. the inference timeout): cancel its task."""

    id: int


class Release(_Message):
    """The main process has copied a reply's shared blocks: the worker may free them."""

    id: int


class Open(_Message):
    """Start a ``predict_stream`` whose requests follow as :class:`Push` messages."""

    id: int


class Push(_Message):
    """One request of a stream."""

    id: int
    request: InferenceRequest


class Close(_Message):
    """A stream has no more requests."""

    id: int


class Stop(_Message):
    """Unload the model and exit."""


MainMessage = Call | Cancel | Release | Open | Push | Close | Stop


# -- worker -> main process ----------------------------------------------------------------


class Ready(_Message):
    """The worker loaded its model (always the first message of a healthy worker)."""

    pid: int
    metadata: MetadataModelResponse
    #: Whether the model has its own ``predict_stream`` (else streams are answered with one
    #: ``predict`` per request, by the main process).
    streams: bool = False
    #: The model's custom REST handlers (``"POST /path"``), which workers cannot serve.
    handlers: list[str] = msgspec.field(default_factory=list)


class LoadFailed(_Message):
    """The worker could not import, build or load its model; the process exits next."""

    reason: str


class Reply(_Message):
    """The response of a :class:`Call`."""

    id: int
    response: InferenceResponse


class Failure(_Message):
    """A call or stream failed with an :mod:`inferkit.errors` class (by name) and message."""

    id: int
    error: str
    message: str
    where: str | None = None


class Item(_Message):
    """One response of a stream."""

    id: int
    response: InferenceResponse


class Done(_Message):
    """A stream ended normally."""

    id: int


class Metrics(_Message):
    """Changes of the model's custom metrics, sent ahead of the answer that follows."""

    changes: list[MetricChange]


WorkerMessage = Ready | LoadFailed | Reply | Failure | Item | Done | Metrics

# msgpack extension codes for tensor data.
_INLINE = 1  # numeric array: u16 header length, msgpack (dtype, shape), raw bytes
_SHARED = 2  # numeric array in the arena: msgpack (dtype, shape, offset, nbytes)
_OBJECTS = 3  # BYTES/str array: msgpack (dtype, shape, elements)
_SHARED_RAW = 4  # raw bytes in the arena: msgpack (offset, nbytes)

_U16 = struct.Struct("<H")
# numpy kinds whose elements are plain fixed-size bytes (bool, ints, floats, complex, dates).
_RAW_KINDS = frozenset("biufcmM")


class _Raw:
    """Marks raw tensor bytes large enough for the arena (msgpack would inline plain bytes)."""

    __slots__ = ("data",)

    def __init__(self, data: bytes | bytearray | memoryview) -> None:
        self.data = data


class Wire:
    """Encodes messages for one direction of a channel and decodes the other direction.

    ``out`` is the arena this side writes (None: everything inline); ``into`` the one it
    reads. :meth:`encode` returns the blocks it allocated, for the caller to free when the
    receiver is done with them; after :meth:`decode`, ``read_shared`` says whether the message
    used the sender's blocks (so the sender can be told to free them).
    """

    def __init__(self, out: Arena | None, into: Arena | None, threshold: int, decodes: Any) -> None:
        self._out = out
        self._into = into
        self._threshold = threshold
        self._blocks: list[int] = []
        self._shared = False
        self.read_shared = False
        self._encoder = msgspec.msgpack.Encoder(enc_hook=self._enc_hook)
        self._decoder = msgspec.msgpack.Decoder(decodes, ext_hook=self._ext_hook)

    def encode(self, message: Any, shared: bool = True) -> tuple[bytes, list[int]]:
        """The encoded message and the arena blocks it uses (``shared=False``: none)."""
        self._blocks = []
        self._shared = shared and self._out is not None
        if self._shared:
            message = _mark_raw(message, self._threshold)
        try:
            return self._encoder.encode(message), self._blocks
        except BaseException:
            self.free(self._blocks)
            raise

    def decode(self, frame: bytes | memoryview) -> Any:
        """One message, with shared tensors already copied out of the arena."""
        self.read_shared = False
        return self._decoder.decode(frame)

    def free(self, blocks: list[int]) -> None:
        """Free blocks returned by :meth:`encode`."""
        assert self._out is not None or not blocks
        for offset in blocks:
            self._out.free(offset)  # type: ignore[union-attr]

    def _enc_hook(self, obj: Any) -> Any:
        if isinstance(obj, np.ndarray):
            return self._encode_array(obj)
        if isinstance(obj, _Raw):
            nbytes = _nbytes(obj.data)
            offset = self._place(obj.data, nbytes)
            if offset is None:
                return bytes(obj.data)
            return msgspec.msgpack.Ext(_SHARED_RAW, _PLAIN.encode((offset, nbytes)))
        if isinstance(obj, np.generic):
            return obj.item()
        raise TypeError(f"Cannot send objects of type {type(obj).__name__} to a worker")

    def _encode_array(self, array: np.ndarray[Any, Any]) -> msgspec.msgpack.Ext:
        dtype, shape = array.dtype, list(array.shape)
        if dtype.kind not in _RAW_KINDS:
            if dtype.kind not in "OSU":
                raise TypeError(f"Cannot send arrays of dtype {dtype} to a worker")
            elements = array.reshape(-1).tolist()
            return msgspec.msgpack.Ext(_OBJECTS, _PLAIN.encode((dtype.str, shape, elements)))
        flat = np.ascontiguousarray(array).reshape(-1).view(np.uint8)
        offset = self._place(flat, flat.nbytes) if self._shared else None
        if offset is not None:
            shared = (dtype.str, shape, offset, flat.nbytes)
            return msgspec.msgpack.Ext(_SHARED, _PLAIN.encode(shared))
        header = _PLAIN.encode((dtype.str, shape))
        payload = b"".join((_U16.pack(len(header)), header, flat.data))
        return msgspec.msgpack.Ext(_INLINE, payload)

    def _place(self, data: Any, nbytes: int) -> int | None:
        if not self._shared or nbytes < self._threshold:
            return None
        assert self._out is not None
        offset = self._out.alloc(nbytes)
        if offset is not None:
            self._out.write(offset, data)
            self._blocks.append(offset)
        return offset

    def _ext_hook(self, code: int, data: memoryview) -> Any:
        if code == _INLINE:
            (size,) = _U16.unpack_from(data)
            dtype, shape = _PLAIN_DECODER.decode(data[2 : 2 + size])
            return np.frombuffer(data[2 + size :], np.dtype(dtype)).reshape(shape).copy()
        if code == _SHARED:
            dtype, shape, offset, nbytes = _PLAIN_DECODER.decode(data)
            view = self._view(offset, nbytes)
            return np.frombuffer(view, np.dtype(dtype)).reshape(shape).copy()
        if code == _OBJECTS:
            dtype, shape, elements = _PLAIN_DECODER.decode(data)
            if dtype != "|O":
                return np.array(elements, dtype=np.dtype(dtype)).reshape(shape)
            array = np.empty(len(elements), dtype=object)
            array[:] = elements
            return array.reshape(shape)
        if code == _SHARED_RAW:
            offset, nbytes = _PLAIN_DECODER.decode(data)
            return bytes(self._view(offset, nbytes))
        raise ValueError(f"Unknown msgpack extension {code}")

    def _view(self, offset: int, nbytes: int) -> memoryview:
        if self._into is None:
            raise ValueError("Shared tensor received without a shared arena")
        self.read_shared = True
        return self._into.view(offset, nbytes)


_PLAIN = msgspec.msgpack.Encoder()
_PLAIN_DECODER: msgspec.msgpack.Decoder[Any] = msgspec.msgpack.Decoder()
_RAW_TYPES = (bytes, bytearray, memoryview)


def _mark_raw(message: Any, threshold: int) -> Any:
    """A shallow copy of a Call/Reply whose large raw ``bytes`` tensors are marked for the arena.

    msgpack writes ``bytes`` natively without asking the hook, so large ones are wrapped first.
    The caller's request or response is left untouched.
    """
    if isinstance(message, Call):
        inputs = _marked(message.request.inputs, threshold)
        if inputs is not None:
            request = msgspec.structs.replace(message.request, inputs=inputs)
            return Call(id=message.id, request=request)
    elif isinstance(message, Reply):
        outputs = _marked(message.response.outputs, threshold)
        if outputs is not None:
            response = msgspec.structs.replace(message.response, outputs=outputs)
            return Reply(id=message.id, response=response)
    return message


def _marked(tensors: list[Any], threshold: int) -> list[Any] | None:
    if not any(_large_raw(t.data, threshold) for t in tensors):
        return None
    return [
        msgspec.structs.replace(t, data=_Raw(t.data)) if _large_raw(t.data, threshold) else t
        for t in tensors
    ]


def _large_raw(data: Any, threshold: int) -> bool:
    return isinstance(data, _RAW_TYPES) and _nbytes(data) >= threshold


def _nbytes(data: bytes | bytearray | memoryview) -> int:
    return data.nbytes if isinstance(data, memoryview) else len(data)

"""Events the core sends to listeners (``Server.add_listener``).

Frozen Structs, in the spirit of grpclib's ``listen``: metrics, statistics and logs are built by
listening, so the core never imports a metrics library and keeps no collectors of its own.
Don't subclass these; listeners dispatch on the exact type.
"""

from __future__ import annotations

from collections.abc import Callable

import msgspec

__all__ = [
    "BatchFinished",
    "Event",
    "InferenceFinished",
    "Listener",
    "ModelFailed",
    "ModelLoaded",
    "ModelUnloaded",
]


class InferenceFinished(msgspec.Struct, frozen=True, kw_only=True, gc=False):
    """One inference ended, successfully or not: the outcome record of the request pipeline.

    One record per unary call (REST ``infer``, gRPC ``ModelInfer``, ``Server.infer``), per
    message of a stream answered request by request, and per stream of a model with its own
    ``predict_stream``. The access log, metrics, statistics and tracing are all built from it,
    so every transport reports the same facts.
    """

    model: str
    #: The resolved version ("" for an unversioned model), never ``None``.
    version: str
    #: Seconds from the call to the answer, including reading, validation and encoding.
    duration_s: float
    #: Seconds spent inside the model's ``predict`` (or its ``predict_stream``).
    compute_s: float
    ok: bool
    #: The error ``code`` when ``ok`` is false ("INTERNAL" for an unexpected exception,
    #: "CANCELLED" when the client went away).
    code: str = ""
    #: Whether the model (version) was found; a call to an unknown model has a record too
    #: (for the access log and tracing), which statistics and model metrics skip.
    found: bool = True
    #: Batch size along the first dimension of the first input (1 when unknown); for a
    #: stream, the number of requests it carried.
    batch_size: int = 1
    #: The transport that carried the call ("rest", "grpc"), "" for a direct ``Server`` call.
    transport: str = ""
    #: The route template or RPC (``/v2/models/{name}/infer``), never a raw path.
    route: str = ""
    #: The path as requested (REST) or the RPC's path (gRPC), for the access log.
    path: str = ""
    #: The transport's status of the answer (``200``, ``404``, ``OK``, ``NOT_FOUND``), ""
    #: when nothing was answered (a direct call, or a client that went away).
    status: str = ""
    #: The request ``id`` (the generated one when the request had none).
    request_id: str = ""
    #: Whether the call was a stream (REST ``infer_stream``, gRPC ``ModelStreamInfer``).
    stream: bool = False
    #: Responses sent: 1 for a unary call, the number of responses of a stream.
    responses: int = 1
    #: Whether the request ran in a batch of a batching model (its execution is then the
    #: batch's :class:`BatchFinished`, and ``compute_s`` the batch's time).
    batched: bool = False
    #: Seconds the request waited for its batch to start (0 when not batched).
    queue_s: float = 0.0


class BatchFinished(msgspec.Struct, frozen=True, kw_only=True, gc=False):
    """A batching model ran one batch (see ``docs/batching.md``).

    Each request of the batch also ends with its own :class:`InferenceFinished` (``batched``
    true); this record is the model's execution: statistics count executions and batch sizes
    from it, metrics the ``inferkit_batch_size`` histogram.
    """

    model: str
    version: str
    #: Rows of the batch (every request's together).
    rows: int
    #: Requests in the batch.
    requests: int
    #: Seconds the batch's ``predict`` took (with joining and splitting).
    compute_s: float
    ok: bool


class ModelLoaded(msgspec.Struct, frozen=True, kw_only=True, gc=False):
    """A model version finished loading and is READY."""

    model: str
    version: str
    duration_s: float


class ModelUnloaded(msgspec.Struct, frozen=True, kw_only=True, gc=False):
    """A model version was unloaded and is UNAVAILABLE."""

    model: str
    version: str


class ModelFailed(msgspec.Struct, frozen=True, kw_only=True, gc=False):
    """A model version failed to import or load and is FAILED with ``reason``."""

    model: str
    version: str
    reason: str


Event = InferenceFinished | BatchFinished | ModelLoaded | ModelUnloaded | ModelFailed

#: A listener is a plain callable; it must be quick and must not raise (errors are logged).
Listener = Callable[[Event], None]

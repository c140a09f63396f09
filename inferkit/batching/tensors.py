"""Requests into one batch request, and a batch's response back into one response per request.

Inputs concatenate along the first dimension (the rows); every output of the batch's response
must have as many rows as the batch, and each request gets its own rows back. Flat JSON lists
stay lists (a model that reads ``input.data`` sees the same kind of data batched or not), and
so do the float64 arrays of large JSON floats (not cast to FP32 or FP16); any other form
(nested lists, numpy arrays, raw bytes) is concatenated as numpy arrays of the datatype.

Parameters follow MLServer's batcher: the batch request's ``parameters`` are its requests'
merged (a later request's value wins), each input keeps the first request's input parameters
(their ``content_type`` is part of the join key), and every response gets the batch response's
parameters and each output's.
"""

from __future__ import annotations

import math
from collections.abc import Hashable, Sequence
from typing import Any

import numpy as np

from ..codecs import decode_tensor
from ..errors import InferenceFailed
from ..types import InferenceRequest, InferenceResponse, RequestInput, ResponseOutput

__all__ = ["join", "join_key", "rows_of", "split"]


def rows_of(request: InferenceRequest) -> int | None:
    """The request's rows (the first dimension shared by every input), or ``None`` if it has
    none to batch on: no inputs, a scalar input, or inputs that disagree on the first dimension.
    """
    rows = None
    for tensor in request.inputs:
        if not tensor.shape:
            return None
        if rows is None:
            rows = tensor.shape[0]
        elif tensor.shape[0] != rows:
            return None
    return rows


def join_key(request: InferenceRequest) -> Hashable:
    """What must be equal for requests to run in one batch: each input's name, datatype,
    trailing shape and content type, the request's content type and the outputs asked for
    (with their content types, which pick the codec that encodes them)."""
    params = request.parameters or {}
    inputs = tuple(
        (t.name, t.datatype, tuple(t.shape[1:]), _content_type(t.parameters))
        for t in request.inputs
    )
    outputs = (
        None
        if request.outputs is None
        else tuple((o.name, _content_type(o.parameters)) for o in request.outputs)
    )
    return inputs, _content_type(params), outputs


def _content_type(params: dict[str, Any] | None) -> Any:
    value = params.get("content_type") if params else None
    return value if isinstance(value, Hashable) else repr(value)


def join(requests: Sequence[InferenceRequest]) -> InferenceRequest:
    """One request holding every request's rows, in order (the requests share a join key)."""
    first = requests[0]
    if len(requests) == 1:
        return first
    parameters: dict[str, Any] = {}
    for request in requests:
        parameters.update(request.parameters or {})
    inputs = [
        _join_input([request.inputs[i] for request in requests]) for i in range(len(first.inputs))
    ]
    return InferenceRequest(
        parameters=parameters or None,
        inputs=inputs,
        outputs=first.outputs,
    )


def _join_input(tensors: list[RequestInput]) -> RequestInput:
    first = tensors[0]
    shape = [sum(t.shape[0] for t in tensors), *first.shape[1:]]
    data: Any
    if all(_flat_list(t.data) for t in tensors):
        data = [item for t in tensors for item in t.data]
    elif first.datatype in _NARROW_FLOATS and all(_client_floats(t) for t in tensors):
        # Large JSON floats as the REST transport keeps them (float64 whatever the datatype):
        # joined uncast, a model reading ``data`` gets the clients' numbers, as unbatched.
        data = np.concatenate([t.data.reshape(t.shape) for t in tensors])
    else:
        data = np.concatenate([decode_tensor(t) for t in tensors])
    return RequestInput(
        name=first.name,
        shape=shape,
        datatype=first.datatype,
        parameters=first.parameters,
        data=data,
    )


_NARROW_FLOATS = ("FP16", "FP32")


def _client_floats(tensor: RequestInput) -> bool:
    data = tensor.data
    return (
        type(data) is np.ndarray
        and data.dtype == np.float64
        and data.size == math.prod(tensor.shape)
    )


def _flat_list(data: Any) -> bool:
    return type(data) is list and (not data or type(data[0]) is not list)


def split(response: InferenceResponse, rows: Sequence[int], model: str) -> list[InferenceResponse]:
    """The batch's ``response`` cut into one response per request of ``rows`` rows each.

    Raises :class:`InferenceFailed` if an output does not have the batch's rows (a model that
    cannot batch, e.g. one that returns one value for the whole batch).
    """
    if len(rows) == 1:
        return [response]
    outputs = [_split_output(output, rows, model) for output in response.outputs]
    return [
        InferenceResponse(
            model_name=response.model_name,
            model_version=response.model_version,
            parameters=None if response.parameters is None else dict(response.parameters),
            outputs=[parts[i] for parts in outputs],
        )
        for i in range(len(rows))
    ]


def _split_output(output: ResponseOutput, rows: Sequence[int], model: str) -> list[ResponseOutput]:
    total = sum(rows)
    shape = output.shape
    if not shape or shape[0] != total:
        raise InferenceFailed(
            f"Model '{model}' answered a batch of {total} rows with output '{output.name}' "
            f"of shape {list(shape)}: outputs of a batching model need one row per input row"
        )
    row_size = math.prod(shape[1:])
    data: Any = output.data
    if not _flat_list(data) or len(data) != total * row_size:
        try:
            data = decode_tensor(output, f"$.outputs[{output.name}]")
        except Exception:
            raise InferenceFailed(
                f"Model '{model}' answered output '{output.name}' with data that does not "
                f"match its shape {list(shape)}"
            ) from None
    parts = []
    start = 0
    for count in rows:
        if isinstance(data, list):
            part: Any = data[start * row_size : (start + count) * row_size]
        else:
            part = data[start : start + count]
        start += count
        parts.append(
            ResponseOutput(
                name=output.name,
                shape=[count, *shape[1:]],
                datatype=output.datatype,
                parameters=None if output.parameters is None else dict(output.parameters),
                data=part,
            )
        )
    return parts

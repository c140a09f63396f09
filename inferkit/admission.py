"""Admission: what the core checks on every request and fills in on every response.

Inputs are checked against their own shape and datatype and against the model's declared
inputs; responses get the request's id and the model's name and version, and keep only the
requested outputs (V2 ``outputs``). :class:`Feed` does the same for the requests of a stream,
one at a time, as the model reads them.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import AsyncGenerator, AsyncIterable, AsyncIterator, Awaitable, Callable
from typing import TypeVar

from . import codecs as _codecs
from .errors import InferkitError, InvalidRequest, InvalidShape, OutputNotFound
from .pipeline import Call
from .types import InferenceRequest, InferenceResponse, MetadataTensor

__all__ = ["Feed", "batch_size", "check_inputs", "closing", "complete", "scheduling", "stamp"]

_T = TypeVar("_T")


def check_inputs(request: InferenceRequest, declared: list[MetadataTensor]) -> None:
    """Validate every input's tensor, then against the model's declared inputs, if any."""
    by_name = {tensor.name: tensor for tensor in declared}
    for i, tensor in enumerate(request.inputs):
        where = f"$.inputs[{i}]"
        _codecs.check_tensor(tensor, where)
        spec = by_name.get(tensor.name)
        if spec is None:
            continue
        if spec.datatype and spec.datatype != tensor.datatype:
            raise InvalidRequest(
                f"Expected datatype {spec.datatype} for input '{tensor.name}', "
                f"got {tensor.datatype}",
                where=f"{where}.datatype",
            )
        if spec.shape and not _shape_fits(spec.shape, tensor.shape):
            raise InvalidShape(
                f"Expected shape {spec.shape} for input '{tensor.name}', got {tensor.shape}",
                where=f"{where}.shape",
            )


def _shape_fits(spec: list[int], shape: list[int]) -> bool:
    return len(spec) == len(shape) and all(s in (-1, d) for s, d in zip(spec, shape, strict=True))


def complete(
    response: InferenceResponse,
    request: InferenceRequest,
    model: str,
    version: str,
    new_id: Callable[[], str],
) -> InferenceResponse:
    """Fill id (``new_id()`` when neither side has one), name and version, and keep only the
    requested outputs (V2 ``outputs``)."""
    response.id = request.id or response.id or new_id()
    response.model_name = model
    response.model_version = version or None
    if request.outputs:
        produced = {output.name: output for output in response.outputs}
        selected = []
        for i, wanted in enumerate(request.outputs):
            output = produced.get(wanted.name)
            if output is None:
                raise OutputNotFound(
                    f"Model '{model}' has no output '{wanted.name}'; it produced "
                    f"{sorted(produced)}",
                    where=f"$.outputs[{i}].name",
                )
            if wanted.parameters:
                output.parameters = {**(output.parameters or {}), **wanted.parameters}
            selected.append(output)
        response.outputs = selected
    return response


def batch_size(request: InferenceRequest) -> int:
    """The request's batch size: the first dimension of its first input (1 when unknown)."""
    if request.inputs and request.inputs[0].shape:
        return max(int(request.inputs[0].shape[0]), 1)
    return 1


def scheduling(request: InferenceRequest) -> tuple[float | None, int]:
    """Triton's scheduling parameters of a request: its ``timeout`` (given in microseconds,
    returned in seconds; ``None`` when absent or 0) and its ``priority`` (0 when absent).

    Raises :class:`InvalidRequest` unless each is a non-negative integer.
    """
    params = request.parameters
    if not params:
        return None, 0
    timeout = _natural(params, "timeout")
    return (timeout / 1e6 if timeout else None), _natural(params, "priority")


def _natural(params: dict[str, object], key: str) -> int:
    value = params.get(key, 0)
    if type(value) is not int or value < 0:
        raise InvalidRequest(
            f"Expected a non-negative integer for parameter '{key}', got {value!r}",
            where=f"$.parameters.{key}",
        )
    return value


def stamp(
    response: InferenceResponse,
    request: InferenceRequest | None,
    model: str,
    version: str,
    new_id: Callable[[], str],
) -> InferenceResponse:
    """Name a streamed response after the model, and give it its request's id if it has none."""
    response.model_name = model
    response.model_version = version or None
    response.id = response.id or (request.id if request else None) or new_id()
    return response


class Feed:
    """The requests of a stream as the model reads them: admitted one by one, and timed.

    ``refuse`` (if given) answers a request that fails admission, which is then skipped;
    without it, the error ends the stream.
    """

    def __init__(
        self,
        call: Call,
        admit: Callable[[InferenceRequest], None],
        requests: AsyncIterable[InferenceRequest],
        refuse: Callable[[InferkitError], Awaitable[None]] | None,
        new_id: Callable[[], str],
    ) -> None:
        self.call = call
        self.new_id = new_id
        #: Checks a request and readies it for the model; raises InferkitError.
        self.admit = admit
        self.source = requests
        self.refuse = refuse
        #: The last request handed to the model (its id goes on responses without one).
        self.latest: InferenceRequest | None = None
        #: Seconds spent waiting for the client's requests.
        self.waited_s = 0.0
        #: What reading the client's requests raised, if anything (not the model's error).
        self.error: BaseException | None = None
        call.batch_size = 0

    async def requests(self) -> AsyncGenerator[InferenceRequest, None]:
        """The admitted requests, as an async iterator (what ``predict_stream`` takes)."""
        requests = aiter(self.source)
        while True:
            started = time.perf_counter()
            try:
                request = await anext(requests)
            except StopAsyncIteration:
                return
            except BaseException as exc:
                self.error = exc
                raise
            finally:
                self.waited_s += time.perf_counter() - started
            try:
                self.admit(request)
            except InferkitError as exc:
                if self.refuse is None:
                    self.error = exc
                    raise
                await self.refuse(exc)
                continue
            # One id for all the responses to a request (the model may give its own).
            request.id = request.id or self.new_id()
            self.call.request_id = self.call.request_id or request.id
            self.call.batch_size += 1
            self.latest = request
            yield request


@contextlib.asynccontextmanager
async def closing(iterator: AsyncIterator[_T]) -> AsyncGenerator[AsyncIterator[_T], None]:
    """``iterator``, closed at the end of the block if it can be (an async generator can):
    a stream that ends early, or is cancelled, stops the model's iterator at once."""
    try:
        yield iterator
    finally:
        close = getattr(iterator, "aclose", None)
        if close is not None:
            await close()

"""``mlserver.MLModel``, ``mlserver.register`` and ``mlserver.log`` (see :mod:`inferkit.compat`).

MLServer's custom metrics are module functions: ``register(name, description)`` makes a
histogram and ``log(name=value)`` observes it, labelled with the model being served, which
MLServer finds in a context variable it sets around ``load`` and ``predict``. Here the same
functions record into the model's own :class:`~inferkit.metrics.ModelMetrics` (so they reach
the server's ``/metrics`` with the labels ``model`` and ``version``): :class:`MLModel` sets the
context variable around the ``load``, ``predict``, ``predict_stream`` and ``unload`` its
subclasses define. A context variable holds no state shared between servers: each call sees
only its own model.
"""

from __future__ import annotations

import functools
from collections.abc import AsyncIterator, Awaitable, Callable
from contextvars import ContextVar
from typing import Any

from ...metrics import Histogram
from ...model import Model

__all__ = ["MLModel", "log", "register"]

_CURRENT: ContextVar[Model] = ContextVar("inferkit_mlserver_model")

_WRAPPED = ("load", "predict", "unload")


class MLModel(Model):
    """:class:`inferkit.Model` for files written for MLServer: ``mlserver.log`` works inside
    ``load``, ``predict`` and ``unload`` (and anything they call or start)."""

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        for name in _WRAPPED:
            method = cls.__dict__.get(name)
            if callable(method) and not getattr(method, "_inferkit_in_context", False):
                setattr(cls, name, _in_context(method))
        stream = cls.__dict__.get("predict_stream")
        if callable(stream) and not getattr(stream, "_inferkit_in_context", False):
            cls.predict_stream = _stream_in_context(stream)  # type: ignore[method-assign]


def _in_context(method: Callable[..., Awaitable[Any]]) -> Callable[..., Awaitable[Any]]:
    @functools.wraps(method)
    async def in_context(self: Model, *args: Any, **kwargs: Any) -> Any:
        token = _CURRENT.set(self)
        try:
            return await method(self, *args, **kwargs)
        finally:
            _CURRENT.reset(token)

    in_context._inferkit_in_context = True  # type: ignore[attr-defined]
    return in_context


def _stream_in_context(
    method: Callable[..., AsyncIterator[Any]],
) -> Callable[..., AsyncIterator[Any]]:
    # Each step of the model's stream runs with the model in context; between steps the caller
    # runs without it (a generator has no context of its own, so set and reset stay per step).
    @functools.wraps(method)
    async def in_context(self: Model, *args: Any, **kwargs: Any) -> AsyncIterator[Any]:
        stream = method(self, *args, **kwargs)
        try:
            while True:
                token = _CURRENT.set(self)
                try:
                    item = await anext(stream)
                except StopAsyncIteration:
                    return
                finally:
                    _CURRENT.reset(token)
                yield item
        finally:
            aclose = getattr(stream, "aclose", None)
            if aclose is not None:
                await aclose()

    in_context._inferkit_in_context = True  # type: ignore[attr-defined]
    return in_context


def _model() -> Model:
    try:
        return _CURRENT.get()
    except LookupError:
        raise LookupError(
            "mlserver.log() and mlserver.register() work only inside a model's load(), "
            "predict(), predict_stream() or unload()"
        ) from None


def register(name: str, description: str) -> Histogram:
    """A histogram of the current model's custom metrics (made on first use)."""
    return _model().metrics.histogram(name, description)


def log(**metrics: float) -> None:
    """Observe each value in the current model's histogram of that name."""
    _model().metrics.log(**metrics)

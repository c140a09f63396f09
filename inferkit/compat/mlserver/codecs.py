"""``mlserver.codecs`` for model files (see :mod:`inferkit.compat`): inferkit's codecs, plus
MLServer's ``register_input_codec`` and ``register_request_codec`` decorators.

MLServer's decorators add a codec to a process-wide registry. inferkit has none: codecs belong
to a server (``Server(codecs=...)``). So the decorators only *declare* the codec, on the class,
and a model picks up the codecs declared in its own module (defined or imported there) when the
server gives it its registry (see :func:`inferkit.codecs.declared_codecs`).
"""

from __future__ import annotations

from typing import TypeVar

from ...codecs import *  # noqa: F403 - the whole of inferkit.codecs, as mlserver.codecs
from ...codecs import __all__ as _codecs_all
from ...codecs import declare_codec

__all__ = [*_codecs_all, "register_input_codec", "register_request_codec"]

_C = TypeVar("_C")


def register_input_codec(codec: _C) -> _C:
    """Declare an input codec for the models of the module that defines or imports it."""
    return declare_codec(codec, "input")


def register_request_codec(codec: _C) -> _C:
    """Declare a request codec for the models of the module that defines or imports it."""
    return declare_codec(codec, "request")

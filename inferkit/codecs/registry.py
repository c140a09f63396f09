"""Which codecs exist: a registry *instance* per server or model, never a module global.

MLServer keeps one process-wide registry filled by import-time decorators, so two servers in one
process share (and fight over) codecs. Here the built-ins are an immutable tuple and
:func:`default_codecs` hands out a fresh, independent registry each time.
"""

from __future__ import annotations

import sys
import types
import typing
from collections.abc import Iterable
from typing import Any, Union, get_args, get_origin

from .arrays import NumpyCodec, NumpyRequestCodec
from .base import InputCodec, RequestCodec
from .frames import PandasCodec
from .strings import Base64Codec, DatetimeCodec, StringCodec, StringRequestCodec

__all__ = [
    "BUILTIN_INPUT_CODECS",
    "BUILTIN_REQUEST_CODECS",
    "CodecRegistry",
    "InputCodecLike",
    "RequestCodecLike",
    "declare_codec",
    "declared_codecs",
    "default_codecs",
    "hint_key",
    "with_declared",
]

#: Attribute marking a codec declared with :func:`declare_codec` ("input" or "request").
DECLARED = "__inferkit_declared_codec__"

#: A codec class (or, as MLServer allows, an instance of one).
InputCodecLike = type[InputCodec] | InputCodec
RequestCodecLike = type[RequestCodec] | RequestCodec

#: The built-in codecs, in MLServer's order (the first match wins a lookup by value or by hint).
BUILTIN_INPUT_CODECS: tuple[type[InputCodec], ...] = (
    NumpyCodec,
    StringCodec,
    Base64Codec,
    DatetimeCodec,
)
BUILTIN_REQUEST_CODECS: tuple[type[RequestCodec], ...] = (
    NumpyRequestCodec,
    StringRequestCodec,
    PandasCodec,
)


class CodecRegistry:
    """Input and request codecs by content type, found by content type, value or annotation."""

    def __init__(
        self,
        input_codecs: Iterable[InputCodecLike] = (),
        request_codecs: Iterable[RequestCodecLike] = (),
    ) -> None:
        self._input: dict[str, InputCodecLike] = {}
        self._request: dict[str, RequestCodecLike] = {}
        self._revision = 0
        for codec in input_codecs:
            self.register_input_codec(codec)
        for request_codec in request_codecs:
            self.register_request_codec(request_codec)

    @property
    def revision(self) -> int:
        """Bumped on every registration, so callers may cache lookups until it changes."""
        return self._revision

    @property
    def input_codecs(self) -> tuple[InputCodecLike, ...]:
        """The input codecs, in registration order."""
        return tuple(self._input.values())

    @property
    def request_codecs(self) -> tuple[RequestCodecLike, ...]:
        """The request codecs, in registration order."""
        return tuple(self._request.values())

    def register_input_codec(self, codec: InputCodecLike) -> InputCodecLike:
        """Add (or replace, by content type) an input codec; returns it, so it can decorate."""
        self._input[_content_type(codec)] = codec
        self._revision += 1
        return codec

    def register_request_codec(self, codec: RequestCodecLike) -> RequestCodecLike:
        """Add (or replace, by content type) a request codec; returns it, so it can decorate."""
        self._request[_content_type(codec)] = codec
        self._revision += 1
        return codec

    def find_input_codec(
        self, content_type: str | None = None, payload: Any = None, type_hint: Any = None
    ) -> InputCodecLike | None:
        """The input codec for a content type, else for a value, else for an annotation."""
        return _find(self._input, content_type, payload, type_hint)

    def find_request_codec(
        self, content_type: str | None = None, payload: Any = None, type_hint: Any = None
    ) -> RequestCodecLike | None:
        """The request codec for a content type, else for a value, else for an annotation."""
        return _find(self._request, content_type, payload, type_hint)

    def copy(self) -> CodecRegistry:
        """An independent registry with the same codecs."""
        return CodecRegistry(self._input.values(), self._request.values())

    def __repr__(self) -> str:
        return f"CodecRegistry(inputs={list(self._input)}, requests={list(self._request)})"


def default_codecs() -> CodecRegistry:
    """A new registry holding the built-in codecs (every call returns a fresh one)."""
    return CodecRegistry(BUILTIN_INPUT_CODECS, BUILTIN_REQUEST_CODECS)


def as_registry(codecs: CodecRegistry | Iterable[Any] | None) -> CodecRegistry:
    """``codecs`` as a registry: as it is, or the built-ins plus the given codec classes
    (request codecs told from input codecs by their ``decode_request``)."""
    if isinstance(codecs, CodecRegistry):
        return codecs
    registry = default_codecs()
    for codec in codecs or ():
        if hasattr(codec, "decode_request"):
            registry.register_request_codec(codec)
        else:
            registry.register_input_codec(codec)
    return registry


_D = typing.TypeVar("_D")


def declare_codec(codec: _D, kind: typing.Literal["input", "request"]) -> _D:
    """Mark ``codec`` for the models of the module that defines or imports it; returns it.

    This is what MLServer's ``register_input_codec`` / ``register_request_codec`` decorators
    become: instead of adding the codec to a process-wide registry, it is recorded on the codec
    itself, and :func:`with_declared` adds it to a model's registry when the model gets one.
    A codec without a ``ContentType`` is left alone, as MLServer leaves it unregistered.
    """
    if getattr(codec, "ContentType", None):
        setattr(codec, DECLARED, kind)
    return codec


def declared_codecs(model_class: type) -> list[Any]:
    """Codecs declared (:func:`declare_codec`) in the modules of ``model_class`` and of its
    base classes, in module order; inferkit's own modules declare none."""
    found: dict[int, Any] = {}
    for cls in model_class.__mro__:
        module = sys.modules.get(cls.__module__)
        if module is None or cls.__module__.partition(".")[0] in ("inferkit", "builtins"):
            continue
        for value in list(vars(module).values()):
            # Only the codec that was declared, not a subclass inheriting the mark.
            if DECLARED in getattr(value, "__dict__", {}):
                found.setdefault(id(value), value)
    return list(found.values())


def with_declared(registry: CodecRegistry, model_class: type) -> CodecRegistry:
    """``registry``, or a copy of it with the codecs ``model_class``'s modules declare."""
    declared = declared_codecs(model_class)
    if not declared:
        return registry
    extended = registry.copy()
    for codec in declared:
        if getattr(codec, DECLARED) == "request":
            extended.register_request_codec(codec)
        else:
            extended.register_input_codec(codec)
    return extended


def _content_type(codec: InputCodecLike | RequestCodecLike) -> str:
    content_type = codec.ContentType
    if not content_type:
        raise ValueError(f"Codec {codec!r} has no ContentType")
    return content_type


_C = typing.TypeVar("_C", InputCodecLike, RequestCodecLike)


def _find(
    codecs: dict[str, _C], content_type: str | None, payload: Any, type_hint: Any
) -> _C | None:
    # MLServer's precedence: content type, then payload, then type hint (first match wins).
    if content_type:
        return codecs.get(content_type)
    if payload is not None:
        return next((c for c in codecs.values() if c.can_encode(payload)), None)
    if type_hint is not None:
        key = hint_key(type_hint)
        found = next((c for c in codecs.values() if hint_key(c.TypeHint) == key), None)
        if found is None and isinstance(key, tuple) and key[0] is not Union:
            # A parametrised class (`np.ndarray[Any, np.dtype[np.float64]]`) falls back to its
            # class; `list[int]` finds nothing, as no codec's hint is a bare `list`.
            return next((c for c in codecs.values() if hint_key(c.TypeHint) == key[0]), None)
        return found
    return None


def hint_key(hint: Any) -> Any:
    """A comparable form of an annotation: ``List[str]`` and ``list[str]`` are the same key.

    A dotted string (a codec's ``TypeHint`` for an optional library, ``"pandas.DataFrame"``)
    resolves to the type only if its module is already imported; otherwise it matches nothing
    but itself, which is right, since no annotation can name a type of an unimported module.
    """
    if isinstance(hint, str):
        module, _, name = hint.rpartition(".")
        loaded = sys.modules.get(module)
        return getattr(loaded, name, hint) if loaded is not None else hint
    origin = get_origin(hint)
    if origin is None:
        return hint
    args = tuple(hint_key(arg) for arg in get_args(hint))
    if origin is Union or origin is types.UnionType:
        return (Union, frozenset(args))
    return (origin, args)

"""``decode_args``: codecs chosen from ``predict``'s annotations (MLServer's ``SignatureCodec``).

::

    class Model(inferkit.Model):
        @decode_args
        async def predict(self, docs: list[str]) -> np.ndarray: ...

Each annotated parameter takes the request input of the same name, decoded by the input codec
whose ``TypeHint`` matches the annotation (``Optional[...]`` is unwrapped). Inputs no parameter
names go, together, to the parameter annotated with a request codec (e.g. ``pd.DataFrame``). The
return value (or each item of a returned tuple) is encoded as ``output-0``, ``output-1``, ...
"""

from __future__ import annotations

import functools
import inspect
import re
import types
import weakref
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any, Union, get_args, get_origin, get_type_hints

from ..errors import InferkitError, InvalidRequest
from ..types import InferenceRequest, InferenceResponse, RequestInput, ResponseOutput
from .base import DEFAULT_OUTPUT_PREFIX, relocate
from .registry import CodecRegistry, default_codecs

__all__ = ["PredictFunc", "SignatureCodec", "decode_args"]

#: What ``decode_args`` returns: an MLServer-style ``predict(self, request) -> response``.
PredictFunc = Callable[[Any, InferenceRequest], Coroutine[Any, Any, InferenceResponse]]

_Codec = tuple[Any, bool]  # (codec, is it an input codec?)
_INPUT_INDEX = re.compile(r"^\$\.inputs\[(\d+)\]")


class SignatureCodec:
    """Maps a ``predict`` signature onto requests and responses, using one registry's codecs."""

    def __init__(
        self,
        predict: Callable[..., Any],
        registry: CodecRegistry,
        hints: dict[str, Any] | None = None,
    ) -> None:
        hints = dict(_type_hints(predict) if hints is None else hints)
        self._output_hints = _as_hint_list(hints.pop("return", None))
        self._input_codecs = {
            name: _find_codec(registry, name, hint, is_input=True) for name, hint in hints.items()
        }
        self._output_codecs = [
            _find_codec(registry, None, hint, is_input=False) for hint in self._output_hints
        ]
        self._request_param = next(
            (name for name, (_, is_input) in self._input_codecs.items() if not is_input), None
        )
        self._required = _required_params(predict)

    def decode_request(self, request: InferenceRequest) -> dict[str, Any]:
        """The keyword arguments for ``predict``, decoded from ``request``."""
        kwargs: dict[str, Any] = {}
        extra: list[tuple[int, RequestInput]] = []
        for i, request_input in enumerate(request.inputs):
            codec, is_input = self._input_codecs.get(request_input.name, (None, False))
            if not is_input:
                # Possibly a column of a request codec's payload (e.g. a DataFrame).
                extra.append((i, request_input))
                continue
            try:
                kwargs[request_input.name] = codec.decode_input(request_input)
            except InferkitError as err:
                raise relocate(err, f"$.inputs[{i}]") from None
        if extra:
            self._decode_extra(extra, kwargs)
        missing = [name for name in self._required if name not in kwargs]
        if missing:
            raise InvalidRequest(
                f"Missing input {_quoted(missing)}. "
                f"Expected inputs are {_quoted(self._input_codecs)}.",
                where="$.inputs",
            )
        return kwargs

    def encode_response(
        self, model_name: str, payload: Any, model_version: str | None = None
    ) -> InferenceResponse:
        """The response for ``predict``'s return value."""
        outputs: list[ResponseOutput] = []
        for idx, value in enumerate(_as_list(payload)):
            if idx >= len(self._output_codecs) or not self._output_codecs[idx][0].can_encode(value):
                expected = ", ".join(f"'{hint}'" for hint in self._output_hints)
                raise TypeError(
                    f"Unexpected output value at position '{idx}' ({type(value)}). "
                    f"Expected outputs are {expected} outputs."
                )
            codec, is_input = self._output_codecs[idx]
            if is_input:
                outputs.append(codec.encode_output(f"{DEFAULT_OUTPUT_PREFIX}{idx}", value))
            else:
                outputs.extend(codec.encode_response(model_name="", payload=value).outputs)
        return InferenceResponse(
            model_name=model_name, model_version=model_version, outputs=outputs
        )

    def _decode_extra(self, extra: list[tuple[int, RequestInput]], kwargs: dict[str, Any]) -> None:
        if self._request_param is None:
            raise InvalidRequest(
                f"Input {_quoted(inp.name for _, inp in extra)} was not found. "
                f"Available inputs are {_quoted(self._input_codecs)}.",
                where=f"$.inputs[{extra[0][0]}]",
            )
        codec = self._input_codecs[self._request_param][0]
        try:
            kwargs[self._request_param] = codec.decode_request(
                InferenceRequest(inputs=[inp for _, inp in extra])
            )
        except InferkitError as err:
            raise _to_original_index(err, [i for i, _ in extra]) from None


def decode_args(predict: Callable[..., Awaitable[Any]]) -> PredictFunc:
    """Turn ``predict(self, **inputs) -> value`` into ``predict(self, request) -> response``.

    Codecs come from ``self.codecs`` when the model has a :class:`CodecRegistry` there, else from
    the built-ins. The response carries ``self.name`` and ``self.version``.
    """
    hints: list[dict[str, Any]] = []  # resolved on first call: annotations may be forward refs
    built_in: list[CodecRegistry] = []
    plans: weakref.WeakKeyDictionary[CodecRegistry, tuple[int, SignatureCodec]] = (
        weakref.WeakKeyDictionary()
    )

    def plan_for(model: Any) -> SignatureCodec:
        registry = getattr(model, "codecs", None)
        if not isinstance(registry, CodecRegistry):
            if not built_in:
                built_in.append(default_codecs())
            registry = built_in[0]
        cached = plans.get(registry)
        if cached is not None and cached[0] == registry.revision:
            return cached[1]
        if not hints:
            hints.append(_type_hints(predict))
        plan = SignatureCodec(predict, registry, hints[0])
        plans[registry] = (registry.revision, plan)
        return plan

    @functools.wraps(predict)
    async def wrapper(self: Any, payload: InferenceRequest) -> InferenceResponse:
        plan = plan_for(self)
        result = await predict(self, **plan.decode_request(payload))
        return plan.encode_response(
            model_name=getattr(self, "name", ""),
            payload=result,
            model_version=getattr(self, "version", None),
        )

    return wrapper


def _type_hints(predict: Callable[..., Any]) -> dict[str, Any]:
    # `Optional[X]` is just sugar here: the codec is X's.
    return {name: _unwrap_optional(hint) for name, hint in get_type_hints(predict).items()}


def _unwrap_optional(hint: Any) -> Any:
    args = get_args(hint)
    origin = get_origin(hint)
    if (origin is Union or origin is types.UnionType) and len(args) == 2 and type(None) in args:
        return args[0] if args[1] is type(None) else args[1]
    return hint


def _as_hint_list(hint: Any) -> list[Any]:
    if hint is None or hint is type(None):
        return []
    args = get_args(hint)
    if get_origin(hint) is tuple and args and args[-1] is not Ellipsis:
        return [_unwrap_optional(arg) for arg in args]
    return [hint]


def _as_list(payload: Any) -> list[Any]:
    if payload is None:
        return []
    if isinstance(payload, tuple):
        return list(payload)
    return [payload]


def _find_codec(registry: CodecRegistry, name: str | None, hint: Any, is_input: bool) -> _Codec:
    codec: Any = registry.find_input_codec(type_hint=hint)
    if codec is not None:
        return codec, True
    codec = registry.find_request_codec(type_hint=hint)
    if codec is not None:
        return codec, False
    field = "input field" if is_input else "output field"
    named = f"with name '{name}' and type {hint}" if name else f"with type {hint}"
    # A bug in the model's annotations, not in the request: unexpected, reported generically.
    raise TypeError(f"Codec not found for {field} {named}")


def _required_params(predict: Callable[..., Any]) -> list[str]:
    params = list(inspect.signature(predict).parameters.values())[1:]  # skip `self`
    kinds = (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)
    return [p.name for p in params if p.kind in kinds and p.default is inspect.Parameter.empty]


def _quoted(names: Any) -> str:
    return ", ".join(f"'{name}'" for name in names)


def _to_original_index(err: InferkitError, indices: list[int]) -> InferkitError:
    """Errors from the request codec point into the sub-request of extra inputs: map them back."""
    match = _INPUT_INDEX.match(err.where or "")
    if match is not None and int(match.group(1)) < len(indices):
        err.where = f"$.inputs[{indices[int(match.group(1))]}]{err.where[match.end() :]}"  # type: ignore[index]
        err.args = (err.message,)
    return err

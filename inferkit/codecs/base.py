"""The codec interfaces, MLServer's ``InputCodec`` and ``RequestCodec``, as classes of classmethods.

A codec is a class, never instantiated, named by its ``ContentType`` (the ``content_type`` a
tensor or request carries in its ``parameters``) and matched to annotations by its ``TypeHint``.
Codecs are only *listed* in a :class:`~inferkit.codecs.registry.CodecRegistry`; nothing registers
itself on import.

Error locations inside a codec are relative to what it was handed: ``$`` is the tensor for an
input codec and the request for a request codec, as ``msgspec`` reports paths relative to the
object it decodes. Callers that know where that object sits move them with :func:`relocate`.
"""

from __future__ import annotations

from typing import Any, ClassVar

from ..errors import InferkitError, InvalidRequest
from ..types import InferenceRequest, InferenceResponse, RequestInput, ResponseOutput

__all__ = [
    "DEFAULT_INPUT_PREFIX",
    "DEFAULT_OUTPUT_PREFIX",
    "InputCodec",
    "RequestCodec",
    "SingleInputRequestCodec",
    "content_type_of",
    "relocate",
]

DEFAULT_OUTPUT_PREFIX = "output-"
DEFAULT_INPUT_PREFIX = "input-"


class InputCodec:
    """Converts one tensor (a request input or response output) to and from a Python value."""

    #: The ``content_type`` this codec answers to.
    ContentType: ClassVar[str] = ""
    #: The annotation that selects this codec in :func:`~inferkit.codecs.decode_args`. A dotted
    #: string (``"pandas.DataFrame"``) names a type of an optional library without importing it.
    TypeHint: ClassVar[Any] = type(None)

    @classmethod
    def can_encode(cls, payload: Any) -> bool:
        """Whether this codec can encode ``payload`` (used to pick a codec by value)."""
        return False

    @classmethod
    def encode_output(cls, name: str, payload: Any, **kwargs: Any) -> ResponseOutput:
        """Encode ``payload`` as a response output called ``name``."""
        raise NotImplementedError

    @classmethod
    def decode_output(cls, response_output: ResponseOutput) -> Any:
        """Decode a response output into a Python value."""
        raise NotImplementedError

    @classmethod
    def encode_input(cls, name: str, payload: Any, **kwargs: Any) -> RequestInput:
        """Encode ``payload`` as a request input called ``name``."""
        raise NotImplementedError

    @classmethod
    def decode_input(cls, request_input: RequestInput) -> Any:
        """Decode a request input into a Python value."""
        raise NotImplementedError


class RequestCodec:
    """Converts a whole request (or response) to and from one Python value, e.g. a DataFrame."""

    ContentType: ClassVar[str] = ""
    TypeHint: ClassVar[Any] = type(None)

    @classmethod
    def can_encode(cls, payload: Any) -> bool:
        """Whether this codec can encode ``payload`` (used to pick a codec by value)."""
        return False

    @classmethod
    def encode_response(
        cls, model_name: str, payload: Any, model_version: str | None = None, **kwargs: Any
    ) -> InferenceResponse:
        """Encode ``payload`` as the response of ``model_name``."""
        raise NotImplementedError

    @classmethod
    def decode_response(cls, response: InferenceResponse) -> Any:
        """Decode an inference response into a Python value."""
        raise NotImplementedError

    @classmethod
    def encode_request(cls, payload: Any, **kwargs: Any) -> InferenceRequest:
        """Encode ``payload`` as an inference request."""
        raise NotImplementedError

    @classmethod
    def decode_request(cls, request: InferenceRequest) -> Any:
        """Decode an inference request into a Python value."""
        raise NotImplementedError


class SingleInputRequestCodec(RequestCodec):
    """A request codec for requests of exactly one tensor, delegating to ``InputCodec``."""

    InputCodec: ClassVar[type[InputCodec]]

    @classmethod
    def can_encode(cls, payload: Any) -> bool:
        return cls.InputCodec.can_encode(payload)

    @classmethod
    def encode_response(
        cls, model_name: str, payload: Any, model_version: str | None = None, **kwargs: Any
    ) -> InferenceResponse:
        # MLServer names the single output "output-1" here (but "output-0" in decode_args).
        output = cls.InputCodec.encode_output(f"{DEFAULT_OUTPUT_PREFIX}1", payload, **kwargs)
        return InferenceResponse(
            model_name=model_name, model_version=model_version, outputs=[output]
        )

    @classmethod
    def decode_response(cls, response: InferenceResponse) -> Any:
        cls._check_single(len(response.outputs), "output", "$.outputs")
        try:
            return cls.InputCodec.decode_output(response.outputs[0])
        except InferkitError as err:
            raise relocate(err, "$.outputs[0]") from None

    @classmethod
    def encode_request(cls, payload: Any, **kwargs: Any) -> InferenceRequest:
        inp = cls.InputCodec.encode_input(f"{DEFAULT_INPUT_PREFIX}1", payload, **kwargs)
        return InferenceRequest(inputs=[inp])

    @classmethod
    def decode_request(cls, request: InferenceRequest) -> Any:
        cls._check_single(len(request.inputs), "input", "$.inputs")
        try:
            return cls.InputCodec.decode_input(request.inputs[0])
        except InferkitError as err:
            raise relocate(err, "$.inputs[0]") from None

    @classmethod
    def _check_single(cls, count: int, what: str, where: str) -> None:
        if count != 1:
            raise InvalidRequest(
                f"The '{cls.ContentType}' codec only supports a single {what} tensor "
                f"({count} were received)",
                where=where,
            )


def content_type_of(obj: Any) -> str | None:
    """The ``content_type`` in ``obj.parameters`` (a tensor, request or metadata), if any."""
    parameters = getattr(obj, "parameters", None)
    if not parameters:
        return None
    if isinstance(parameters, dict):
        value = parameters.get("content_type")
    else:  # e.g. ModelParameters, a Struct with a content_type field
        value = getattr(parameters, "content_type", None)
    return value if isinstance(value, str) and value else None


def relocate(err: InferkitError, path: str) -> InferkitError:
    """Move an error located relative to ``$`` under ``path``; locate an unlocated one at it.

    >>> relocate(InvalidRequest("bad", where="$.data"), "$.inputs[1]").message
    'bad - at `$.inputs[1].data`'
    """
    where = err.where
    if where is None:
        return err.at(path)
    if where == "$" or where.startswith(("$.", "$[")):
        err.where = path + where[1:]
        err.args = (err.message,)
    return err

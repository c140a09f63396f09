"""The model interface: what a user writes, and the thin base class that gives it defaults.

``Model`` is the counterpart of MLServer's ``MLModel``: constructed with its ``ModelSettings``,
then ``load()``, ``predict(request)`` many times, ``unload()``. A subclass usually overrides
``load`` and ``predict`` only; ``predict`` may be decorated with ``@decode_args`` to take and
return numpy arrays, lists of strings or DataFrames instead of V2 messages.

The server only relies on the :class:`ModelProtocol`, so anything with the same shape serves.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any, Protocol, runtime_checkable

from . import codecs as _codecs
from .metrics import ModelMetrics
from .settings import ModelSettings
from .types import (
    InferenceRequest,
    InferenceResponse,
    MetadataModelResponse,
    MetadataTensor,
    RequestInput,
    RequestOutput,
    ResponseOutput,
)

__all__ = ["Model", "ModelProtocol", "StreamingModel", "has_own_stream"]


@runtime_checkable
class ModelProtocol(Protocol):
    """What the server needs of a model."""

    settings: ModelSettings

    @property
    def name(self) -> str: ...

    @property
    def version(self) -> str | None: ...

    async def load(self) -> bool | None: ...

    async def predict(self, payload: InferenceRequest) -> InferenceResponse: ...

    async def unload(self) -> bool | None: ...

    def metadata(self) -> MetadataModelResponse: ...


@runtime_checkable
class StreamingModel(ModelProtocol, Protocol):
    """A model that answers streams itself (MLServer's ``predict_stream`` signature)."""

    def predict_stream(
        self, payloads: AsyncIterator[InferenceRequest]
    ) -> AsyncIterator[InferenceResponse]: ...


class Model:
    """Base class for models, with MLServer's ``MLModel`` API.

    Override :meth:`load` to read weights (``self.settings.parameters.uri`` says where) and
    :meth:`predict` to answer a request. ``codecs`` is the server's codec registry; it is set
    when the model is added to a server, so custom codecs given to ``Server(codecs=...)`` are
    found by ``@decode_args`` and by :meth:`decode` / :meth:`encode`.
    """

    def __init__(self, settings: ModelSettings | None = None) -> None:
        self.settings = settings if settings is not None else ModelSettings()
        self.codecs = _codecs.default_codecs()
        #: True once ``load`` succeeded; kept for MLServer models that check ``self.ready``.
        self.ready = False
        #: Custom metrics, labelled with this model; exported on /metrics once served.
        self.metrics = ModelMetrics(self.settings.name, self.settings.version or "")

    @property
    def codecs(self) -> _codecs.CodecRegistry:
        """The codec registry: the server's, plus the codecs this model's module declares
        (MLServer's ``@register_input_codec``; see :func:`inferkit.codecs.declare_codec`)."""
        return self._codecs

    @codecs.setter
    def codecs(self, registry: _codecs.CodecRegistry) -> None:
        self._codecs = _codecs.with_declared(registry, type(self))

    @property
    def _settings(self) -> ModelSettings:
        # MLServer's MLModel keeps its settings here, and model files read
        # `self._settings.parameters.uri`; the same object as `self.settings`.
        return self.settings

    @_settings.setter
    def _settings(self, value: ModelSettings) -> None:
        self.settings = value

    @property
    def inputs(self) -> list[MetadataTensor]:
        """The inputs declared in the settings (MLServer's ``MLModel.inputs``)."""
        return self.settings.inputs

    @inputs.setter
    def inputs(self, value: list[MetadataTensor]) -> None:
        self.settings.inputs = value

    @property
    def outputs(self) -> list[MetadataTensor]:
        """The outputs declared in the settings (MLServer's ``MLModel.outputs``)."""
        return self.settings.outputs

    @outputs.setter
    def outputs(self, value: list[MetadataTensor]) -> None:
        self.settings.outputs = value

    @property
    def name(self) -> str:
        """The model's name (``model-settings.json`` ``name``)."""
        return self.settings.name

    @property
    def version(self) -> str | None:
        """The model's version (``parameters.version``), or None when unversioned."""
        return self.settings.version

    async def load(self) -> bool | None:
        """Load weights and warm up. Return nothing (or True); raise to fail the load."""
        return True

    async def predict(self, payload: InferenceRequest) -> InferenceResponse:
        """Answer one inference request. Subclasses must override this."""
        raise NotImplementedError(f"{type(self).__name__} does not implement predict()")

    async def predict_stream(
        self, payloads: AsyncIterator[InferenceRequest]
    ) -> AsyncIterator[InferenceResponse]:
        """Answer a stream of requests; by default, one ``predict`` per request, in order."""
        async for payload in payloads:
            yield await self.predict(payload)

    async def unload(self) -> bool | None:
        """Release what ``load`` acquired."""
        return True

    def metadata(self) -> MetadataModelResponse:
        """The model's V2 metadata, from its settings."""
        s = self.settings
        return MetadataModelResponse(
            name=s.name,
            versions=list(s.versions) or None,
            platform=s.platform,
            inputs=list(s.inputs) or None,
            outputs=list(s.outputs) or None,
            parameters=_content_type_parameters(s),
        )

    # MLServer's codec helpers, resolved against the declared input/output metadata.

    def decode(self, request_input: RequestInput, default_codec: Any = None) -> Any:
        """Decode one input with its content type (or the model's declared one)."""
        return _codecs.decode_input(self.codecs, request_input, self.settings.inputs, default_codec)

    def decode_request(self, inference_request: InferenceRequest, default_codec: Any = None) -> Any:
        """Decode a whole request with a request codec (e.g. into a DataFrame)."""
        params = self.settings.parameters
        return _codecs.decode_request(
            self.codecs,
            inference_request,
            self.settings.inputs,
            default_codec,
            content_type=params.content_type if params else None,
        )

    def encode(
        self, payload: Any, request_output: RequestOutput, default_codec: Any = None
    ) -> ResponseOutput:
        """Encode one output value, choosing the codec by content type or payload type."""
        return _codecs.encode_output(
            self.codecs, payload, request_output, self.settings.outputs, default_codec
        )

    def encode_response(self, payload: Any, default_codec: Any = None) -> InferenceResponse:
        """Encode a whole response with a request codec, named after this model."""
        return _codecs.encode_response(self.codecs, self.name, payload, self.version, default_codec)


def _content_type_parameters(settings: ModelSettings) -> dict[str, Any] | None:
    params = settings.parameters
    if params is not None and params.content_type:
        return {"content_type": params.content_type}
    return None


def has_own_stream(model: object) -> bool:
    """Whether a model answers streams itself, rather than by the default ``predict_stream``.

    A model with its own ``predict_stream`` gets a whole stream of requests; any other is
    called once per request, so that one failed request does not end the stream. A wrapper
    that cannot tell by its class (the worker-process proxy) says so with a
    ``streams_natively`` attribute.
    """
    flag = getattr(model, "streams_natively", None)
    if isinstance(flag, bool):
        return flag
    method = getattr(type(model), "predict_stream", None)
    return method is not None and method is not Model.predict_stream

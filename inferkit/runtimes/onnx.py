"""ONNX graphs run by ONNX Runtime on the CPU (MLServer has no ONNX runtime; this is inferkit's).

The graph says what the model takes and returns, so nothing needs declaring: the V2 metadata
(``GET /v2/models/{name}``) lists the graph's inputs and outputs with their datatypes and shapes
(a symbolic or unknown dimension is ``-1``), unless ``model-settings.json`` declares its own.

A request sends one tensor per graph input, by name, in any order; each is cast to the input's
element type if its datatype differs (``FP64`` data for a ``float`` input). The response has
every graph output, or those the request names in ``outputs``, each with the shape and element
type ONNX Runtime returns. ``parameters.extra`` may set the session's threads:
``intra_op_num_threads`` (threads within an operator; ONNX Runtime's default is one per core)
and ``inter_op_num_threads``.
"""

from __future__ import annotations

from pathlib import Path
from types import MappingProxyType
from typing import Any, ClassVar

import numpy as np

from ..codecs.datatypes import to_dtype
from ..codecs.tensor import decode_tensor, encode_tensor
from ..errors import InvalidRequest, InvalidShape, ModelLoadError, OutputNotFound
from ..settings import ModelSettings
from ..types import InferenceRequest, MetadataModelResponse, MetadataTensor, RequestOutput
from .base import Runtime, _all_of

__all__ = ["OnnxModel"]

#: ONNX Runtime's element type names -> V2 datatypes (those numpy and V2 both have).
ONNX_DATATYPES: MappingProxyType[str, str] = MappingProxyType(
    {
        "tensor(bool)": "BOOL",
        "tensor(uint8)": "UINT8",
        "tensor(uint16)": "UINT16",
        "tensor(uint32)": "UINT32",
        "tensor(uint64)": "UINT64",
        "tensor(int8)": "INT8",
        "tensor(int16)": "INT16",
        "tensor(int32)": "INT32",
        "tensor(int64)": "INT64",
        "tensor(float16)": "FP16",
        "tensor(float)": "FP32",
        "tensor(double)": "FP64",
        "tensor(string)": "BYTES",
    }
)

#: ``parameters.extra`` keys that set the ``SessionOptions`` attribute of the same name.
THREAD_OPTIONS = ("intra_op_num_threads", "inter_op_num_threads")


class OnnxModel(Runtime):
    """Serves an ONNX graph with an ONNX Runtime ``InferenceSession``."""

    library: ClassVar[str] = "ONNX Runtime"
    requires: ClassVar[tuple[str, ...]] = ("onnxruntime",)
    extra: ClassVar[str] = "onnx"
    artefact_names: ClassVar[tuple[str, ...]] = ("model.onnx",)

    def __init__(self, settings: ModelSettings | None = None) -> None:
        super().__init__(settings)
        self._inputs: dict[str, MetadataTensor] = {}
        self._outputs: dict[str, MetadataTensor] = {}

    def read_artefact(self, path: Path) -> Any:
        import onnxruntime

        options = onnxruntime.SessionOptions()
        for key, value in self._thread_options().items():
            setattr(options, key, value)
        session = onnxruntime.InferenceSession(
            str(path), sess_options=options, providers=["CPUExecutionProvider"]
        )
        # Read now, on the model's thread: a type the V2 protocol cannot carry fails the load.
        inputs = {node.name: _metadata(node, "input") for node in session.get_inputs()}
        outputs = {node.name: _metadata(node, "output") for node in session.get_outputs()}
        self._inputs, self._outputs = inputs, outputs
        return session

    def _thread_options(self) -> dict[str, int]:
        extra = self.settings.parameters.extra if self.settings.parameters else {}
        options = {}
        for key in THREAD_OPTIONS:
            value = extra.get(key)
            if value is None:
                continue
            if type(value) is not int or value < 0:
                raise ModelLoadError(
                    f"parameters.extra.{key} must be an integer >= 0 (0: ONNX Runtime's"
                    f" default), got {value!r}"
                )
            options[key] = value
        return options

    def _predict_fn(self, estimator: Any) -> str:
        # Outputs are the graph's, not methods: there is no predict_fn to check.
        return ""

    def metadata(self) -> MetadataModelResponse:
        """The graph's inputs and outputs, where the settings declare none."""
        response = super().metadata()
        if response.inputs is None and self._inputs:
            response.inputs = list(self._inputs.values())
        if response.outputs is None and self._outputs:
            response.outputs = list(self._outputs.values())
        return response

    # -- inference hooks ------------------------------------------------------------------

    def _requested_outputs(self, payload: InferenceRequest, estimator: Any) -> list[RequestOutput]:
        if not payload.outputs:
            return [RequestOutput(name=name) for name in self._outputs]
        for i, output in enumerate(payload.outputs):
            if output.name not in self._outputs:
                raise OutputNotFound(
                    f"The graph's outputs are {_all_of(list(self._outputs))}"
                    f" ('{output.name}' was requested)",
                    where=f"$.outputs[{i}].name",
                )
        return payload.outputs

    def _features(self, payload: InferenceRequest, estimator: Any) -> Any:
        feed: dict[str, np.ndarray[Any, Any]] = {}
        for i, request_input in enumerate(payload.inputs):
            where = f"$.inputs[{i}]"
            expected = self._inputs.get(request_input.name)
            if expected is None:
                raise InvalidRequest(
                    f"The graph's inputs are {_all_of(list(self._inputs))}"
                    f" ('{request_input.name}' was sent)",
                    where=f"{where}.name",
                )
            array = decode_tensor(request_input, where)
            _check_rank(array, expected, where)
            feed[request_input.name] = _as_input(array, expected, request_input.datatype, where)
        missing = [name for name in self._inputs if name not in feed]
        if missing:
            raise InvalidRequest(f"Missing graph input {_all_of(missing)}", where="$.inputs")
        return feed

    def compute(self, estimator: Any, names: list[str], features: Any) -> list[Any]:
        return list(estimator.run(names, features))

    def _encode(self, wanted: list[RequestOutput], results: list[Any]) -> list[Any]:
        # The graph's own shapes, not MLServer's "1-d gains a column" of the np codec.
        return [
            encode_tensor(output.name, result, {"content_type": "np"})
            for output, result in zip(wanted, results, strict=True)
        ]


def _metadata(node: Any, kind: str) -> MetadataTensor:
    datatype = ONNX_DATATYPES.get(node.type)
    if datatype is None:
        raise ModelLoadError(
            f"The graph's {kind} '{node.name}' is a {node.type}, which the V2 protocol cannot"
            f" carry (it carries {', '.join(sorted(ONNX_DATATYPES))})"
        )
    shape = [dim if isinstance(dim, int) and dim >= 0 else -1 for dim in node.shape]
    return MetadataTensor(name=node.name, datatype=datatype, shape=shape)


def _check_rank(array: np.ndarray[Any, Any], expected: MetadataTensor, where: str) -> None:
    shape = list(array.shape)
    fits = len(shape) == len(expected.shape) and all(
        want in (-1, got) for want, got in zip(expected.shape, shape, strict=True)
    )
    if not fits:
        raise InvalidShape(
            f"Expected shape {expected.shape} for input '{expected.name}', got {shape}",
            where=f"{where}.shape",
        )


def _as_input(
    array: np.ndarray[Any, Any], expected: MetadataTensor, sent: str, where: str
) -> np.ndarray[Any, Any]:
    """The request's array as the graph input's element type (a cast within the same kind)."""
    datatype = expected.datatype
    if datatype == "BYTES":
        if array.dtype != object:
            raise InvalidRequest(
                f"Input '{expected.name}' is BYTES in the graph, got {sent}",
                where=f"{where}.datatype",
            )
        try:
            # ONNX Runtime takes str, not bytes: UTF-8 text, as V2 BYTES usually carry.
            text: np.ndarray[Any, Any] = np.vectorize(_text, otypes=[object])(array)
            return text
        except UnicodeDecodeError:
            raise InvalidRequest(
                "A string graph input takes UTF-8 text", where=f"{where}.data"
            ) from None
    dtype = to_dtype(datatype)
    if array.dtype == dtype:
        return array
    if not np.can_cast(array.dtype, dtype, casting="same_kind"):
        raise InvalidRequest(
            f"Input '{expected.name}' is {datatype} in the graph; {sent} does not convert to it",
            where=f"{where}.datatype",
        )
    return array.astype(dtype)


def _text(element: Any) -> str:
    return element.decode("utf-8") if isinstance(element, bytes) else str(element)

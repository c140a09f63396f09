"""MLflow models through their ``pyfunc`` flavour (MLServer's ``mlserver_mlflow.MLflowRuntime``).

The artefact is an MLflow model folder (the one holding ``MLmodel``), loaded with
``mlflow.pyfunc.load_model``. Its signature, if it has one, is the V2 metadata and says how
requests are decoded, as in MLServer:

* a column signature (``ColSpec``: what ``infer_signature`` makes of a DataFrame) decodes the
  inputs as the columns of a DataFrame (``pd``), each by its column type (``string`` columns with
  the ``str`` codec, ``binary`` with ``base64``, ...);
* a tensor signature with named tensors decodes the request into a ``dict`` of numpy arrays, one
  per input; an unnamed one takes a single tensor as a numpy array (``np``).

A request's own ``content_type`` parameter wins. The model's answer is encoded by its type, as
MLServer does: a DataFrame as one output per column, a dict as one output per key, anything else
as a numpy array named ``output-1``. MLflow checks the inputs against the signature; what it
refuses is ``INVALID_REQUEST`` with MLflow's reason.
"""

from __future__ import annotations

import logging
from functools import partial
from pathlib import Path
from types import MappingProxyType
from typing import Any, ClassVar

import numpy as np

from .. import codecs as _codecs
from ..codecs.base import content_type_of
from ..codecs.datatypes import to_datatype
from ..codecs.selection import decode_input
from ..errors import InferkitError, InvalidRequest, ModelLoadError, ModelNotReady
from ..settings import ModelSettings
from ..types import (
    InferenceRequest,
    InferenceResponse,
    MetadataModelResponse,
    MetadataTensor,
    ResponseOutput,
)
from .base import Runtime, _run

__all__ = ["MLflowRuntime"]

log = logging.getLogger("inferkit.runtimes.mlflow")

#: MLflow column types -> (V2 datatype, the content type that decodes the column), MLServer's.
COLUMN_TYPES: MappingProxyType[str, tuple[str, str]] = MappingProxyType(
    {
        "boolean": ("BOOL", "np"),
        "integer": ("INT32", "np"),
        "long": ("INT64", "np"),
        "float": ("FP32", "np"),
        "double": ("FP64", "np"),
        "string": ("BYTES", "str"),
        "binary": ("BYTES", "base64"),
        "datetime": ("BYTES", "datetime"),
    }
)
#: What the request is decoded into for a named-tensor signature (MLServer's ``TensorDictCodec``).
DICT_CONTENT_TYPE = "dict"
#: Longest MLflow refusal passed on to the client: MLflow quotes the whole input in it.
MAX_REASON = 500


class MLflowRuntime(Runtime):
    """Serves an MLflow model with ``mlflow.pyfunc``."""

    library: ClassVar[str] = "MLflow"
    requires: ClassVar[tuple[str, ...]] = ("mlflow",)
    extra: ClassVar[str] = "mlflow"
    artefact_names: ClassVar[tuple[str, ...]] = ("MLmodel",)

    def __init__(self, settings: ModelSettings | None = None) -> None:
        super().__init__(settings)
        #: Metadata and request content type from the signature (None: no signature).
        self._inputs: list[MetadataTensor] | None = None
        self._outputs: list[MetadataTensor] | None = None
        self._content_type: str | None = None

    def read_artefact(self, path: Path) -> Any:
        import mlflow.pyfunc

        folder = path.parent if path.name == "MLmodel" else path
        model = mlflow.pyfunc.load_model(str(folder))
        signature = model.metadata.signature
        if signature is None:
            self._inputs = self._outputs = self._content_type = None
            return model
        if self.settings.inputs or self.settings.outputs:
            log.warning(
                "Model '%s': the MLflow signature replaces the inputs and outputs declared in"
                " model-settings.json",
                self.name,
            )
        self._inputs = _tensors(signature.inputs, "input-")
        self._outputs = _tensors(signature.outputs, "output-") if signature.outputs else []
        if len(self._outputs) == 1 and not signature.outputs.inputs[0].name:
            # A single answer is sent as ``output-1`` (below): the metadata says the same.
            self._outputs[0].name = f"{_codecs.DEFAULT_OUTPUT_PREFIX}1"
        self._content_type = _request_content_type(signature.inputs)
        return model

    def _predict_fn(self, estimator: Any) -> str:
        return ""  # a pyfunc model has one predict; there is nothing to choose

    def metadata(self) -> MetadataModelResponse:
        """The signature's inputs and outputs, else those of the settings (as MLServer)."""
        response = super().metadata()
        if self._inputs is not None:
            response.inputs = list(self._inputs) or None
            response.outputs = list(self._outputs or []) or None
        content_type = self._content_type
        if content_type is not None:
            response.parameters = {**(response.parameters or {}), "content_type": content_type}
        return response

    async def predict(self, payload: InferenceRequest) -> InferenceResponse:
        """Decode the request as the signature says, run ``predict``, encode by the answer."""
        model, executor = self.estimator, self._executor
        if model is None or executor is None:
            raise ModelNotReady(f"Model '{self.name}' is not loaded")
        data = self._decode(payload)
        result = await _run(executor, partial(_predict, model, data))
        return InferenceResponse(
            model_name=self.name, model_version=self.version, outputs=_encode(result)
        )

    def _decode(self, payload: InferenceRequest) -> Any:
        inputs = self._inputs if self._inputs is not None else self.settings.inputs
        parameters = self.settings.parameters
        content_type = content_type_of(payload) or self._content_type
        if content_type is None and parameters is not None:
            content_type = parameters.content_type
        if content_type == DICT_CONTENT_TYPE:
            return {
                request_input.name: decode_input(
                    self.codecs,
                    request_input,
                    inputs,
                    _codecs.NumpyCodec,
                    where=f"$.inputs[{i}]",
                )
                for i, request_input in enumerate(payload.inputs)
            }
        return _codecs.decode_request(
            self.codecs,
            payload,
            inputs,
            _codecs.NumpyRequestCodec,
            content_type=content_type,
        )


def _predict(model: Any, data: Any) -> Any:
    from mlflow.exceptions import MlflowException

    try:
        return model.predict(data)
    except MlflowException as exc:
        # MLflow's schema enforcement: the request does not fit the signature.
        reason = str(exc.message)
        if len(reason) > MAX_REASON:
            reason = reason[:MAX_REASON] + "..."
        raise InvalidRequest(f"The model refused the input: {reason}") from None


def _encode(result: Any) -> list[ResponseOutput]:
    if _codecs.PandasCodec.can_encode(result):
        outputs: list[ResponseOutput] = _codecs.PandasCodec.encode_outputs(result)
        return outputs
    if isinstance(result, dict):
        return [
            _codecs.NumpyCodec.encode_output(str(name), _array(value))
            for name, value in result.items()
        ]
    return [_codecs.NumpyCodec.encode_output(f"{_codecs.DEFAULT_OUTPUT_PREFIX}1", _array(result))]


def _array(value: Any) -> np.ndarray[Any, Any]:
    # A pandas Series or a list becomes an array; strings become BYTES.
    array = np.asarray(value.to_numpy() if hasattr(value, "to_numpy") else value)
    if array.dtype.kind == "U":
        array = array.astype(object)
    return array


def _tensors(schema: Any, prefix: str) -> list[MetadataTensor]:
    from mlflow.types.schema import TensorSpec

    tensors = []
    for i, spec in enumerate(schema.inputs):
        name = spec.name or f"{prefix}{i}"
        if isinstance(spec, TensorSpec):
            try:
                datatype = to_datatype(spec.type)
            except InferkitError as exc:
                raise ModelLoadError(f"Signature {prefix[:-1]} '{name}': {exc.message}") from None
            shape, content_type = [int(dim) for dim in spec.shape], "np"
        else:
            kind = getattr(spec.type, "name", None)
            datatype, content_type = COLUMN_TYPES.get(str(kind), ("BYTES", "pd_json"))
            shape = [-1, 1]
        tensors.append(
            MetadataTensor(
                name=name,
                datatype=datatype,
                shape=shape,
                parameters={"content_type": content_type},
            )
        )
    return tensors


def _request_content_type(schema: Any) -> str:
    # MLflow's own rule for what its pyfunc accepts: a tensor schema takes a dict of arrays
    # when its tensors are named, one array otherwise; a column schema takes a DataFrame.
    if schema.is_tensor_spec():
        return DICT_CONTENT_TYPE if schema.has_input_names() else "np"
    return "pd"

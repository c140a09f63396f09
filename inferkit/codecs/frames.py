"""The ``pd`` content type: a request as a pandas DataFrame, one column per tensor.

pandas is optional: it is imported only when this codec decodes something. Matching a payload or
an annotation never imports it, because a DataFrame can only exist once pandas is imported.
"""

from __future__ import annotations

import sys
from types import MappingProxyType
from typing import Any, ClassVar

import msgspec
import numpy as np

from ..errors import InferkitError, InvalidRequest
from ..types import (
    InferenceRequest,
    InferenceResponse,
    RequestInput,
    ResponseOutput,
    encode_json,
)
from .base import InputCodec, RequestCodec, content_type_of, relocate
from .datatypes import to_datatype
from .strings import Base64Codec, DatetimeCodec, StringCodec
from .tensor import Tensor, check_tensor, decode_tensor, show_value

__all__ = ["PandasCodec"]

# Column content types the pandas codec decodes itself (MLServer decodes these inputs before
# handing the request to the request codec).
_COLUMN_CODECS: MappingProxyType[str, type[InputCodec]] = MappingProxyType(
    {codec.ContentType: codec for codec in (StringCodec, Base64Codec, DatetimeCodec)}
)


def _pandas() -> Any:
    import pandas  # optional dependency: imported on first use, never by `import inferkit`

    return pandas


class PandasCodec(RequestCodec):
    """Decodes a request (response) as a DataFrame whose columns are its inputs (outputs)."""

    ContentType: ClassVar[str] = "pd"
    #: Content type of a BYTES column whose elements are JSON documents (mixed objects).
    JsonContentType: ClassVar[str] = "pd_json"
    TypeHint: ClassVar[Any] = "pandas.DataFrame"

    @classmethod
    def can_encode(cls, payload: Any) -> bool:
        pandas = sys.modules.get("pandas")
        return pandas is not None and isinstance(payload, pandas.DataFrame)

    @classmethod
    def encode_response(
        cls,
        model_name: str,
        payload: Any,
        model_version: str | None = None,
        use_bytes: bool = True,
        **kwargs: Any,
    ) -> InferenceResponse:
        return InferenceResponse(
            model_name=model_name,
            model_version=model_version,
            parameters={"content_type": cls.ContentType},
            outputs=cls.encode_outputs(payload, use_bytes=use_bytes),
        )

    @classmethod
    def decode_response(cls, response: InferenceResponse) -> Any:
        return _frame([(f"$.outputs[{i}]", out) for i, out in enumerate(response.outputs)])

    @classmethod
    def encode_outputs(cls, payload: Any, use_bytes: bool = True) -> list[ResponseOutput]:
        """One response output per column of the DataFrame ``payload``."""
        return [_to_output(str(column), payload[column], use_bytes) for column in payload]

    @classmethod
    def encode_request(
        cls, payload: Any, use_bytes: bool = True, **kwargs: Any
    ) -> InferenceRequest:
        inputs = [
            RequestInput(
                name=out.name,
                shape=out.shape,
                datatype=out.datatype,
                parameters=out.parameters,
                data=out.data,
            )
            for out in cls.encode_outputs(payload, use_bytes=use_bytes)
        ]
        return InferenceRequest(parameters={"content_type": cls.ContentType}, inputs=inputs)

    @classmethod
    def decode_request(cls, request: InferenceRequest) -> Any:
        return _frame([(f"$.inputs[{i}]", inp) for i, inp in enumerate(request.inputs)])


def _frame(tensors: list[tuple[str, Tensor]]) -> Any:
    pandas = _pandas()
    columns: dict[str, Any] = {}
    for where, tensor in tensors:
        try:
            columns[tensor.name] = pandas.Series(_column(tensor))
        except InferkitError as err:
            raise relocate(err, where) from None
    return pandas.DataFrame(columns)


def _column(tensor: Tensor) -> Any:
    content_type = content_type_of(tensor)
    if content_type == PandasCodec.JsonContentType:
        return [_from_json(text, f"$.data[{i}]") for i, text in enumerate(_texts(tensor))]
    codec = _COLUMN_CODECS.get(content_type or "")
    if codec is not None:
        return codec.decode_input(tensor)  # type: ignore[arg-type]
    data = tensor.data
    if tensor.datatype == "BYTES" and type(data) is list and data and type(data[0]) is not list:
        # JSON strings stay strings (MLServer keeps the REST payload as given).
        check_tensor(tensor)
        array = np.empty(len(data), dtype=object)
        array[:] = data
        return _rows(array.reshape(tensor.shape))
    return _rows(decode_tensor(tensor))


def _rows(array: np.ndarray[Any, Any]) -> Any:
    """A 1-d column for one value per row; else one array per row (shape ``[N, ...]``)."""
    rows = array.shape[0] if array.ndim else 1
    if array.size == rows:
        return array.reshape(rows)
    return list(array.reshape(rows, -1))


def _texts(tensor: Tensor) -> list[str]:
    return StringCodec.decode_input(tensor)  # type: ignore[arg-type]


def _from_json(text: str, where: str) -> Any:
    try:
        return msgspec.json.decode(text)
    except (msgspec.DecodeError, TypeError):
        raise InvalidRequest(
            f"Expected a JSON document, got `{show_value(text)}`", where=where
        ) from None


def _to_output(name: str, series: Any, use_bytes: bool) -> ResponseOutput:
    values = series.to_numpy()
    datatype = to_datatype(values.dtype)
    shape = [len(values), 1]
    if datatype != "BYTES":
        # NaN becomes JSON null when encoded, as MLServer writes missing values.
        return ResponseOutput(name=name, shape=shape, datatype=datatype, data=values.reshape(shape))
    items = values.tolist()
    content_type = StringCodec.ContentType
    if not all(isinstance(item, (str, bytes)) for item in items):
        content_type = PandasCodec.JsonContentType
        items = [encode_json(item) for item in items]
        if not use_bytes:
            items = [item.decode() for item in items]
    elif use_bytes:
        items = [item.encode() if isinstance(item, str) else item for item in items]
    data: Any = items
    if not all(type(item) is str for item in items):
        data = np.empty(len(items), dtype=object)
        data[:] = items
        data = data.reshape(shape)
    return ResponseOutput(
        name=name,
        shape=shape,
        datatype=datatype,
        parameters={"content_type": content_type},
        data=data,
    )

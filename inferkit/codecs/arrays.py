"""The ``np`` content type: a tensor as a numpy array (MLServer's ``NumpyCodec``)."""

from __future__ import annotations

from typing import Any, ClassVar

import numpy as np

from ..types import RequestInput, ResponseOutput
from .base import InputCodec, SingleInputRequestCodec
from .tensor import decode_tensor, encode_tensor

__all__ = ["NumpyCodec", "NumpyRequestCodec", "inject_batch_dimension"]


def inject_batch_dimension(shape: list[int]) -> list[int]:
    """MLServer's rule that a 1-d shape ``[N]`` means ``[N, 1]`` (and a 0-d one ``[1]``)."""
    return shape if len(shape) > 1 else [*shape, 1]


class NumpyCodec(InputCodec):
    """Decodes a request input (response output) as a numpy array, and encodes one back."""

    ContentType: ClassVar[str] = "np"
    TypeHint: ClassVar[Any] = np.ndarray

    @classmethod
    def can_encode(cls, payload: Any) -> bool:
        return isinstance(payload, np.ndarray)

    @classmethod
    def encode_output(cls, name: str, payload: Any, **kwargs: Any) -> ResponseOutput:
        # The data stay a numpy array: the JSON encoder and the gRPC transport convert it in C.
        output = encode_tensor(name, payload, {"content_type": cls.ContentType})
        shape = inject_batch_dimension(list(np.shape(payload)))
        if shape != output.shape:
            output.shape = shape
            output.data = output.data.reshape(shape)
        return output

    @classmethod
    def decode_output(cls, response_output: ResponseOutput) -> np.ndarray[Any, Any]:
        return decode_tensor(response_output)

    @classmethod
    def encode_input(cls, name: str, payload: Any, **kwargs: Any) -> RequestInput:
        output = cls.encode_output(name, payload, **kwargs)
        return RequestInput(
            name=output.name,
            shape=output.shape,
            datatype=output.datatype,
            parameters=output.parameters,
            data=output.data,
        )

    @classmethod
    def decode_input(cls, request_input: RequestInput) -> np.ndarray[Any, Any]:
        return decode_tensor(request_input)


class NumpyRequestCodec(SingleInputRequestCodec):
    """Decodes a request of a single tensor as a numpy array."""

    InputCodec: ClassVar[type[InputCodec]] = NumpyCodec
    ContentType: ClassVar[str] = NumpyCodec.ContentType

"""decode_args: codecs from predict's annotations, as MLServer's SignatureCodec."""

from __future__ import annotations

from typing import Any, ClassVar, List, Optional  # noqa: UP035 - typing spellings on purpose

import msgspec
import numpy as np
import pandas as pd
import pytest

from inferkit.codecs import CodecRegistry, InputCodec, decode_args, default_codecs
from inferkit.errors import InvalidRequest
from inferkit.types import InferenceRequest, InferenceResponse, ResponseOutput, encode_json


def request(body: bytes) -> InferenceRequest:
    return msgspec.json.decode(body, type=InferenceRequest)


QUICKSTART = (
    b'{"inputs":[{"name":"docs","shape":[2,1],"datatype":"BYTES",'
    b'"parameters":{"content_type":"str"},"data":["a b","a c"]}]}'
)


class Quickstart:
    """The seed example: two documents in, their similarity (a numpy scalar) out."""

    name = "quickstart"
    version = None

    @decode_args
    async def predict(self, docs: list[str]) -> np.ndarray:
        first, second = (set(doc.split()) for doc in docs)
        return np.array(len(first & second) / len(first | second))


async def test_quickstart() -> None:
    response = await Quickstart().predict(request(QUICKSTART))
    assert isinstance(response, InferenceResponse)
    assert response.outputs[0].name == "output-0"
    assert response.outputs[0].datatype == "FP64"
    assert response.outputs[0].shape == [1]
    assert response.outputs[0].parameters == {"content_type": "np"}
    assert encode_json(response) == (
        b'{"model_name":"quickstart","outputs":[{"name":"output-0","shape":[1],'
        b'"datatype":"FP64","parameters":{"content_type":"np"},"data":[0.3333333333333333]}]}'
    )


async def test_wrapper_keeps_the_function_metadata() -> None:
    assert Quickstart.predict.__name__ == "predict"
    assert Quickstart.predict.__wrapped__ is not None  # type: ignore[attr-defined]


class Several:
    name = "several"
    version = "7"

    @decode_args
    async def predict(
        self,
        words: List[str],  # noqa: UP006
        scale: Optional[np.ndarray] = None,  # noqa: UP045
    ) -> tuple[np.ndarray, list[str]]:
        factor = 1.0 if scale is None else float(scale.reshape(-1)[0])
        return np.array([len(w) * factor for w in words]), [w.upper() for w in words]


async def test_typing_spellings_optional_and_tuple_outputs() -> None:
    body = (
        b'{"inputs":[{"name":"words","shape":[2],"datatype":"BYTES","data":["ab","c"]},'
        b'{"name":"scale","shape":[1],"datatype":"FP32","data":[2]}]}'
    )
    response = await Several().predict(request(body))
    assert response.model_name == "several"
    assert response.model_version == "7"
    assert [(o.name, o.datatype, o.shape) for o in response.outputs] == [
        ("output-0", "FP64", [2, 1]),
        ("output-1", "BYTES", [2, 1]),
    ]
    assert encode_json(response.outputs[1]) == (
        b'{"name":"output-1","shape":[2,1],"datatype":"BYTES",'
        b'"parameters":{"content_type":"str"},"data":["AB","C"]}'
    )
    # An optional input may be left out.
    only_words = b'{"inputs":[{"name":"words","shape":[1],"datatype":"BYTES","data":["abc"]}]}'
    response = await Several().predict(request(only_words))
    assert response.outputs[0].data.tolist() == [[3.0]]


class Tabular:
    name = "tabular"

    @decode_args
    async def predict(self, threshold: np.ndarray, frame: pd.DataFrame) -> pd.DataFrame:
        return frame[frame["x"] > float(threshold.reshape(-1)[0])]


async def test_leftover_inputs_go_to_the_request_codec_parameter() -> None:
    body = (
        b'{"inputs":[{"name":"x","shape":[3],"datatype":"FP64","data":[1,5,9]},'
        b'{"name":"threshold","shape":[1],"datatype":"FP64","data":[4]},'
        b'{"name":"y","shape":[3],"datatype":"BYTES","data":["a","b","c"]}]}'
    )
    response = await Tabular().predict(request(body))
    assert response.model_version is None
    assert [(o.name, o.data.reshape(-1).tolist()) for o in response.outputs] == [
        ("x", [5.0, 9.0]),
        ("y", [b"b", b"c"]),
    ]


async def test_leftover_input_errors_point_at_the_original_input() -> None:
    body = (
        b'{"inputs":[{"name":"threshold","shape":[1],"datatype":"FP64","data":[4]},'
        b'{"name":"x","shape":[2],"datatype":"FP64","data":[1,"oops"]}]}'
    )
    with pytest.raises(InvalidRequest) as info:
        await Tabular().predict(request(body))
    assert str(info.value) == 'Expected `FP64`, got `"oops"` - at `$.inputs[1].data[1]`'


# (request JSON, exact error message) for the quickstart model.
REQUEST_ERRORS = [
    (b'{"inputs":[]}', "Missing input 'docs'. Expected inputs are 'docs'. - at `$.inputs`"),
    (
        b'{"inputs":[{"name":"docs","shape":[1],"datatype":"BYTES","data":["a"]},'
        b'{"name":"extra","shape":[1],"datatype":"BYTES","data":["a"]}]}',
        "Input 'extra' was not found. Available inputs are 'docs'. - at `$.inputs[1]`",
    ),
    (
        b'{"inputs":[{"name":"docs","shape":[1],"datatype":"BYTES","data":[1]}]}',
        "Expected a string, got `1` - at `$.inputs[0].data[0]`",
    ),
]


@pytest.mark.parametrize(("body", "message"), REQUEST_ERRORS)
async def test_request_errors(body: bytes, message: str) -> None:
    with pytest.raises(InvalidRequest) as info:
        await Quickstart().predict(request(body))
    assert str(info.value) == message


class Vector:
    def __init__(self, values: list[float]) -> None:
        self.values = values


class VectorCodec(InputCodec):
    ContentType: ClassVar[str] = "vector"
    TypeHint: ClassVar[Any] = Vector

    @classmethod
    def can_encode(cls, payload: Any) -> bool:
        return isinstance(payload, Vector)

    @classmethod
    def encode_output(cls, name: str, payload: Any, **kwargs: Any) -> ResponseOutput:
        return ResponseOutput(
            name=name,
            shape=[len(payload.values)],
            datatype="FP64",
            parameters={"content_type": cls.ContentType},
            data=payload.values,
        )

    @classmethod
    def decode_input(cls, request_input: Any) -> Vector:
        return Vector([float(v) for v in request_input.data])


class Custom:
    name = "custom"

    def __init__(self, codecs: CodecRegistry) -> None:
        self.codecs = codecs

    @decode_args
    async def predict(self, v: Vector) -> Vector:
        return Vector([x * 2 for x in v.values])


async def test_codecs_come_from_the_models_registry() -> None:
    body = b'{"inputs":[{"name":"v","shape":[2],"datatype":"FP64","data":[1,2]}]}'
    registry = default_codecs()
    registry.register_input_codec(VectorCodec)
    response = await Custom(registry).predict(request(body))
    assert response.outputs[0].data == [2.0, 4.0]
    assert response.outputs[0].parameters == {"content_type": "vector"}
    # Another model, with the built-ins only, cannot use the codec.
    with pytest.raises(TypeError, match="Codec not found for input field with name 'v'"):
        await Custom(default_codecs()).predict(request(body))


class WrongOutput:
    name = "wrong"

    @decode_args
    async def predict(self, docs: list[str]) -> np.ndarray:
        return docs  # type: ignore[return-value]


async def test_an_output_that_does_not_match_the_annotation_is_a_model_bug() -> None:
    with pytest.raises(TypeError, match=r"Unexpected output value at position '0'"):
        await WrongOutput().predict(request(QUICKSTART))

"""Model files written for MLServer serve unchanged (``inferkit.compat``)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from inferkit import InferenceRequest, RequestInput, Server, errors
from inferkit.repository import ModelRepository

# The MLServer quickstart's model file, with spaCy swapped for a word-overlap score (spaCy's
# model cannot be downloaded here); every import is MLServer's.
SEED_MODEL = """
from mlserver.codecs import decode_args
from mlserver import MLModel
from mlserver.errors import InferenceError
from typing import List
import numpy as np
import pytest


class MyKulModel(MLModel):

    async def load(self):
        self.model = lambda text: set(text.lower().split())

    @decode_args
    async def predict(self, docs: List[str]) -> np.ndarray:
        if len(docs) != 2:
            raise InferenceError("Expected two documents")
        doc1 = self.model(docs[0])
        doc2 = self.model(docs[1])
        return np.array(len(doc1 & doc2) / len(doc1 | doc2))
"""


def docs(*texts: str) -> InferenceRequest:
    return InferenceRequest(
        inputs=[
            RequestInput(
                name="docs",
                shape=[len(texts), 1],
                datatype="BYTES",
                parameters={"content_type": "str"},
                data=list(texts),
            )
        ]
    )


async def test_the_seed_quickstart_model_file_serves_unchanged(tmp_path: Path) -> None:
    folder = tmp_path / "similarity_model"
    folder.mkdir()
    (folder / "my_model.py").write_text(SEED_MODEL)
    (folder / "model-settings.json").write_text(
        '{"name": "doc-sim-model", "implementation": "my_model.MyKulModel"}'
    )
    server = Server(repository=ModelRepository(folder))
    await server.start()
    assert [(i.name, i.state, i.reason) for i in await server.index()] == [
        ("doc-sim-model", "READY", "")
    ]
    response = await server.infer("doc-sim-model", docs("a b c", "a b d"))
    output = response.outputs[0]
    assert (output.name, output.datatype, output.shape) == ("output-0", "FP64", [1])
    assert np.asarray(output.data).tolist() == [0.5]
    # MLServer's InferenceError is a client error here too, with the model's own message.
    with pytest.raises(errors.InvalidRequest) as caught:
        await server.infer("doc-sim-model", docs("only one"))
    assert caught.value.message == "Expected two documents"


def test_import_inferkit_does_not_install_the_alias() -> None:
    code = "import sys, inferkit, inferkit.repository; print('mlserver' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


# -- the rest of MLServer's model-facing API (issue #14, parts 2 and 6) -------------------------

# A model file in MLServer's style using what MLServer models commonly reach for: `_settings`,
# `get_model_uri`, a registered custom codec, custom metrics, `MLServerError` with a status.
MLSERVER_IDIOMS = """
import mlserver
from mlserver import MLModel
from mlserver.codecs import InputCodec, register_input_codec
from mlserver.errors import MLServerError
from mlserver.logging import logger
from mlserver.types import InferenceRequest, InferenceResponse, ResponseOutput
from mlserver.utils import get_model_uri


@register_input_codec
class UpperCodec(InputCodec):
    ContentType = "upper"

    @classmethod
    def decode_input(cls, request_input):
        return [str(x).upper() for x in request_input.data]


class Idioms(MLModel):
    async def load(self):
        path = await get_model_uri(self._settings, wellknown_filenames=["weights.txt"])
        with open(path) as f:
            self.greeting = f.read().strip()
        self.uri = self._settings.parameters.uri
        mlserver.register("idiom_words", "Words per request")
        logger.info("loaded %s", path)

    async def predict(self, payload):
        if payload.inputs[0].name == "missing":
            raise MLServerError("No such thing", status_code=404)
        words = self.decode(payload.inputs[0])
        mlserver.log(idiom_words=len(words))
        text = [self.greeting, *words]
        return InferenceResponse(
            model_name=self.name,
            outputs=[{"name": "text", "shape": [len(text)], "datatype": "BYTES", "data": text}],
        )
"""

IDIOMS_SETTINGS = """{
    "name": "idioms",
    "implementation": "idioms.Idioms",
    "inputs": [{"name": "words", "datatype": "BYTES", "shape": [-1]}],
    "outputs": [{"name": "text", "datatype": "BYTES", "shape": [-1]}]
}"""


def idioms_folder(root: Path) -> Path:
    folder = root / "idioms"
    folder.mkdir(parents=True)
    (folder / "idioms.py").write_text(MLSERVER_IDIOMS)
    (folder / "model-settings.json").write_text(IDIOMS_SETTINGS)
    (folder / "weights.txt").write_text("hello\n")
    return folder


def words(*texts: str, name: str = "words") -> InferenceRequest:
    return InferenceRequest(
        inputs=[
            {
                "name": name,
                "shape": [len(texts)],
                "datatype": "BYTES",
                "parameters": {"content_type": "upper"},
                "data": list(texts),
            }
        ]
    )


async def test_a_model_file_using_mlservers_idioms_serves(tmp_path: Path) -> None:
    folder = idioms_folder(tmp_path)
    server = Server(repository=ModelRepository(folder))
    await server.start()
    assert [(i.name, i.state, i.reason) for i in await server.index()] == [("idioms", "READY", "")]
    response = await server.infer("idioms", words("a", "b"))
    assert response.outputs[0].data == ["hello", "A", "B"]
    with pytest.raises(errors.ModelNotFound) as caught:
        await server.infer("idioms", words("a", name="missing"))
    assert (caught.value.message, caught.value.code) == ("No such thing", "MODEL_NOT_FOUND")
    # mlserver.register / mlserver.log: a histogram of the model's own metrics.
    [family] = [s for s in server.metrics.collect() if s.name == "idiom_words"]
    assert (family.kind, family.documentation, family.labelnames) == (
        "histogram",
        "Words per request",
        ("model", "version"),
    )
    [(labels, sample)] = family.samples
    assert labels == ("idioms", "")
    assert (sample.count, sample.sum) == (1, 2.0)  # type: ignore[union-attr]


async def test_self_settings_inputs_and_outputs_are_mlservers(tmp_path: Path) -> None:
    from inferkit.compat.mlserver import MLModel
    from inferkit.settings_loader import load_model_settings

    settings = load_model_settings(idioms_folder(tmp_path) / "model-settings.json")
    model = MLModel(settings)
    assert model._settings is model.settings
    assert model._settings.parameters is not None
    assert model._settings.parameters.uri == str(tmp_path / "idioms")
    assert [t.name for t in model.inputs] == ["words"]
    assert [t.name for t in model.outputs] == ["text"]


@pytest.mark.parametrize(
    ("uri", "files", "expected"),
    [
        ("model.bin", ["model.bin"], "{folder}/model.bin"),  # relative to the model's folder
        (".", ["weights.txt", "model.json"], "{folder}/model.json"),  # first well-known name
        ("sub", ["sub/other.txt"], "{folder}/sub"),  # no well-known file: the folder itself
        ("{folder}/model.bin", ["model.bin"], "{folder}/model.bin"),  # absolute
        ("s3://bucket/model", [], "s3://bucket/model"),  # an allowed scheme, unchanged
    ],
)
async def test_get_model_uri_resolves_like_mlserver(
    tmp_path: Path, uri: str, files: list[str], expected: str
) -> None:
    from inferkit.compat.mlserver.utils import get_model_uri
    from inferkit.settings import ModelParameters, ModelSettings

    for name in files:
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text("x")
    settings = ModelSettings(
        name="m",
        folder=str(tmp_path),
        parameters=ModelParameters(uri=uri.format(folder=tmp_path)),
    )
    found = await get_model_uri(
        settings, wellknown_filenames=["model.json", "model.bin"], allowed_schemes=["s3"]
    )
    assert found == expected.format(folder=tmp_path)


@pytest.mark.parametrize(
    ("parameters", "message"),
    [
        (None, "Invalid URI specified for model m"),
        ({"uri": "gs://bucket/model"}, "Invalid URI specified for model m (gs://bucket/model)"),
        ({"uri": "nowhere"}, "Invalid URI specified for model m ({folder}/nowhere)"),
    ],
)
async def test_get_model_uri_raises_invalid_model_uri(
    tmp_path: Path, parameters: dict[str, str] | None, message: str
) -> None:
    import msgspec

    from inferkit.compat.mlserver.errors import InvalidModelURI
    from inferkit.compat.mlserver.utils import get_model_uri
    from inferkit.settings import ModelParameters, ModelSettings

    params = msgspec.convert(parameters, ModelParameters) if parameters else None
    settings = ModelSettings(name="m", folder=str(tmp_path), parameters=params)
    with pytest.raises(InvalidModelURI) as caught:
        await get_model_uri(settings)
    assert caught.value.message == message.format(folder=tmp_path)
    assert caught.value.code == "INVALID_REQUEST"


def test_mlserver_error_statuses_map_to_inferkit_errors_both_ways() -> None:
    from inferkit.compat.mlserver.errors import HTTP_STATUS_ERRORS, MLServerError
    from inferkit.transports.rest import status_for

    for status, kind in HTTP_STATUS_ERRORS.items():
        # The table agrees with REST's, and an MLServerError of that status is that error.
        assert status_for(kind("x")) == status
        error = MLServerError("x", status_code=status)
        assert (status_for(error), error.code, error.status_code) == (status, kind.code, status)
        assert isinstance(error, (MLServerError, kind))


@pytest.mark.parametrize(
    ("status", "http", "grpc", "code"),
    [
        (None, 400, "INVALID_ARGUMENT", "INVALID_REQUEST"),  # MLServer's default status is 400
        (404, 404, "NOT_FOUND", "MODEL_NOT_FOUND"),
        (401, 400, "INVALID_ARGUMENT", "INVALID_REQUEST"),  # no class of its own: by family
        (502, 500, "INTERNAL", "INTERNAL"),
    ],
)
def test_an_mlserver_error_subclass_keeps_its_class_and_gets_its_status(
    status: int | None, http: int, grpc: str, code: str
) -> None:
    from inferkit.compat.mlserver.errors import MLServerError
    from inferkit.transports.grpc import status_for as grpc_status_for
    from inferkit.transports.rest import status_for

    class NotMine(MLServerError):
        def __init__(self, msg: str) -> None:
            if status is None:
                super().__init__(msg)
            else:
                super().__init__(msg, status_code=status)

    error = NotMine("nope")
    assert isinstance(error, NotMine)
    assert type(error).__name__ == "NotMine"
    assert (status_for(error), grpc_status_for(error).name, error.code) == (http, grpc, code)
    assert error.message == "nope"


def test_declared_codecs_reach_only_the_models_of_their_module() -> None:
    import types as pytypes

    from inferkit.codecs import InputCodec, declared_codecs, default_codecs
    from inferkit.compat.mlserver import MLModel
    from inferkit.compat.mlserver.codecs import register_input_codec, register_request_codec

    module = pytypes.ModuleType("declaring_module")
    exec(  # a model module, as the repository loader would import it
        "class Declared(MLModel): pass\nclass Plain(InputCodec):\n    ContentType = 'plain'\n",
        {"MLModel": MLModel, "InputCodec": InputCodec, "__name__": module.__name__},
        module.__dict__,
    )

    class Shout(InputCodec):
        ContentType = "shout"

    class NoType(InputCodec):
        ContentType = ""

    assert register_input_codec(Shout) is Shout
    assert register_request_codec(NoType) is NoType  # no content type: ignored, as MLServer
    module.Shout = Shout  # type: ignore[attr-defined]
    module.NoType = NoType  # type: ignore[attr-defined]
    sys.modules[module.__name__] = module
    try:
        assert declared_codecs(module.Declared) == [Shout]
        server_codecs = default_codecs()
        model = module.Declared()
        model.codecs = server_codecs
        assert model.codecs.find_input_codec("shout") is Shout
        # The server's registry, other servers and other models are untouched.
        assert server_codecs.find_input_codec("shout") is None
        assert default_codecs().find_input_codec("shout") is None
        assert MLModel().codecs.find_input_codec("shout") is None
    finally:
        del sys.modules[module.__name__]


def test_mlserver_log_and_register_need_a_model_context() -> None:
    from inferkit.compat.mlserver import log, register

    with pytest.raises(LookupError, match="only inside a model's load"):
        log(x=1.0)
    with pytest.raises(LookupError):
        register("x", "an x")


def test_mlserver_logging_logger_is_named_mlserver() -> None:
    from inferkit.compat.mlserver.logging import logger

    assert logger.name == "mlserver"


def test_requests_and_responses_take_dicts_as_mlservers_pydantic_types_do() -> None:
    import msgspec

    from inferkit import InferenceResponse, RequestOutput, ResponseOutput

    array = np.arange(3)
    request = InferenceRequest(
        inputs=[
            RequestInput(name="a", shape=[1], datatype="INT32", data=[1]),
            {"name": "b", "shape": [3], "datatype": "INT64", "data": array, "parameters": {}},
        ],
        outputs=[{"name": "o", "parameters": {"content_type": "np"}}],
    )
    assert request.inputs[1] == RequestInput(
        name="b", shape=[3], datatype="INT64", data=array, parameters={}
    )
    assert request.inputs[1].data is array  # tensor data is kept, not copied
    assert request.outputs == [RequestOutput(name="o", parameters={"content_type": "np"})]
    response = InferenceResponse(
        model_name="m", outputs=[{"name": "o", "shape": [1], "datatype": "FP32", "data": [1.0]}]
    )
    assert response.outputs == [ResponseOutput(name="o", shape=[1], datatype="FP32", data=[1.0])]
    with pytest.raises(msgspec.ValidationError, match="missing required field `shape`"):
        InferenceRequest(inputs=[{"name": "x", "datatype": "FP32"}])


async def test_mlserver_log_works_in_a_models_own_predict_stream() -> None:
    from collections.abc import AsyncIterator

    from inferkit import InferenceResponse
    from inferkit.compat.mlserver import MLModel, log
    from inferkit.settings import ModelSettings

    class Streaming(MLModel):
        async def predict_stream(
            self, payloads: AsyncIterator[InferenceRequest]
        ) -> AsyncIterator[InferenceResponse]:
            async for _ in payloads:
                log(streamed=1.0)
                yield InferenceResponse(model_name=self.name, outputs=[])

    async def two() -> AsyncIterator[InferenceRequest]:
        for _ in range(2):
            yield docs("x")

    server = Server([Streaming(ModelSettings(name="streaming"))])
    await server.start()
    assert len([r async for r in server.infer_stream("streaming", two())]) == 2
    [family] = [s for s in server.metrics.collect() if s.name == "streamed"]
    assert family.samples[0][1].count == 2  # type: ignore[union-attr]
    with pytest.raises(LookupError):
        log(streamed=1.0)  # the context ended with the stream's steps

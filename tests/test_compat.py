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

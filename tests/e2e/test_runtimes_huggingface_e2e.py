"""The Hugging Face runtime behind the real ``inferkit start``, under MLServer's implementation
name: a tiny random BERT classifier made in the test (nothing is downloaded), served over REST
(httpx) and gRPC (tritonclient). Skipped without transformers and PyTorch (PyTorch is not in the
test extra: see docs/runtimes.md)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from harness import Running, inferkit_start

transformers = pytest.importorskip("transformers")
torch = pytest.importorskip("torch", reason="PyTorch is not installed (not in the test extra)")
triton = pytest.importorskip("tritonclient.grpc")

pytestmark = pytest.mark.e2e

WORDS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "the", "movie", "is", "good", "bad"]


def save_tiny_classifier(folder: Path) -> None:
    folder.mkdir(parents=True)
    vocab = folder.parent / "vocab.txt"
    vocab.write_text("\n".join(WORDS) + "\n")
    config = transformers.BertConfig(
        vocab_size=len(WORDS),
        hidden_size=8,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=16,
        max_position_embeddings=32,
        num_labels=2,
        id2label={0: "NEG", 1: "POS"},
        label2id={"NEG": 0, "POS": 1},
    )
    torch.manual_seed(1)
    transformers.BertForSequenceClassification(config).save_pretrained(str(folder))
    transformers.BertTokenizer(str(vocab)).save_pretrained(str(folder))


@pytest.fixture(scope="module")
def repository(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("hf-repo")
    (root / "settings.json").write_text("{}")
    save_tiny_classifier(root / "sentiment")
    settings = {
        "name": "sentiment",
        "implementation": "mlserver_huggingface.HuggingFaceRuntime",
        "parameters": {"extra": {"task": "text-classification", "intra_op_threads": 1}},
    }
    (root / "sentiment" / "model-settings.json").write_text(json.dumps(settings))
    return root


@pytest.fixture(scope="module")
def running(repository: Path) -> Iterator[Running]:
    with inferkit_start(repository) as server:
        yield server


@pytest.fixture(scope="module")
def expected(repository: Path) -> Any:
    pipeline = transformers.pipeline(
        "text-classification", model=str(repository / "sentiment"), device=-1
    )
    return pipeline("the movie is bad")[0]


def test_rest_infer_answers_the_pipelines_result_as_json(running: Running, expected: Any) -> None:
    body = {
        "inputs": [
            {"name": "args", "shape": [1], "datatype": "BYTES", "data": ["the movie is bad"]}
        ]
    }
    with httpx.Client(base_url=running.url, timeout=60) as http:
        response = http.post("/v2/models/sentiment/infer", json=body)
    assert response.status_code == 200, response.text
    [output] = response.json()["outputs"]
    assert (output["name"], output["datatype"], output["shape"]) == ("output", "BYTES", [1, 1])
    assert output["parameters"] == {"content_type": "hg_jsonlist"}
    [item] = [json.loads(element) for element in output["data"]]
    assert item["label"] == expected["label"]
    assert item["score"] == pytest.approx(expected["score"])


def test_grpc_infer(running: Running, expected: Any) -> None:
    tensor = triton.InferInput("args", [1], "BYTES")
    tensor.set_data_from_numpy(np.array([b"the movie is bad"], dtype=object))
    client = triton.InferenceServerClient(running.grpc)
    try:
        result = client.infer("sentiment", [tensor])
    finally:
        client.close()
    [[element]] = result.as_numpy("output").tolist()
    item = json.loads(element)
    assert item["label"] == expected["label"]
    assert item["score"] == pytest.approx(expected["score"])

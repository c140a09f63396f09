"""The Hugging Face runtime on a tiny random BERT classifier made in the test from a config and
``save_pretrained`` (nothing is downloaded). Needs transformers and PyTorch; the tests that load
a pipeline are skipped without them (PyTorch is not in the test extra: see docs/runtimes.md)."""

from __future__ import annotations

import asyncio
import json
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from inferkit import (
    InferenceRequest,
    ModelParameters,
    ModelSettings,
    RequestInput,
    Server,
    Settings,
    errors,
)
from inferkit.runtimes.huggingface import HuggingFaceRuntime

WORDS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "the", "movie", "is", "good", "bad"]

# The load error's text, which clients get only with expose_load_errors (the default hides it).
EXPOSED = Settings(expose_load_errors=True)


def tiny_classifier(folder: Path) -> Path:
    """A random 1-layer BERT with labels NEG / POS and its WordPiece tokenizer, saved locally."""
    transformers = pytest.importorskip("transformers")
    torch = pytest.importorskip("torch", reason="PyTorch is not installed (not in the test extra)")
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "vocab.txt").write_text("\n".join(WORDS) + "\n")
    tokenizer = transformers.BertTokenizer(str(folder / "vocab.txt"))
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
    torch.manual_seed(0)
    transformers.BertForSequenceClassification(config).save_pretrained(str(folder))
    tokenizer.save_pretrained(str(folder))
    (folder / "vocab.txt").unlink(missing_ok=True)  # saved again by the tokenizer if needed
    return folder


def reference(folder: Path, *texts: str) -> Any:
    transformers = pytest.importorskip("transformers")
    pipeline = transformers.pipeline("text-classification", model=str(folder), device=-1)
    return [pipeline(text) for text in texts]


def settings(uri: str | Path | None = None, **extra: Any) -> ModelSettings:
    return ModelSettings(
        name="sentiment",
        implementation="mlserver_huggingface.HuggingFaceRuntime",
        parameters=ModelParameters(uri=None if uri is None else str(uri), extra=extra),
    )


def text(name: str, *values: str, **parameters: Any) -> RequestInput:
    return RequestInput(
        name=name,
        shape=[len(values)],
        datatype="BYTES",
        data=list(values),
        parameters=parameters or None,
    )


@asynccontextmanager
async def serving(model_settings: ModelSettings) -> AsyncIterator[HuggingFaceRuntime]:
    model = HuggingFaceRuntime(model_settings)
    await model.load()
    try:
        yield model
    finally:
        await model.unload()


def decoded(response: Any) -> list[Any]:
    [output] = response.outputs
    assert (output.name, output.datatype) == ("output", "BYTES")
    assert output.parameters == {"content_type": "hg_jsonlist"}
    return [json.loads(item) for item in np.asarray(output.data).ravel()]


async def test_args_are_the_positional_text_and_the_answer_is_json(tmp_path: Path) -> None:
    folder = tiny_classifier(tmp_path / "model")
    async with serving(settings(folder, task="text-classification")) as model:
        response = await model.predict(InferenceRequest(inputs=[text("args", "the movie is good")]))
    [expected] = reference(folder, "the movie is good")
    assert response.outputs[0].shape == [1, 1]
    [item] = decoded(response)
    assert item["label"] == expected[0]["label"]
    assert item["score"] == pytest.approx(expected[0]["score"])


async def test_named_inputs_are_keyword_arguments(tmp_path: Path) -> None:
    folder = tiny_classifier(tmp_path / "model")
    async with serving(settings(folder, task="text-classification")) as model:
        response = await model.predict(InferenceRequest(inputs=[text("inputs", "good", "bad")]))
    expected = reference(folder, "good", "bad")
    assert response.outputs[0].shape == [2, 1]
    assert [item["label"] for item in decoded(response)] == [e[0]["label"] for e in expected]


async def test_json_inputs_carry_numbers(tmp_path: Path) -> None:
    folder = tiny_classifier(tmp_path / "model")
    async with serving(settings(folder, task="text-classification")) as model:
        response = await model.predict(
            InferenceRequest(
                inputs=[text("args", "good"), text("top_k", "2", content_type="hg_json")]
            )
        )
    [first, second] = decoded(response)
    assert {first["label"], second["label"]} == {"NEG", "POS"}


async def test_without_a_uri_the_model_is_its_own_folder(tmp_path: Path) -> None:
    folder = tiny_classifier(tmp_path / "model")
    model_settings = settings(task="text-classification")
    model_settings.folder = str(folder)
    async with serving(model_settings) as model:
        response = await model.predict(InferenceRequest(inputs=[text("args", "bad")]))
    assert len(decoded(response)) == 1


async def test_pretrained_model_names_a_folder_relative_to_the_models(tmp_path: Path) -> None:
    tiny_classifier(tmp_path / "weights")
    model_settings = settings(task="text-classification", pretrained_model="weights")
    model_settings.folder = str(tmp_path)
    async with serving(model_settings) as model:
        response = await model.predict(InferenceRequest(inputs=[text("args", "good")]))
    assert len(decoded(response)) == 1


async def test_intra_op_threads_sets_torchs_threads_on_the_models_thread(
    tmp_path: Path,
) -> None:
    folder = tiny_classifier(tmp_path / "model")
    import torch

    async with serving(settings(folder, task="text-classification", intra_op_threads=1)) as model:
        assert model._executor is not None
        threads = await asyncio.get_running_loop().run_in_executor(
            model._executor, torch.get_num_threads
        )
    assert threads == 1


async def test_arguments_the_pipeline_refuses_are_invalid_request(tmp_path: Path) -> None:
    folder = tiny_classifier(tmp_path / "model")
    async with serving(settings(folder, task="text-classification")) as model:
        with pytest.raises(errors.InvalidRequest) as caught:
            await model.predict(InferenceRequest(inputs=[text("no_such_argument", "x")]))
    assert caught.value.message.startswith("The text-classification pipeline refused the inputs")


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        ({}, 'parameters.extra.task is required: the pipeline task, e.g. "text-classification"'),
        ({"task": "summarise"}, "parameters.extra.task 'summarise' is not a transformers"),
    ],
)
async def test_a_missing_or_unknown_task_fails_the_load(
    tmp_path: Path, extra: dict[str, Any], message: str
) -> None:
    pytest.importorskip("transformers")
    pytest.importorskip("torch", reason="PyTorch is not installed (not in the test extra)")
    with pytest.raises(errors.ModelLoadError) as caught:
        await HuggingFaceRuntime(settings(tmp_path, **extra)).load()
    assert caught.value.message.startswith(message)


async def test_missing_torch_fails_the_model_with_what_to_install(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    pytest.importorskip("transformers")
    monkeypatch.setitem(sys.modules, "torch", None)
    server = Server([settings(tmp_path, task="text-classification")], settings=EXPOSED)
    async with server:
        [item] = await server.index()
    assert item.state == "FAILED"
    assert item.reason.startswith("PyTorch is not installed")
    assert "pip install torch --index-url https://download.pytorch.org/whl/cpu" in item.reason


async def test_missing_transformers_fails_the_model_with_the_extra_to_install(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Runs with or without transformers installed: the library is hidden either way.
    monkeypatch.setitem(sys.modules, "transformers", None)
    server = Server([settings(tmp_path, task="text-classification")], settings=EXPOSED)
    async with server:
        [item] = await server.index()
    assert item.state == "FAILED"
    assert item.reason == (
        "Hugging Face transformers is not installed (no module named 'transformers'):"
        " pip install 'inferkit[huggingface]'"
    )

"""Toy models shared by the tests (importable because pytest puts tests/ on the path)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import numpy as np

from inferkit import InferenceRequest, InferenceResponse, Model, ModelSettings, ResponseOutput
from inferkit.codecs import StringCodec, decode_tensor, encode_tensor
from inferkit.settings import ModelParameters


class SumModel(Model):
    """Sums each input tensor along its last axis; ``output`` is FP64 for FP inputs."""

    async def predict(self, payload: InferenceRequest) -> InferenceResponse:
        arrays = [decode_tensor(t, f"$.inputs[{i}]") for i, t in enumerate(payload.inputs)]
        total = np.sum([a.sum(axis=-1) for a in arrays], axis=0)
        return InferenceResponse(model_name=self.name, outputs=[encode_tensor("total", total)])


def sum_model(name: str = "sum", version: str | None = None, **settings: Any) -> SumModel:
    """A ``SumModel`` with the given name and version."""
    params = ModelParameters(version=version) if version else None
    return SumModel(ModelSettings(name=name, parameters=params, **settings))


class FailingModel(Model):
    """Raises an unexpected exception carrying a secret in its text."""

    async def predict(self, payload: InferenceRequest) -> InferenceResponse:
        raise RuntimeError("secret-token-123 leaked?")


class HangingModel(Model):
    """Never answers (until cancelled)."""

    async def predict(self, payload: InferenceRequest) -> InferenceResponse:
        await asyncio.Event().wait()
        raise AssertionError("unreachable")


class BrokenLoadModel(Model):
    """Fails to load."""

    async def load(self) -> bool:
        raise FileNotFoundError("weights.bin is missing")


def sum_model_folder(folder: Path, name: str, version: str | None = None) -> None:
    """A model folder of a repository whose ``model-settings.json`` serves ``SumModel``."""
    settings: dict[str, Any] = {"name": name, "implementation": "toymodels.SumModel"}
    if version:
        settings["parameters"] = {"version": version}
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "model-settings.json").write_text(json.dumps(settings))


def named(cls: type[Model], name: str, version: str | None = None, **settings: Any) -> Model:
    """An instance of ``cls`` with the given name and version."""
    params = ModelParameters(version=version) if version else None
    return cls(ModelSettings(name=name, parameters=params, **settings))


class WordStream(Model):
    """Streams one response per word of each request's BYTES input (its own ``predict_stream``).

    A word ``boom`` makes it raise (with a secret in the text); ``predict`` answers the words
    as one response.
    """

    async def predict(self, payload: InferenceRequest) -> InferenceResponse:
        return InferenceResponse(model_name=self.name, outputs=[_words(_text(payload))])

    async def predict_stream(
        self, payloads: AsyncIterator[InferenceRequest]
    ) -> AsyncIterator[InferenceResponse]:
        async for payload in payloads:
            for word in _text(payload).split():
                if word == "boom":
                    raise RuntimeError("secret-token-456 in the stream")
                yield InferenceResponse(model_name=self.name, outputs=[_words(word)])


def _text(payload: InferenceRequest) -> str:
    return " ".join(StringCodec.decode_input(payload.inputs[0]))


def _words(text: str) -> ResponseOutput:
    return StringCodec.encode_output("word", [text])


def text_request(text: str, id: str | None = None) -> InferenceRequest:
    """A request with one BYTES input ``text`` holding ``text``."""
    return InferenceRequest(id=id, inputs=[StringCodec.encode_input("text", [text])])

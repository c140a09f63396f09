"""Toy models shared by the tests (importable because pytest puts tests/ on the path)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import numpy as np

from inferkit import (
    InferenceRequest,
    InferenceResponse,
    Model,
    ModelSettings,
    RequestInput,
    ResponseOutput,
)
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


class EchoModel(Model):
    """Returns every input as an output of the same name, through the codecs both ways."""

    async def predict(self, payload: InferenceRequest) -> InferenceResponse:
        outputs = [
            encode_tensor(t.name, decode_tensor(t, f"$.inputs[{i}]"))
            for i, t in enumerate(payload.inputs)
        ]
        return InferenceResponse(model_name=self.name, outputs=outputs)


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


class BatchRecorder(Model):
    """A model for batching: ``y`` is its FP64 input ``x`` doubled and ``batch`` (INT64, one per
    row) the rows of the batch it ran in. Records the first column of each batch it is given,
    takes ``cost`` seconds of the loop's clock per call, raises ``fail`` if set and answers
    ``rows_out`` rows if set (a model that cannot batch)."""

    def __init__(self, settings: ModelSettings, cost: float = 0.0) -> None:
        super().__init__(settings)
        self.cost = cost
        self.batches: list[list[float]] = []
        self.fail: Exception | None = None
        self.unloaded_after: int | None = None
        self.rows_out: int | None = None

    async def predict(self, payload: InferenceRequest) -> InferenceResponse:
        x = payload.inputs[0]
        data = np.asarray(x.data, dtype=np.float64).reshape(x.shape)
        self.batches.append([float(v) for v in data[:, 0]])
        if self.cost:
            await asyncio.sleep(self.cost)
        if self.fail is not None:
            raise self.fail
        rows = len(data) if self.rows_out is None else self.rows_out
        return InferenceResponse(
            model_name=self.name,
            parameters={"seen": len(self.batches)},
            outputs=[
                encode_tensor("y", data[:rows] * 2),
                encode_tensor("batch", np.full(rows, len(data), dtype=np.int64)),
            ],
        )

    async def unload(self) -> bool:
        self.unloaded_after = len(self.batches)
        return True


def rows_request(*rows: float, width: int = 2, id: str | None = None) -> InferenceRequest:
    """A request whose FP64 input ``x`` has ``len(rows)`` rows of ``width`` columns; row i is
    all ``rows[i]``."""
    data = [value for value in rows for _ in range(width)]
    return InferenceRequest(
        id=id,
        inputs=[RequestInput(name="x", shape=[len(rows), width], datatype="FP64", data=data)],
    )

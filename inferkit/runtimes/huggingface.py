"""Hugging Face ``transformers`` pipelines (MLServer's ``mlserver_huggingface.HuggingFaceRuntime``).

``parameters.extra`` configures the pipeline with MLServer's keys: ``task`` (required, e.g.
``text-classification``; ``task_suffix`` is appended for ``translation``), ``pretrained_model``
and ``pretrained_tokenizer`` (a folder, relative to the model's, or a Hub name), ``device``
(``-1``: the CPU), ``model_kwargs``, and ``inter_op_threads`` / ``intra_op_threads`` (PyTorch's
thread counts, which are the process's). Without ``pretrained_model`` the model is the local
folder named by ``parameters.uri``, or the model's own folder (where ``config.json`` is).

Requests are MLServer's: each input is a keyword argument of the pipeline call, named as the
input, decoded as a list of strings (or by the input's ``content_type``); the input ``args``
holds positional arguments, one per element. The answer is one ``BYTES`` output, ``output``,
whose elements are the pipeline's results as JSON (content type ``hg_jsonlist``).
"""

from __future__ import annotations

import json
from functools import partial
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from ..codecs.base import content_type_of
from ..codecs.selection import decode_input
from ..codecs.strings import StringCodec
from ..errors import InferkitError, InvalidRequest, ModelLoadError, ModelNotReady
from ..types import InferenceRequest, InferenceResponse, RequestInput, ResponseOutput
from .base import Runtime, _describe, _run, artefact_path, require

__all__ = ["HuggingFaceRuntime"]

#: The output's name and content type (MLServer's ``HuggingfaceListJSONCodec``).
OUTPUT_NAME = "output"
JSON_LIST_CONTENT_TYPE = "hg_jsonlist"
JSON_CONTENT_TYPE = "hg_json"
#: The input whose elements are the pipeline's positional arguments.
ARGS_INPUT = "args"


class HuggingFaceRuntime(Runtime):
    """Serves a ``transformers.pipeline`` built from a local model folder."""

    library: ClassVar[str] = "Hugging Face transformers"
    requires: ClassVar[tuple[str, ...]] = ("transformers",)
    extra: ClassVar[str] = "huggingface"
    artefact_names: ClassVar[tuple[str, ...]] = ("config.json",)

    def _load(self) -> Any:
        require("transformers", self.library, self.extra)
        try:
            import torch  # noqa: F401
        except ImportError as exc:
            raise ModelLoadError(
                f"PyTorch is not installed ({exc}): transformers pipelines need it. Install a"
                " build for your machine, e.g. the CPU one: pip install torch --index-url"
                " https://download.pytorch.org/whl/cpu"
            ) from exc
        extra = self.settings.parameters.extra if self.settings.parameters else {}
        task = _task(extra)
        model = self._location(extra.get("pretrained_model"))
        tokenizer = model
        if extra.get("pretrained_tokenizer") is not None:
            tokenizer = self._location(extra["pretrained_tokenizer"])
        _set_threads(extra)
        import transformers

        # Untyped on purpose: its overloads are keyed on literal task names.
        pipeline: Any = transformers.pipeline
        options: dict[str, Any] = {"device": extra.get("device", -1)}
        if extra.get("model_kwargs") is not None:
            options["model_kwargs"] = extra["model_kwargs"]
        try:
            return pipeline(task, model=model, tokenizer=tokenizer, **options)
        except InferkitError:
            raise
        except Exception as exc:
            raise ModelLoadError(
                f"Cannot load the {task} pipeline from {model}: {_describe(exc)}"
            ) from exc

    def _location(self, name: Any) -> str:
        """A folder relative to the model's, else a Hub name; without one, the model's folder."""
        if name is None:
            return str(artefact_path(self.settings, self.artefact_names).parent)
        if not isinstance(name, str) or not name:
            raise ModelLoadError(f"A model or tokenizer name must be a string, got {name!r}")
        local = Path(self.settings.folder or ".", name)
        return str(local) if local.exists() else name

    def _predict_fn(self, estimator: Any) -> str:
        return OUTPUT_NAME  # one pipeline call, one output

    async def predict(self, payload: InferenceRequest) -> InferenceResponse:
        """Call the pipeline with the request's inputs as arguments; answer its results."""
        pipeline, executor = self.estimator, self._executor
        if pipeline is None or executor is None:
            raise ModelNotReady(f"Model '{self.name}' is not loaded")
        args: list[Any] = []
        kwargs: dict[str, Any] = {}
        default = content_type_of(payload)
        for i, request_input in enumerate(payload.inputs):
            value = self._decode(request_input, default, f"$.inputs[{i}]")
            if request_input.name == ARGS_INPUT:
                args = list(value)
            else:
                kwargs[request_input.name] = value
        result = await _run(executor, partial(_call, pipeline, args, kwargs))
        return InferenceResponse(
            model_name=self.name, model_version=self.version, outputs=[_encode(result)]
        )

    def _decode(self, request_input: RequestInput, default: str | None, where: str) -> Any:
        content_type = content_type_of(request_input) or default
        if content_type in (JSON_CONTENT_TYPE, JSON_LIST_CONTENT_TYPE):
            items = [_json_item(item, where) for item in np.asarray(request_input.data).ravel()]
            return items[0] if content_type == JSON_CONTENT_TYPE and len(items) == 1 else items
        if content_type is not None and content_type != StringCodec.ContentType:
            request_input.parameters = {
                **(request_input.parameters or {}),
                "content_type": content_type,
            }
        return decode_input(
            self.codecs, request_input, self.settings.inputs, StringCodec, where=where
        )


def _task(extra: dict[str, Any]) -> str:
    task = extra.get("task")
    if not isinstance(task, str) or not task:
        raise ModelLoadError(
            'parameters.extra.task is required: the pipeline task, e.g. "text-classification"'
        )
    from transformers.pipelines import SUPPORTED_TASKS

    if task not in SUPPORTED_TASKS and not task.startswith("translation"):
        raise ModelLoadError(
            f"parameters.extra.task {task!r} is not a transformers pipeline task; expected one"
            f" of {', '.join(sorted(SUPPORTED_TASKS))}"
        )
    suffix = extra.get("task_suffix") or ""
    return f"{task}{suffix}" if task == "translation" else task


def _set_threads(extra: dict[str, Any]) -> None:
    import torch

    for key, setter in (
        ("intra_op_threads", torch.set_num_threads),
        ("inter_op_threads", torch.set_num_interop_threads),
    ):
        value = extra.get(key)
        if value is None:
            continue
        if type(value) is not int or value < 1:
            raise ModelLoadError(f"parameters.extra.{key} must be an integer >= 1, got {value!r}")
        try:
            setter(value)
        except RuntimeError as exc:
            # PyTorch fixes the inter-op pool once it has run anything in the process.
            raise ModelLoadError(f"Cannot set parameters.extra.{key}: {exc}") from exc


def _call(pipeline: Any, args: list[Any], kwargs: dict[str, Any]) -> Any:
    try:
        return pipeline(*args, **kwargs)
    except (TypeError, ValueError, KeyError) as exc:
        # The arguments do not fit the task (a missing input, an unknown keyword).
        raise InvalidRequest(f"The {pipeline.task} pipeline refused the inputs: {exc}") from None


def _json_item(item: Any, where: str) -> Any:
    try:
        return json.loads(item)
    except (TypeError, ValueError):
        raise InvalidRequest("Expected JSON text", where=f"{where}.data") from None


def _encode(result: Any) -> ResponseOutput:
    items = result if isinstance(result, list) else [result]
    data = np.empty(len(items), dtype=object)
    for i, item in enumerate(items):
        data[i] = json.dumps(item, default=_plain).encode()
    return ResponseOutput(
        name=OUTPUT_NAME,
        shape=[len(items), 1],
        datatype="BYTES",
        parameters={"content_type": JSON_LIST_CONTENT_TYPE},
        data=data.reshape(len(items), 1),
    )


def _plain(value: Any) -> Any:
    # numpy numbers and arrays, and tensors (``tolist``), as JSON numbers and lists.
    if hasattr(value, "tolist"):
        return value.tolist()
    raise TypeError(f"{type(value).__name__} is not JSON serialisable")

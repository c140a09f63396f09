"""What the built-in runtimes share: the artefact, the library, the outputs, the compute thread.

A runtime serves a trained artefact (``model.joblib``, ``model.json``, ...) through its library's
own methods: the request output ``predict_proba`` calls ``estimator.predict_proba(X)``. The rules
are MLServer 1.7's (``mlserver_sklearn``, ``mlserver_xgboost``, ``mlserver_lightgbm``), so their
repositories serve unchanged:

* the artefact is ``parameters.uri``; a folder is searched for the runtime's well-known names;
* the outputs are the request's ``outputs``, else ``parameters.extra.predict_fn``, else
  ``predict``; each output is the method of that name, encoded with the ``np`` codec;
* the features are the request decoded by its request codec (``pd``: a DataFrame), by default
  the single input tensor as a numpy array.

Where MLServer answers a 500 we answer a 400 that says what to change: an output the runtime does
not offer, ``predict_proba`` on a regressor, a row of the wrong width. A ``predict_fn`` the model
cannot serve fails the load instead of every request.

The library is imported by :meth:`Runtime.load`, never at import time, so ``inferkit`` installs
without it; a missing library fails the load with the extra to install.

Every load and predict runs on one thread owned by the model instance, never on the event loop.
One thread (not the loop's shared pool) because XGBoost and LightGBM parallelise with OpenMP: each
OS thread that calls them gets its own team of spinning workers, and two teams on the same cores
stall each other for tens of milliseconds per call.
"""

from __future__ import annotations

import asyncio
import importlib
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from functools import partial
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from .. import codecs as _codecs
from ..errors import (
    InferkitError,
    InvalidRequest,
    InvalidShape,
    ModelLoadError,
    ModelNotReady,
    OutputNotFound,
)
from ..model import Model
from ..settings import ModelSettings
from ..types import InferenceRequest, InferenceResponse, RequestOutput, ResponseOutput

__all__ = ["Runtime", "artefact_path", "require"]

#: The ``parameters.extra`` key naming the default output (MLServer's, for scikit-learn).
PREDICT_FN_KEY = "predict_fn"
DEFAULT_OUTPUT = "predict"


class Runtime(Model):
    """A model served from a trained artefact by the methods of its library.

    Subclasses set the class attributes and implement :meth:`read_artefact`; they may refine
    :meth:`describe` and :meth:`feature_count`.
    """

    #: The library's name, for messages ("scikit-learn").
    library: ClassVar[str] = ""
    #: Modules the runtime imports, checked before the artefact is read.
    requires: ClassVar[tuple[str, ...]] = ()
    #: The inferkit extra that installs them (``pip install 'inferkit[extra]'``).
    extra: ClassVar[str] = ""
    #: File names looked for when ``parameters.uri`` is a folder, in order.
    artefact_names: ClassVar[tuple[str, ...]] = ()
    #: Request output names, each the name of the estimator method that computes it.
    supported_outputs: ClassVar[tuple[str, ...]] = (DEFAULT_OUTPUT,)

    def __init__(self, settings: ModelSettings | None = None) -> None:
        super().__init__(settings)
        #: The loaded estimator (None until :meth:`load` succeeds).
        self.estimator: Any = None
        self._default_output = DEFAULT_OUTPUT
        self._executor: ThreadPoolExecutor | None = None

    # -- lifecycle ------------------------------------------------------------------------

    async def load(self) -> bool:
        """Import the library and read the artefact, off the event loop."""
        executor = ThreadPoolExecutor(1, thread_name_prefix=f"inferkit-{self.name or 'model'}")
        try:
            estimator = await _run(executor, self._load)
            default = self._predict_fn(estimator)
        except BaseException:
            executor.shutdown(wait=False)
            raise
        self.estimator, self._default_output = estimator, default
        self._executor, old = executor, self._executor
        if old is not None:
            old.shutdown(wait=False)
        return True

    def _load(self) -> Any:
        for module in self.requires:
            require(module, self.library, self.extra)
        path = artefact_path(self.settings, self.artefact_names)
        try:
            return self.read_artefact(path)
        except InferkitError:
            raise
        except Exception as exc:
            raise ModelLoadError(
                f"Cannot load {self.library} model from {path}: {_describe(exc)}"
            ) from exc

    def read_artefact(self, path: Path) -> Any:
        """Read the estimator from ``path`` (called on the model's thread)."""
        raise NotImplementedError

    async def unload(self) -> bool:
        """Drop the estimator and stop the model's thread (no request is in flight by now)."""
        self.estimator = None
        if self._executor is not None:
            self._executor.shutdown(wait=False)
            self._executor = None
        return True

    def _predict_fn(self, estimator: Any) -> str:
        """The configured default output, checked now so a typo fails the load, not requests."""
        parameters = self.settings.parameters
        name = parameters.extra.get(PREDICT_FN_KEY) if parameters else None
        if name is None:
            # Not checked: a transformer-only pipeline serves ``transform`` and has no predict.
            return DEFAULT_OUTPUT
        where = f"parameters.extra.{PREDICT_FN_KEY}"
        if name not in self.supported_outputs:
            raise ModelLoadError(
                f"{where} must be {_one_of(self.supported_outputs)}, got {name!r}",
                model=self.name,
                version=self.version,
            )
        if not hasattr(estimator, name):
            raise ModelLoadError(
                f"{where} is {name!r}, but {self.describe(estimator)} models do not support it",
                model=self.name,
                version=self.version,
            )
        return str(name)

    # -- inference ------------------------------------------------------------------------

    async def predict(self, payload: InferenceRequest) -> InferenceResponse:
        """Call the estimator method of every requested output on the decoded features."""
        estimator, executor = self.estimator, self._executor
        if estimator is None or executor is None:
            raise ModelNotReady(f"Model '{self.name}' is not loaded")
        wanted = self._requested_outputs(payload, estimator)
        features = self._features(payload, estimator)
        names = [output.name for output in wanted]
        results = await _run(executor, partial(self.compute, estimator, names, features))
        return InferenceResponse(
            model_name=self.name,
            model_version=self.version,
            outputs=self._encode(wanted, results),
        )

    def _requested_outputs(self, payload: InferenceRequest, estimator: Any) -> list[RequestOutput]:
        if not payload.outputs:
            return [RequestOutput(name=self._default_output)]
        for i, output in enumerate(payload.outputs):
            where = f"$.outputs[{i}].name"
            if output.name not in self.supported_outputs:
                raise OutputNotFound(
                    f"{type(self).__name__} only supports {_all_of(self.supported_outputs)} as"
                    f" outputs ('{output.name}' was received)",
                    where=where,
                )
            if not hasattr(estimator, output.name):
                raise OutputNotFound(
                    f"{self.describe(estimator)} models do not support '{output.name}'",
                    where=where,
                )
        return payload.outputs

    def _features(self, payload: InferenceRequest, estimator: Any) -> Any:
        parameters = self.settings.parameters
        features = _codecs.decode_request(
            self.codecs,
            payload,
            self.settings.inputs,
            _codecs.NumpyRequestCodec,
            content_type=parameters.content_type if parameters else None,
        )
        expected = self.feature_count(estimator)
        if expected is not None and isinstance(features, np.ndarray):
            shape = list(features.shape)
            if len(shape) != 2 or shape[1] != expected:
                name = payload.inputs[0].name if payload.inputs else ""
                raise InvalidShape(
                    f"Expected shape [-1, {expected}] for input '{name}', got {shape}",
                    where="$.inputs[0].shape",
                )
        return features

    def _encode(self, wanted: list[RequestOutput], results: list[Any]) -> list[ResponseOutput]:
        outputs = []
        for request_output, result in zip(wanted, results, strict=True):
            if hasattr(result, "toarray"):  # a scipy sparse matrix, e.g. a OneHotEncoder's
                result = result.toarray()
            if _codecs.PandasCodec.can_encode(result):
                # A DataFrame is a whole response (one output per column), as in MLServer.
                if len(wanted) > 1:
                    raise InvalidRequest(
                        f"'{request_output.name}' returns a DataFrame, which cannot be encoded"
                        f" beside other outputs ({[o.name for o in wanted]} were requested)",
                        where="$.outputs",
                    )
                return _codecs.PandasCodec.encode_outputs(result)
            outputs.append(self.encode(result, request_output, default_codec=_codecs.NumpyCodec))
        return outputs

    # -- hooks ----------------------------------------------------------------------------

    def compute(self, estimator: Any, names: list[str], features: Any) -> list[Any]:
        """Each output's method on the features; runs on the model's thread, one at a time."""
        return [getattr(estimator, name)(features) for name in names]

    def describe(self, estimator: Any) -> str:
        """The estimator's kind, for messages ("SVR models do not support ...")."""
        return type(estimator).__name__

    def feature_count(self, estimator: Any) -> int | None:
        """Features per row the estimator expects, if it says (checked before predicting)."""
        count = getattr(estimator, "n_features_in_", None)
        return count if isinstance(count, int) and count > 0 else None


def require(module: str, library: str, extra: str) -> None:
    """Import ``module`` or fail the load with the extra that installs it."""
    try:
        importlib.import_module(module)
    except ModuleNotFoundError as exc:
        raise ModelLoadError(
            f"{library} is not installed (no module named {exc.name or module!r}):"
            f" pip install 'inferkit[{extra}]'"
        ) from exc
    except ImportError as exc:  # installed but broken (e.g. built against another numpy)
        raise ModelLoadError(f"Cannot import {library}: {exc}") from exc


def artefact_path(settings: ModelSettings, names: Sequence[str]) -> Path:
    """The artefact file: ``parameters.uri``, or the first of ``names`` in that folder.

    A missing ``uri`` means the model's folder, as in MLServer (the settings loader sets it).
    """
    uri = (settings.parameters.uri if settings.parameters else None) or settings.folder
    if not uri:
        raise ModelLoadError(
            "No model URI: set parameters.uri in model-settings.json",
            model=settings.name,
            version=settings.version,
        )
    if "://" in uri:
        raise ModelLoadError(
            f"Cannot read {uri}: only local paths are supported",
            model=settings.name,
            version=settings.version,
        )
    path = Path(settings.folder or ".", uri)  # an absolute uri replaces the folder
    if path.is_file():
        return path
    if path.is_dir():
        for name in names:
            if (path / name).is_file():
                return path / name
        raise ModelLoadError(
            f"No model artefact in {path}: expected {_one_of(names)}",
            model=settings.name,
            version=settings.version,
        )
    raise ModelLoadError(
        f"Model artefact {path} does not exist", model=settings.name, version=settings.version
    )


async def _run(executor: ThreadPoolExecutor, fn: Any) -> Any:
    return await asyncio.get_running_loop().run_in_executor(executor, fn)


def _describe(exc: BaseException) -> str:
    text = str(exc)
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def _quoted(names: Sequence[str]) -> list[str]:
    return [f"'{name}'" for name in names]


def _all_of(names: Sequence[str]) -> str:
    """``'a'``, ``'a' and 'b'``, ``'a', 'b' and 'c'``."""
    quoted = _quoted(names)
    return quoted[0] if len(quoted) == 1 else f"{', '.join(quoted[:-1])} and {quoted[-1]}"


def _one_of(names: Sequence[str]) -> str:
    quoted = _quoted(names)
    return quoted[0] if len(quoted) == 1 else f"one of {', '.join(quoted)}"

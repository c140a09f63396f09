"""inferkit: serve ML models over the Open Inference Protocol (KServe V2).

The package root exports only the sans-I/O core; transports live in ``inferkit.transports.*``
(``create_rest_app``, ``create_grpc_service``, ``create_metrics_app``) so their frameworks stay
optional and ``import inferkit`` stays light.
"""

from __future__ import annotations

from . import errors, events, types
from ._version import __version__
from .codecs import decode_args
from .errors import InferkitError
from .handlers import custom_handler
from .model import Model, ModelProtocol
from .server import Server
from .settings import ModelParameters, ModelSettings, Settings
from .types import (
    InferenceRequest,
    InferenceResponse,
    MetadataModelResponse,
    MetadataServerResponse,
    MetadataTensor,
    RequestInput,
    RequestOutput,
    ResponseOutput,
)

#: MLServer's name for the model base class, so ported model files read naturally.
MLModel = Model

__all__ = [
    "InferenceRequest",
    "InferenceResponse",
    "InferkitError",
    "MLModel",
    "MetadataModelResponse",
    "MetadataServerResponse",
    "MetadataTensor",
    "Model",
    "ModelParameters",
    "ModelProtocol",
    "ModelSettings",
    "RequestInput",
    "RequestOutput",
    "ResponseOutput",
    "Server",
    "Settings",
    "__version__",
    "custom_handler",
    "decode_args",
    "errors",
    "events",
    "types",
]

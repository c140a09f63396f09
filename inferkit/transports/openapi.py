"""OpenAPI 3 description of the V2 REST API, and a Swagger UI page to try it.

The schemas come from the msgspec Structs themselves (``msgspec.json.schema_components``), so
the document cannot drift from what the server decodes. Swagger UI's assets are served from the
``swagger-ui-bundle`` package: the page works with no internet access (no CDN).
"""

from __future__ import annotations

from functools import cache
from typing import Any

import msgspec
from starlette.requests import Request
from starlette.responses import HTMLResponse, Response
from starlette.routing import BaseRoute, Mount, Route
from starlette.staticfiles import StaticFiles

from .._version import __version__
from ..statistics import ModelStatisticsResponse
from ..types import (
    InferenceRequest,
    InferenceResponse,
    MetadataModelResponse,
    MetadataServerResponse,
    RepositoryIndexRequest,
    RepositoryIndexResponseItem,
)

__all__ = ["docs_routes", "openapi_document"]

_REF = "#/components/schemas/{name}"

_PAGE = """<!DOCTYPE html>
<html lang="en">
<head>
  <meta charset="utf-8">
  <title>inferkit - V2 inference API</title>
  <link rel="stylesheet" href="{root}/v2/docs/static/swagger-ui.css">
</head>
<body>
  <div id="swagger-ui"></div>
  <script src="{root}/v2/docs/static/swagger-ui-bundle.js"></script>
  <script>
    window.ui = SwaggerUIBundle({{url: "{root}/v2/docs/openapi.json", dom_id: "#swagger-ui"}});
  </script>
</body>
</html>
"""

_ERROR = {
    "type": "object",
    "properties": {"error": {"type": "string"}, "code": {"type": "string"}},
    "required": ["error", "code"],
}


def _ref(cls: type[Any]) -> dict[str, str]:
    return {"$ref": _REF.format(name=cls.__name__)}


def _json(schema: dict[str, Any], description: str = "OK") -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def _operation(summary: str, ok: dict[str, Any], body: type[Any] | None = None) -> dict[str, Any]:
    op: dict[str, Any] = {
        "summary": summary,
        "responses": {
            "200": ok,
            "400": _json(_ERROR, "Invalid request or model not ready"),
            "404": _json(_ERROR, "Model not found"),
            "500": _json(_ERROR, "Internal error"),
        },
    }
    if body is not None:
        op["requestBody"] = {"content": {"application/json": {"schema": _ref(body)}}}
    return op


def _paths() -> dict[str, Any]:
    empty = {"description": "True (400 when false)"}
    meta = _json(_ref(MetadataModelResponse))
    infer = _operation("Run inference", _json(_ref(InferenceResponse)), InferenceRequest)
    generate = _operation(
        "Run inference (MLServer's alias)", _json(_ref(InferenceResponse)), InferenceRequest
    )
    events = {
        "description": "One Server-Sent Event per response: `data: {InferenceResponse}`; "
        "an error after the first is `event: error` with `{error, code}`",
        "content": {"text/event-stream": {"schema": {"type": "string"}}},
    }
    stream = _operation("Stream inference responses", events, InferenceRequest)
    streams = {
        f"{base}/{action}": {"post": op}
        for base in ("/v2/models/{model_name}", "/v2/models/{model_name}/versions/{model_version}")
        for action, op in (
            ("generate", generate),
            ("infer_stream", stream),
            ("generate_stream", stream),
        )
    }
    index = _json({"type": "array", "items": _ref(RepositoryIndexResponseItem)})
    stats = _json(_ref(ModelStatisticsResponse))
    return {
        "/v2/health/live": {"get": _operation("Server live", empty)},
        "/v2/health/ready": {"get": _operation("Server ready", empty)},
        "/v2": {"get": _operation("Server metadata", _json(_ref(MetadataServerResponse)))},
        "/v2/models/{model_name}": {"get": _operation("Model metadata", meta)},
        "/v2/models/{model_name}/versions/{model_version}": {
            "get": _operation("Model version metadata", meta)
        },
        "/v2/models/{model_name}/ready": {"get": _operation("Model ready", empty)},
        "/v2/models/{model_name}/versions/{model_version}/ready": {
            "get": _operation("Model version ready", empty)
        },
        "/v2/models/{model_name}/infer": {"post": infer},
        "/v2/models/{model_name}/versions/{model_version}/infer": {"post": infer},
        **streams,
        # Triton's statistics extension.
        "/v2/models/stats": {"get": _operation("Statistics of every model", stats)},
        "/v2/models/{model_name}/stats": {"get": _operation("Model statistics", stats)},
        "/v2/models/{model_name}/versions/{model_version}/stats": {
            "get": _operation("Model version statistics", stats)
        },
        "/v2/repository/index": {
            "post": _operation("Repository index", index, RepositoryIndexRequest)
        },
        "/v2/repository/models/{model_name}/load": {"post": _operation("Load a model", empty)},
        "/v2/repository/models/{model_name}/unload": {"post": _operation("Unload a model", empty)},
    }


def _with_parameters(paths: dict[str, Any]) -> dict[str, Any]:
    for path, item in paths.items():
        names = [p.strip("{}") for p in path.split("/") if p.startswith("{")]
        if names:
            item["parameters"] = [
                {"name": n, "in": "path", "required": True, "schema": {"type": "string"}}
                for n in names
            ]
    return paths


@cache
def openapi_document() -> bytes:
    """The OpenAPI 3.0 document of the V2 REST API, as JSON bytes (built once)."""
    types = (
        InferenceRequest,
        InferenceResponse,
        MetadataServerResponse,
        MetadataModelResponse,
        RepositoryIndexRequest,
        RepositoryIndexResponseItem,
        ModelStatisticsResponse,
    )
    _, components = msgspec.json.schema_components(types, ref_template=_REF)
    document = {
        "openapi": "3.0.3",
        "info": {"title": "Open Inference Protocol (V2) - inferkit", "version": __version__},
        "paths": _with_parameters(_paths()),
        "components": {"schemas": components},
    }
    return msgspec.json.encode(document)


async def _openapi(request: Request) -> Response:
    return Response(openapi_document(), media_type="application/json")


async def _page(request: Request) -> Response:
    return HTMLResponse(_PAGE.format(root=request.scope.get("root_path", "")))


def docs_routes() -> list[BaseRoute]:
    """``/v2/docs`` (Swagger UI), its assets, and ``/v2/docs/openapi.json``."""
    routes: list[BaseRoute] = [
        Route("/v2/docs/openapi.json", _openapi, methods=["GET"]),
        Route("/v2/docs", _page, methods=["GET"]),
    ]
    try:
        import swagger_ui_bundle
    except ImportError:  # the page then loads without its assets; the JSON still serves
        return routes
    routes.append(
        Mount("/v2/docs/static", app=StaticFiles(directory=swagger_ui_bundle.swagger_ui_path))
    )
    return routes

"""Fuzzing every REST route from our own OpenAPI document (issue #16), in-process.

schemathesis reads ``/v2/docs/openapi.json`` from the ASGI app and generates requests for
every operation in it: valid ones, and (its "negative" mode) ones that break the schema:
wrong types, missing fields, bodies that are no JSON. The models behave (an echo and a sum),
so any 5xx or traceback is the server's fault, never a model's. Examples are bounded per
operation so the whole module stays in seconds.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import schemathesis
from hypothesis import HealthCheck, settings
from starlette.applications import Starlette
from toymodels import EchoModel, named, sum_model

from inferkit import Server, Settings
from inferkit.transports.rest import create_rest_app

#: Examples per operation and generation mode: enough to reach every branch of the decoders
#: in a few seconds, and fixed (derandomized) so a failure reproduces.
EXAMPLES = 8

#: Routes whose ``model_name`` is a real model: the requests then reach the model and codecs.
MODEL = "echo"


def _app() -> Starlette:
    """The REST app over behaving models, which starts its server in its lifespan
    (schemathesis runs the app's lifespan in the event loop it calls the app in)."""
    server = Server(
        [named(EchoModel, MODEL), sum_model()], settings=Settings(max_request_size=1_000_000)
    )
    app = create_rest_app(server)

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        await server.start()
        yield
        await server.stop()

    app.router.lifespan_context = lifespan
    return app


# Loaded when the module is collected: schemathesis parametrizes the test from the document.
# (Its lazy `from_fixture` loader does not run under pytest 9.)
schema = schemathesis.openapi.from_asgi("/v2/docs/openapi.json", _app())


@schema.parametrize()
@settings(
    max_examples=EXAMPLES,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=list(HealthCheck),
)
def test_no_request_gets_a_5xx_or_a_traceback(case: Any) -> None:
    params = case.path_parameters
    if params and "model_name" in params and "/repository/" not in case.path:
        # Aimed at a model that exists, so the bodies reach the decoders, codecs and model
        # (load and unload keep made-up names: unloading the model would end the run's use).
        params["model_name"] = MODEL
    response = case.call()
    assert response.status_code < 500, (case.method, case.formatted_path, response.text)
    assert "Traceback" not in response.text
    if response.status_code >= 400 and response.headers.get("content-type") == ["application/json"]:
        assert set(response.json()) == {"error", "code"}

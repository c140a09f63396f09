"""The Prometheus app in-process: exact increments and labels, custom metrics, REST metrics."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import httpx
import msgspec
import pytest
from prometheus_client import CollectorRegistry
from prometheus_client.parser import text_string_to_metric_families
from starlette.applications import Starlette
from toymodels import BrokenLoadModel, FailingModel, WordStream, named, sum_model, text_request

from inferkit import InferenceRequest, InferenceResponse, Model, Server, Settings
from inferkit.runner import http_app
from inferkit.transports.metrics import create_metrics_app, instrument_rest_app, metrics_service
from inferkit.transports.rest import create_rest_app
from inferkit.types import encode_json

BODY = {"inputs": [{"name": "x", "shape": [1, 3], "datatype": "FP32", "data": [1, 2, 3]}]}
BAD_SHAPE = {"inputs": [{"name": "x", "shape": [9], "datatype": "FP32", "data": [1, 2, 3]}]}
Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def parse(text: str) -> Samples:
    """``{(sample name, labels): value}`` of a Prometheus text exposition."""
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def key(name: str, **labels: str) -> tuple[str, frozenset[tuple[str, str]]]:
    return name, frozenset(labels.items())


class CountingModel(Model):
    """Records custom metrics: a counter by label, a gauge and a histogram with buckets."""

    async def load(self) -> bool:
        self.calls = self.metrics.counter("toy_calls", "Calls to predict", ["parity"])
        self.last = self.metrics.gauge("toy_last_size", "Size of the last input")
        self.sizes = self.metrics.histogram("toy_input_size", "Input sizes", buckets=[2, 4])
        self.count = 0
        return True

    async def predict(self, payload: InferenceRequest) -> InferenceResponse:
        self.count += 1
        size = payload.inputs[0].shape[0] if payload.inputs else 0
        self.calls.labels("odd" if self.count % 2 else "even").inc()
        self.last.set(size)
        self.sizes.observe(size)
        return InferenceResponse(model_name=self.name, outputs=[])


class Stack:
    """A started server with its REST app (instrumented) and its metrics app."""

    def __init__(self, server: Server, rest: httpx.AsyncClient, metrics: httpx.AsyncClient):
        self.server, self.rest, self.metrics = server, rest, metrics

    async def scrape(self, path: str = "/metrics") -> Samples:
        response = await self.metrics.get(path)
        assert response.status_code == 200
        return parse(response.text)


@asynccontextmanager
async def stack(*models: Any, **settings: Any) -> AsyncIterator[Stack]:
    server = Server(models or [sum_model()], settings=Settings(**settings))
    await server.start()
    rest = instrument_rest_app(create_rest_app(server), server)
    metrics = create_metrics_app(server)
    async with (
        httpx.AsyncClient(transport=httpx.ASGITransport(app=rest), base_url="http://t") as r,
        httpx.AsyncClient(transport=httpx.ASGITransport(app=metrics), base_url="http://t") as m,
    ):
        yield Stack(server, r, m)


async def test_inference_metrics_exact_increments_and_labels() -> None:
    models = [sum_model(), sum_model("vsum", version="1"), named(FailingModel, "bad")]
    async with stack(*models) as s:
        for _ in range(3):
            await s.rest.post("/v2/models/sum/infer", json=BODY)
        await s.rest.post("/v2/models/vsum/versions/1/infer", json=BODY)
        await s.rest.post("/v2/models/sum/infer", json=BAD_SHAPE)
        await s.rest.post("/v2/models/bad/infer", json=BODY)
        await s.rest.post("/v2/models/nope/infer", json=BODY)  # no such model: no model series
        got = await s.scrape()
    total = "inferkit_inference_requests_total"
    assert {k: v for k, v in got.items() if k[0] == total} == {
        key(total, model="sum", version="", code="OK"): 3,
        key(total, model="sum", version="", code="INVALID_SHAPE"): 1,
        key(total, model="vsum", version="1", code="OK"): 1,
        key(total, model="bad", version="", code="INFERENCE_FAILED"): 1,
    }
    duration = "inferkit_inference_duration_seconds_count"
    compute = "inferkit_inference_compute_duration_seconds_count"
    assert got[key(duration, model="sum", version="")] == 4  # every answered request
    assert got[key(compute, model="sum", version="")] == 3  # only successful ones
    assert got[key(compute, model="vsum", version="1")] == 1
    assert key(compute, model="bad", version="") not in got
    assert not any("None" in dict(labels).values() for _, labels in got)


async def test_stream_responses_are_counted_per_model() -> None:
    async with stack(named(WordStream, "words"), sum_model()) as s:
        body = encode_json(text_request("one two three"))
        await s.rest.post("/v2/models/words/infer_stream", content=body)
        await s.rest.post("/v2/models/words/infer", content=body)  # not a stream: not counted
        await s.rest.post("/v2/models/sum/generate_stream", json=BODY)
        got = await s.scrape()
    responses = "inferkit_stream_responses_total"
    assert {k: v for k, v in got.items() if k[0] == responses} == {
        key(responses, model="words", version=""): 3,
        key(responses, model="sum", version=""): 1,
    }
    total = "inferkit_inference_requests_total"
    assert got[key(total, model="words", version="", code="OK")] == 2  # the stream, the call


async def test_rest_request_metrics_by_route_template() -> None:
    async with stack() as s:
        await s.rest.post("/v2/models/sum/infer", json=BODY)
        await s.rest.post("/v2/models/other/infer", json=BODY)
        await s.rest.get("/v2/health/ready")
        await s.rest.get("/no/such/path")
        got = await s.scrape()
    total = "inferkit_rest_requests_total"
    infer = "/v2/models/{name}/infer"
    assert {k: v for k, v in got.items() if k[0] == total} == {
        key(total, route=infer, method="POST", status="200"): 1,
        key(total, route=infer, method="POST", status="404"): 1,
        key(total, route="/v2/health/ready", method="GET", status="200"): 1,
        key(total, route="unmatched", method="GET", status="404"): 1,
    }
    count = "inferkit_rest_request_duration_seconds_count"
    assert got[key(count, route=infer, method="POST", status="200")] == 1
    assert got[key("inferkit_requests_in_flight", transport="rest")] == 0


async def test_in_flight_counts_requests_being_answered() -> None:
    entered, release = asyncio.Event(), asyncio.Event()

    class Slow(Model):
        async def predict(self, payload: InferenceRequest) -> InferenceResponse:
            entered.set()
            await release.wait()
            return InferenceResponse(model_name=self.name, outputs=[])

    async with stack(named(Slow, "slow")) as s:
        pending = asyncio.create_task(s.rest.post("/v2/models/slow/infer", json={"inputs": []}))
        await entered.wait()
        during = await s.scrape()
        release.set()
        await pending
        after = await s.scrape()
    assert during[key("inferkit_requests_in_flight", transport="rest")] == 1
    assert after[key("inferkit_requests_in_flight", transport="rest")] == 0


async def test_custom_metrics_from_model_code() -> None:
    async with stack(named(CountingModel, "toy", version="2"), sum_model()) as s:
        for size in (1, 3, 5):
            body = {
                "inputs": [{"name": "x", "shape": [size], "datatype": "FP32", "data": [0] * size}]
            }
            assert (await s.rest.post("/v2/models/toy/infer", json=body)).status_code == 200
        got = await s.scrape()
    labels = {"model": "toy", "version": "2"}
    assert got[key("toy_calls_total", parity="odd", **labels)] == 2
    assert got[key("toy_calls_total", parity="even", **labels)] == 1
    assert got[key("toy_last_size", **labels)] == 5
    assert [
        got[key("toy_input_size_bucket", le=le, **labels)] for le in ("2.0", "4.0", "+Inf")
    ] == [1, 2, 3]
    assert got[key("toy_input_size_sum", **labels)] == 9
    assert got[key("toy_input_size_count", **labels)] == 3


async def test_two_servers_do_not_mix() -> None:
    async with stack() as one, stack() as two:
        await one.rest.post("/v2/models/sum/infer", json=BODY)
        await one.rest.post("/v2/models/sum/infer", json=BODY)
        await two.rest.post("/v2/models/sum/infer", json=BODY)
        first, second = await one.scrape(), await two.scrape()
    ok = key("inferkit_inference_requests_total", model="sum", version="", code="OK")
    assert (first[ok], second[ok]) == (2, 1)


async def test_models_by_state_and_process_metrics() -> None:
    async with stack(sum_model(), sum_model("other"), named(BrokenLoadModel, "broken")) as s:
        await s.server.unload("other")
        got = await s.scrape()
    states = {
        dict(labels)["state"]: v for (name, labels), v in got.items() if name == "inferkit_models"
    }
    assert states == {
        "READY": 1,
        "UNAVAILABLE": 1,
        "FAILED": 1,
        "LOADING": 0,
        "UNLOADING": 0,
        "UNKNOWN": 0,
    }
    assert any(name.startswith("process_") for name, _ in got)  # the process collector


async def test_endpoint_setting_own_registry_and_openmetrics() -> None:
    server = Server([sum_model()], settings=Settings(metrics_endpoint="/custom/metrics"))
    await server.start()
    registry = CollectorRegistry()
    app = create_metrics_app(server, registry)
    await server.infer("sum", msgspec.convert(BODY, InferenceRequest))
    labels = {"model": "sum", "version": "", "code": "OK"}
    assert registry.get_sample_value("inferkit_inference_requests_total", labels) == 1
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://t"
    ) as http:
        assert (await http.get("/metrics")).status_code == 404
        plain = await http.get("/custom/metrics")
        assert plain.headers["content-type"].startswith("text/plain; version=0.0.4")
        open_metrics = await http.get(
            "/custom/metrics", headers={"Accept": "application/openmetrics-text; version=1.0.0"}
        )
    assert open_metrics.headers["content-type"].startswith("application/openmetrics-text")
    assert open_metrics.text.endswith("# EOF\n")


async def test_metrics_on_the_http_port() -> None:
    server = Server([sum_model()])
    await server.start()
    app = create_rest_app(server)
    app.routes.extend(create_metrics_app(server).routes)
    assert isinstance(app, Starlette)
    transport = httpx.ASGITransport(app=instrument_rest_app(app, server))
    async with httpx.AsyncClient(transport=transport, base_url="http://t") as http:
        await http.post("/v2/models/sum/infer", json=BODY)
        got = parse((await http.get("/metrics")).text)
    assert got[key("inferkit_inference_requests_total", model="sum", version="", code="OK")] == 1


@pytest.mark.parametrize(
    "settings",
    [
        Settings(metrics_endpoint=None),
        Settings(metrics_endpoint=""),
        Settings(metrics_on_http_port=True),
        Settings(metrics_port=0),
    ],
    ids=["no-endpoint", "empty-endpoint", "on-http-port", "no-port"],
)
async def test_metrics_service_only_waits_when_it_has_nothing_to_serve(settings: Settings) -> None:
    stop = asyncio.Event()
    service = asyncio.create_task(metrics_service(Server(settings=settings), settings, stop))
    await asyncio.sleep(0)  # one turn of the loop: it must be waiting, not returned
    assert not service.done()
    stop.set()
    await service


@pytest.mark.parametrize("on_http_port", [False, True])
async def test_http_app_is_the_rest_api_with_its_request_metrics(on_http_port: bool) -> None:
    # What `inferkit start` serves on its HTTP port and what an embedding service mounts.
    server = Server([sum_model()], settings=Settings(metrics_on_http_port=on_http_port))
    await server.start()
    transport = httpx.ASGITransport(app=http_app(server))
    async with httpx.AsyncClient(transport=transport, base_url="http://t") as http:
        assert (await http.post("/v2/models/sum/infer", json=BODY)).status_code == 200
        scrape = await http.get("/metrics")
    await server.stop()
    counted = server.metrics.collect()
    requests = {s.name: s for s in counted}["inferkit_rest_requests"]  # "_total" on export
    assert dict(requests.samples)[("/v2/models/{name}/infer", "POST", "200")] == 1
    if on_http_port:
        got = parse(scrape.text)
        assert (
            got[key("inferkit_inference_requests_total", model="sum", version="", code="OK")] == 1
        )
    else:
        assert scrape.status_code == 404


# -- MLServer's names (metrics_compat = "mlserver") ---------------------------------------------

MLSERVER_PREFIXES = ("model_infer_request_", "rest_server_", "grpc_server_", "batch_request_queue")
V2_SERVICE = "inference.GRPCInferenceService"


def named_like(got: Samples, name: str) -> Samples:
    return {k: v for k, v in got.items() if k[0] == name}


async def grpc_calls(server: Server) -> None:
    """Two ModelInfer to sum, one to an unknown model, ServerLive and a stream of two."""
    import proto_convert
    from grpclib.exceptions import GRPCError
    from grpclib.testing import ChannelFor

    from inferkit.transports.grpc import create_grpc_service
    from inferkit.transports.grpc._generated import inference as pb

    request = msgspec.convert(BODY, InferenceRequest)
    infer = proto_convert.request_to_proto(request, "sum")
    async with ChannelFor(create_grpc_service(server)) as channel:
        stub = pb.GrpcInferenceServiceStub(channel)
        await stub.model_infer(infer)
        await stub.model_infer(infer)
        with pytest.raises(GRPCError):
            await stub.model_infer(proto_convert.request_to_proto(request, "nope"))
        await stub.server_live(pb.ServerLiveRequest())
        [_ async for _ in stub.model_stream_infer([infer, infer])]


async def test_mlserver_names_and_labels_after_rest_and_grpc_calls() -> None:
    models = [sum_model(), sum_model("vsum", version="1"), named(FailingModel, "bad")]
    async with stack(*models, metrics_compat="mlserver") as s:
        for _ in range(3):
            await s.rest.post("/v2/models/sum/infer", json=BODY)
        await s.rest.post("/v2/models/vsum/versions/1/infer", json=BODY)
        await s.rest.post("/v2/models/sum/infer", json=BAD_SHAPE)
        await s.rest.post("/v2/models/bad/infer", json=BODY)
        await s.rest.get("/v2/models/sum/ready")
        await s.rest.get("/v2/health/ready")  # skipped, as MLServer does
        await s.rest.get("/no/such/path")  # no route: in progress only
        await grpc_calls(s.server)
        got = await s.scrape()
        text = (await s.metrics.get("/metrics")).text

    success, failure = "model_infer_request_success_total", "model_infer_request_failure_total"
    # 3 REST, 2 gRPC, 2 stream messages; the unknown model is not counted.
    assert named_like(got, success) == {
        key(success, model="sum", version="None"): 7,
        key(success, model="vsum", version="1"): 1,
    }
    assert named_like(got, failure) == {
        key(failure, model="sum", version="None"): 1,
        key(failure, model="bad", version="None"): 1,
    }
    duration = "model_infer_request_duration_count"
    assert got[key(duration, model="sum", version="None")] == 8
    assert "# TYPE model_infer_request_duration summary" in text
    assert "# TYPE model_infer_request_success_total counter" in text  # as MLServer shows it

    app = {"app_name": "mlserver"}
    rest = "rest_server_requests_total"
    infer = "/v2/models/{model_name}/infer"
    versioned = "/v2/models/{model_name}/versions/{model_version}/infer"
    assert named_like(got, rest) == {
        key(rest, method="POST", path=infer, status_code="200", **app): 3,
        key(rest, method="POST", path=infer, status_code="400", **app): 1,
        key(rest, method="POST", path=infer, status_code="500", **app): 1,
        key(rest, method="POST", path=versioned, status_code="200", **app): 1,
        key(rest, method="GET", path="/v2/models/{model_name}/ready", status_code="200", **app): 1,
    }
    latency = "rest_server_request_duration_seconds_count"
    assert got[key(latency, method="POST", path=infer, status_code="200", **app)] == 3
    bucket = "rest_server_request_duration_seconds_bucket"
    assert key(bucket, method="POST", path=infer, status_code="200", le="0.005", **app) in got
    progress = "rest_server_requests_in_progress"
    assert named_like(got, progress) == {
        key(progress, method="POST", **app): 0,
        key(progress, method="GET", **app): 0,
    }

    unary = {"grpc_type": "UNARY", "grpc_service": V2_SERVICE}
    started, handled = "grpc_server_started_total", "grpc_server_handled_total"
    # The stream (BIDI_STREAMING) is neither started nor handled, as in py-grpc-prometheus.
    assert named_like(got, started) == {
        key(started, grpc_method="ModelInfer", **unary): 3,
        key(started, grpc_method="ServerLive", **unary): 1,
    }
    assert named_like(got, handled) == {
        key(handled, grpc_method="ModelInfer", grpc_code="OK", **unary): 2,
        key(handled, grpc_method="ModelInfer", grpc_code="NOT_FOUND", **unary): 1,
        key(handled, grpc_method="ServerLive", grpc_code="OK", **unary): 1,
    }
    handling = "grpc_server_handling_seconds_count"
    assert got[key(handling, grpc_method="ModelInfer", **unary)] == 3

    # Also, not instead: inferkit's own names are still there.
    total = "inferkit_inference_requests_total"
    assert got[key(total, model="sum", version="", code="OK")] == 7


async def test_mlserver_rest_metrics_take_the_prefix_setting() -> None:
    settings = {"metrics_compat": "mlserver", "metrics_rest_server_prefix": "edge"}
    async with stack(**settings) as s:
        await s.rest.post("/v2/models/sum/infer", json=BODY)
        got = await s.scrape()
    labels = {"path": "/v2/models/{model_name}/infer", "status_code": "200"}
    assert got[key("edge_requests_total", method="POST", app_name="mlserver", **labels)] == 1
    assert not any(name.startswith("rest_server_") for name, _ in got)


async def test_mlserver_batch_request_queue_counts_each_batched_request() -> None:
    batching = sum_model("batched", max_batch_size=4, max_batch_time=0.5)
    async with stack(batching, metrics_compat="mlserver") as s:
        await asyncio.gather(
            *(s.rest.post("/v2/models/batched/infer", json=BODY) for _ in range(4))
        )
        got = await s.scrape()
    queue = "batch_request_queue_count"
    assert got[key(queue, model_name="batched", model_version="")] == 4


async def test_default_mode_exports_no_mlserver_names() -> None:
    async with stack() as s:
        await s.rest.post("/v2/models/sum/infer", json=BODY)
        await grpc_calls(s.server)
        got = await s.scrape()
    assert not [name for name, _ in got if name.startswith(MLSERVER_PREFIXES)]
    assert got[key("inferkit_inference_requests_total", model="sum", version="", code="OK")] == 5


def test_metrics_compat_from_the_environment(tmp_path: Any) -> None:
    from inferkit.settings_loader import load_settings

    assert load_settings(tmp_path, {}).metrics_compat == "inferkit"
    environ = {"MLSERVER_METRICS_COMPAT": "mlserver"}
    assert load_settings(tmp_path, environ).metrics_compat == "mlserver"

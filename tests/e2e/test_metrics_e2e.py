"""The real ``inferkit start``: /metrics after REST and gRPC calls, statistics through
tritonclient, logs."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
import tritonclient.grpc as triton_grpc
import tritonclient.http as triton
from harness import Running, inferkit_start, write_repository
from prometheus_client.parser import text_string_to_metric_families
from tritonclient.utils import InferenceServerException

pytestmark = pytest.mark.e2e

COUNTING_MODEL = '''
from inferkit import InferenceRequest, InferenceResponse, Model


class Counting(Model):
    """Counts its calls in a custom metric; answers nothing."""

    async def load(self) -> bool:
        self.calls = self.metrics.counter("e2e_calls", "Calls to predict", ["kind"])
        return True

    async def predict(self, payload: InferenceRequest) -> InferenceResponse:
        self.calls.labels("any").inc()
        return InferenceResponse(model_name=self.name, outputs=[])
'''

MODELS: dict[str, dict[str, Any]] = {
    "echo": {"name": "echo", "implementation": "model.Echo"},
    "boom": {"name": "boom", "implementation": "model.Boom"},
    "v1": {"name": "versioned", "implementation": "model.Echo", "parameters": {"version": "v1"}},
    "counting": {"name": "counting", "implementation": "counting.Counting"},
    "broken": {"name": "broken", "implementation": "model.DoesNotExist"},
}
BODY = {"inputs": [{"name": "x", "shape": [2, 1], "datatype": "INT32", "data": [1, 2]}]}
Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def repository(root: Path, **settings: object) -> Path:
    write_repository(root, MODELS, **settings)
    (root / "counting" / "counting.py").write_text(COUNTING_MODEL)
    return root


@pytest.fixture(scope="module")
def running(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Running]:
    with inferkit_start(repository(tmp_path_factory.mktemp("repo"))) as server:
        yield server


def scrape(url: str) -> Samples:
    response = httpx.get(url, timeout=10)
    assert response.status_code == 200
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(response.text)
        for sample in family.samples
    }


def key(name: str, **labels: str) -> tuple[str, frozenset[tuple[str, str]]]:
    return name, frozenset(labels.items())


def delta(before: Samples, after: Samples, name: str, **labels: str) -> float:
    return after.get(key(name, **labels), 0.0) - before.get(key(name, **labels), 0.0)


def test_metrics_count_what_rest_calls_caused(running: Running) -> None:
    metrics = f"http://127.0.0.1:{running.metrics_port}/metrics"
    before = scrape(metrics)
    with httpx.Client(base_url=running.url, timeout=10) as http:
        for _ in range(3):
            assert http.post("/v2/models/echo/infer", json=BODY).status_code == 200
        assert http.post("/v2/models/versioned/versions/v1/infer", json=BODY).status_code == 200
        assert http.post("/v2/models/boom/infer", json=BODY).status_code == 500
        assert http.post("/v2/models/counting/infer", json=BODY).status_code == 200
        assert http.post("/v2/models/counting/infer", json=BODY).status_code == 200
    after = scrape(metrics)
    requests = "inferkit_inference_requests_total"
    assert delta(before, after, requests, model="echo", version="", code="OK") == 3
    assert delta(before, after, requests, model="versioned", version="v1", code="OK") == 1
    assert delta(before, after, requests, model="boom", version="", code="INFERENCE_FAILED") == 1
    compute = "inferkit_inference_compute_duration_seconds_count"
    assert delta(before, after, compute, model="echo", version="") == 3
    rest = "inferkit_rest_requests_total"
    infer, versioned = "/v2/models/{name}/infer", "/v2/models/{name}/versions/{version}/infer"
    assert delta(before, after, rest, route=infer, method="POST", status="200") == 5
    assert delta(before, after, rest, route=infer, method="POST", status="500") == 1
    assert delta(before, after, rest, route=versioned, method="POST", status="200") == 1
    assert delta(before, after, "e2e_calls_total", model="counting", version="", kind="any") == 2
    assert after[key("inferkit_models", state="READY")] == 4
    assert after[key("inferkit_models", state="FAILED")] == 1
    assert after[key("inferkit_requests_in_flight", transport="rest")] == 0
    assert any(name == "process_resident_memory_bytes" for name, _ in after)


def test_metrics_count_what_grpc_calls_caused(running: Running) -> None:
    metrics = f"http://127.0.0.1:{running.metrics_port}/metrics"
    tensor = triton_grpc.InferInput("x", [2, 1], "INT32")
    tensor.set_data_from_numpy(np.array([[1], [2]], dtype=np.int32))
    client = triton_grpc.InferenceServerClient(running.grpc)
    try:
        before = scrape(metrics)
        for _ in range(2):
            client.infer("echo", [tensor])
        client.infer("versioned", [tensor], model_version="v1")
        with pytest.raises(InferenceServerException, match="Model 'nope' not found"):
            client.infer("nope", [tensor])
        with pytest.raises(InferenceServerException, match="failed to run inference"):
            client.infer("boom", [tensor])
        after = scrape(metrics)
    finally:
        client.close()
    grpc = "inferkit_grpc_requests_total"
    assert delta(before, after, grpc, method="ModelInfer", code="OK") == 3
    assert delta(before, after, grpc, method="ModelInfer", code="NOT_FOUND") == 1
    assert delta(before, after, grpc, method="ModelInfer", code="INTERNAL") == 1
    duration = "inferkit_grpc_request_duration_seconds_count"
    assert delta(before, after, duration, method="ModelInfer", code="OK") == 3
    assert after[key("inferkit_requests_in_flight", transport="grpc")] == 0
    requests = "inferkit_inference_requests_total"
    assert delta(before, after, requests, model="echo", version="", code="OK") == 2
    assert delta(before, after, requests, model="versioned", version="v1", code="OK") == 1
    assert delta(before, after, requests, model="boom", version="", code="INFERENCE_FAILED") == 1
    compute = "inferkit_inference_compute_duration_seconds_count"
    assert delta(before, after, compute, model="versioned", version="v1") == 1
    # A model that does not exist gets no series of its own (names from clients are unbounded).
    assert not [labels for _, labels in after if ("model", "nope") in labels]


def test_tritonclient_reads_statistics_after_inference(running: Running) -> None:
    client = triton.InferenceServerClient(f"127.0.0.1:{running.http_port}")
    try:
        assert "statistics" in client.get_server_metadata()["extensions"]
        before = client.get_inference_statistics("versioned", "v1")["model_stats"][0]
        tensor = triton.InferInput("x", [4, 1], "FP32")
        tensor.set_data_from_numpy(np.ones((4, 1), dtype=np.float32))
        client.infer("versioned", [tensor], model_version="v1")
        stats = client.get_inference_statistics("versioned", "v1")["model_stats"]
        everything = client.get_inference_statistics()["model_stats"]
    finally:
        client.close()
    (after,) = stats
    assert (after["name"], after["version"]) == ("versioned", "v1")
    assert after["inference_count"] - before["inference_count"] == 4  # the batch's elements
    assert after["execution_count"] - before["execution_count"] == 1
    success = after["inference_stats"]["success"]
    assert success["count"] - before["inference_stats"]["success"]["count"] == 1
    assert success["ns"] > before["inference_stats"]["success"]["ns"]
    assert after["last_inference"] >= before["last_inference"] and after["last_inference"] > 0
    assert {4} <= {batch["batch_size"] for batch in after["batch_stats"]}
    assert {(m["name"], m["version"]) for m in everything} == {
        ("echo", ""),
        ("boom", ""),
        ("versioned", "v1"),
        ("counting", ""),
    }


def test_metrics_on_the_http_port_and_json_logs(tmp_path: Path) -> None:
    root = repository(tmp_path, metrics_on_http_port=True, use_structured_logging=True)
    with inferkit_start(root) as server:
        with httpx.Client(base_url=server.url, timeout=10) as http:
            body = {**BODY, "id": "req-42"}
            assert http.post("/v2/models/echo/infer", json=body).status_code == 200
            got = scrape(f"{server.url}/metrics")
        with pytest.raises(httpx.TransportError):
            httpx.get(f"http://127.0.0.1:{server.metrics_port}/metrics", timeout=2)
        code, log = server.stop()
    labels = {"model": "echo", "version": "", "code": "OK"}
    assert got[key("inferkit_inference_requests_total", **labels)] == 1
    assert code == 0
    lines = [json.loads(line) for line in log.splitlines() if line.startswith("{")]
    assert lines and len(lines) == len(log.splitlines())  # every line is JSON
    (access,) = [line for line in lines if line["logger"] == "inferkit.access"]
    assert (access["request_id"], access["model"], access["status"]) == ("req-42", "echo", 200)


def test_mlserver_metric_names_from_settings_json(tmp_path: Path) -> None:
    root = repository(tmp_path, metrics_compat="mlserver", metrics_rest_server_prefix="rest_server")
    with inferkit_start(root) as server:
        with httpx.Client(base_url=server.url, timeout=10) as http:
            for _ in range(2):
                assert http.post("/v2/models/echo/infer", json=BODY).status_code == 200
            assert http.post("/v2/models/boom/infer", json=BODY).status_code == 500
        tensor = triton_grpc.InferInput("x", [2, 1], "INT32")
        tensor.set_data_from_numpy(np.array([[1], [2]], dtype=np.int32))
        client = triton_grpc.InferenceServerClient(server.grpc)
        try:
            client.infer("versioned", [tensor], model_version="v1")
        finally:
            client.close()
        got = scrape(f"http://127.0.0.1:{server.metrics_port}/metrics")
    success, failure = "model_infer_request_success_total", "model_infer_request_failure_total"
    assert got[key(success, model="echo", version="None")] == 2
    assert got[key(success, model="versioned", version="v1")] == 1
    assert got[key(failure, model="boom", version="None")] == 1
    assert got[key("model_infer_request_duration_count", model="echo", version="None")] == 2
    rest = "rest_server_requests_total"
    infer = {"method": "POST", "path": "/v2/models/{model_name}/infer", "app_name": "mlserver"}
    assert got[key(rest, status_code="200", **infer)] == 2
    assert got[key(rest, status_code="500", **infer)] == 1
    handled = "grpc_server_handled_total"
    call = {"grpc_type": "UNARY", "grpc_service": "inference.GRPCInferenceService"}
    assert got[key(handled, grpc_method="ModelInfer", grpc_code="OK", **call)] == 1
    assert got[key("grpc_server_started_total", grpc_method="ModelInfer", **call)] == 1
    # Also, not instead: inferkit's names are still exported.
    assert got[key("inferkit_inference_requests_total", model="echo", version="", code="OK")] == 2

"""The real ``inferkit start`` with batching models (``max_batch_size`` / ``max_batch_time`` in
model-settings.json), in-process and with ``parallel_workers: 2``: concurrent requests from
tritonclient (HTTP and gRPC) and httpx run in shared batches and each gets its own rows back.

A batch here waits up to 10 s for its 8 requests, far longer than 8 concurrent requests take
to arrive, so every batch fills; the model reports the rows of the batch it ran in.
"""

from __future__ import annotations

import asyncio
import queue
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
import tritonclient.grpc as triton_grpc
import tritonclient.http as triton_http
from harness import Running, inferkit_start, write_repository
from prometheus_client.parser import text_string_to_metric_families

pytestmark = pytest.mark.e2e

BATCH = 8

ROWS_MODEL = '''
import os

import numpy as np

from inferkit import InferenceResponse, Model
from inferkit.codecs import decode_tensor, encode_tensor


class Rows(Model):
    """Doubles ``x``; ``batch`` is the rows of the batch each row ran in, ``pid`` the process."""

    async def predict(self, payload):
        x = decode_tensor(payload.inputs[0])
        rows = len(x)
        return InferenceResponse(
            model_name=self.name,
            outputs=[
                encode_tensor("y", x * 2),
                encode_tensor("batch", np.full(rows, rows, dtype=np.int64)),
                encode_tensor("pid", np.full(rows, os.getpid(), dtype=np.int64)),
            ],
        )
'''


def _settings(name: str, **extra: Any) -> dict[str, Any]:
    return {
        "name": name,
        "implementation": "rows.Rows",
        "max_batch_size": BATCH,
        "max_batch_time": 10.0,
        **extra,
    }


@pytest.fixture(scope="module")
def running(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Running]:
    root = write_repository(
        tmp_path_factory.mktemp("batching"),
        {"rows": _settings("rows"), "rows-pw": _settings("rows-pw", parallel_workers=2)},
    )
    for folder in ("rows", "rows-pw"):
        (root / folder / "rows.py").write_text(ROWS_MODEL)
    with inferkit_start(root) as server:
        yield server


def body(value: float, width: int = 3) -> dict[str, Any]:
    return {
        "id": f"req-{value:g}",
        "inputs": [{"name": "x", "shape": [1, width], "datatype": "FP32", "data": [value] * width}],
    }


async def post_all(url: str, model: str, bodies: list[dict[str, Any]]) -> list[dict[str, Any]]:
    async with httpx.AsyncClient(base_url=url, timeout=60.0) as client:
        responses = await asyncio.gather(
            *(client.post(f"/v2/models/{model}/infer", json=b) for b in bodies)
        )
    assert [r.status_code for r in responses] == [200] * len(bodies), responses[0].text
    return [r.json() for r in responses]


def output(response: dict[str, Any], name: str) -> list[Any]:
    return next(o["data"] for o in response["outputs"] if o["name"] == name)


@pytest.mark.parametrize("model", ["rows", "rows-pw"])
def test_concurrent_httpx_requests_share_batches_and_get_their_own_rows(
    running: Running, model: str
) -> None:
    # Two batches' worth: with two workers, both run at once.
    values = [float(i) for i in range(2 * BATCH)]
    answers = asyncio.run(post_all(running.url, model, [body(v) for v in values]))
    for value, answer in zip(values, answers, strict=True):
        assert answer["id"] == f"req-{value:g}"
        assert answer["model_name"] == model
        assert output(answer, "y") == [value * 2] * 3
        assert output(answer, "batch") == [BATCH]
    pids = {output(a, "pid")[0] for a in answers}
    # In-process, the server answers; with workers, worker processes do.
    assert (running.process.pid in pids) == (model == "rows")


def test_a_request_that_cannot_join_runs_alone_and_the_others_still_batch(
    running: Running,
) -> None:
    bodies = [body(float(i)) for i in range(BATCH)] + [body(99.0, width=5)]
    answers = asyncio.run(post_all(running.url, "rows", bodies))
    assert [output(a, "batch")[0] for a in answers] == [BATCH] * BATCH + [1]
    assert output(answers[-1], "y") == [198.0] * 5


def test_tritonclient_http_async_requests_are_batched(running: Running) -> None:
    client = triton_http.InferenceServerClient(f"127.0.0.1:{running.http_port}", concurrency=BATCH)
    try:
        pending = []
        for i in range(BATCH):
            x = triton_http.InferInput("x", [2, 3], "FP32")
            x.set_data_from_numpy(np.full((2, 3), i, dtype=np.float32), binary_data=True)
            pending.append(client.async_infer("rows", [x], request_id=f"t{i}"))
        results = [p.get_result() for p in pending]
    finally:
        client.close()
    for i, result in enumerate(results):
        assert result.get_response()["id"] == f"t{i}"
        np.testing.assert_array_equal(result.as_numpy("y"), np.full((2, 3), 2 * i))
        # Two rows each: the 8-row batch holds 4 requests.
        np.testing.assert_array_equal(result.as_numpy("batch"), [BATCH, BATCH])


def test_tritonclient_grpc_with_priority_and_timeout(running: Running) -> None:
    client = triton_grpc.InferenceServerClient(running.grpc)
    done: queue.Queue[tuple[Any, Any]] = queue.Queue()
    try:
        for i in range(BATCH):
            x = triton_grpc.InferInput("x", [1, 3], "FP32")
            x.set_data_from_numpy(np.full((1, 3), i, dtype=np.float32))
            client.async_infer(
                "rows",
                [x],
                callback=lambda result, error: done.put((result, error)),
                request_id=f"g{i}",
                priority=1 + i % 2,
                timeout=30_000_000,  # microseconds
            )
        answers = [done.get(timeout=60) for _ in range(BATCH)]
    finally:
        client.close()
    assert [error for _, error in answers] == [None] * BATCH
    ids = sorted(result.get_response().id for result, _ in answers)
    assert ids == [f"g{i}" for i in range(BATCH)]
    for result, _ in answers:
        i = int(result.get_response().id[1:])
        np.testing.assert_array_equal(result.as_numpy("y"), np.full((1, 3), 2 * i))
        # Both priorities share a batch: priority orders the queue, it does not split it.
        np.testing.assert_array_equal(result.as_numpy("batch"), [BATCH])


def test_a_timeout_shorter_than_the_batch_wait_closes_the_batch_early(running: Running) -> None:
    request = body(5.0)
    request["parameters"] = {"timeout": 500_000}  # 0.5 s, the batch would wait 10 s
    response = httpx.post(f"{running.url}/v2/models/rows/infer", json=request, timeout=30)
    assert response.status_code == 200, response.text
    assert output(response.json(), "batch") == [1]
    assert "batch;dur=" in response.headers["server-timing"]


def scrape(running: Running) -> dict[tuple[str, str | None], float]:
    metrics = httpx.get(f"http://127.0.0.1:{running.metrics_port}/metrics").text
    return {
        (s.name, s.labels.get("model")): s.value
        for family in text_string_to_metric_families(metrics)
        for s in family.samples
        if "le" not in s.labels
    }


def test_metrics_and_statistics_count_batches(running: Running) -> None:
    before = scrape(running)
    asyncio.run(post_all(running.url, "rows", [body(float(i)) for i in range(BATCH)]))
    after = scrape(running)

    def added(name: str) -> float:
        return after[name, "rows"] - before.get((name, "rows"), 0.0)

    assert added("inferkit_batch_size_count") == 1
    assert added("inferkit_batch_size_sum") == BATCH
    assert added("inferkit_batch_queue_duration_seconds_count") == BATCH
    stats = httpx.get(f"{running.url}/v2/models/rows/stats").json()["model_stats"][0]
    assert stats["execution_count"] < stats["inference_count"]
    assert max(b["batch_size"] for b in stats["batch_stats"]) == BATCH


def test_settings_that_leave_batching_off_are_warned_about(tmp_path: Path) -> None:
    root = write_repository(
        tmp_path,
        {"half": {"name": "half", "implementation": "model.Echo", "max_batch_size": 8}},
    )
    with inferkit_start(root) as server:
        assert httpx.get(f"{server.url}/v2/models/half/ready").status_code == 200
        log = server.log()
    assert "Model 'half': batching is off" in log

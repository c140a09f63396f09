"""The real ``inferkit start`` with ``parallel_workers: 2``: concurrency, a worker killed under
load, repository load/unload, custom metrics and shutdown, over plain REST.

Worker processes are found as the children of the server process whose command line is
multiprocessing's ``spawn_main`` (the resource tracker is a child too, and is not a worker).
"""

from __future__ import annotations

import asyncio
import fcntl
import os
import re
import signal
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from harness import Running, inferkit_start, write_repository
from prometheus_client.parser import text_string_to_metric_families

pytestmark = pytest.mark.e2e

GATED_MODEL = '''
import fcntl
import os

import numpy as np

from inferkit import InferenceResponse, Model
from inferkit.codecs import decode_tensor, encode_tensor


class Gated(Model):
    """Doubles its input and says which process answered.

    With ``parameters.entered`` it first writes its pid to that FIFO; with ``parameters.gate``
    it then waits for a shared lock on that file, which the test holds while it needs requests
    to stay in flight.
    """

    async def load(self):
        self.calls = self.metrics.counter("gated_calls", "Calls to predict")
        return True

    async def predict(self, payload):
        parameters = payload.parameters or {}
        if "entered" in parameters:
            with open(parameters["entered"], "w") as fifo:
                fifo.write(f"{os.getpid()}\\n")
        if "gate" in parameters:
            with open(parameters["gate"]) as gate:
                fcntl.flock(gate, fcntl.LOCK_SH)
        self.calls.inc()
        x = decode_tensor(payload.inputs[0])
        return InferenceResponse(
            model_name=self.name,
            outputs=[encode_tensor("double", x * 2), encode_tensor("pid", np.array([os.getpid()]))],
        )
'''

MODELS: dict[str, dict[str, Any]] = {
    "gated": {"name": "gated", "implementation": "gated.Gated"},
    # Opts out of the server's parallel_workers: served in-process, so no worker of its own.
    "echo": {"name": "echo", "implementation": "model.Echo", "parallel_workers": 0},
}
RECOVERY_TIMEOUT_S = 60.0


def repository(root: Path) -> Path:
    write_repository(root, MODELS, parallel_workers=2)
    (root / "gated" / "gated.py").write_text(GATED_MODEL)
    return root


@pytest.fixture(scope="module")
def running(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Running]:
    with inferkit_start(repository(tmp_path_factory.mktemp("repo"))) as server:
        yield server


def workers_of(running: Running) -> set[int]:
    """PIDs of the server's worker processes (``/proc/*/stat`` whose parent is the server)."""
    found = set()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            cmdline = (entry / "cmdline").read_bytes()
        except (FileNotFoundError, ProcessLookupError):
            continue
        ppid = int(stat.rpartition(")")[2].split()[1])
        if ppid == running.process.pid and b"spawn_main" in cmdline:
            found.add(int(entry.name))
    return found


def wait_for_workers(
    running: Running, count: int, without: frozenset[int] = frozenset()
) -> set[int]:
    """Poll (like a readiness probe, bounded) until ``count`` workers run, none of ``without``."""
    deadline = time.monotonic() + RECOVERY_TIMEOUT_S
    while time.monotonic() < deadline:
        pids = workers_of(running)
        if len(pids) == count and not pids & without:
            return pids
        time.sleep(0.05)
    raise TimeoutError(f"expected {count} workers, have {workers_of(running)}")


def body(x: float, **parameters: str) -> dict[str, Any]:
    return {
        "parameters": parameters,
        "inputs": [{"name": "x", "shape": [1], "datatype": "FP64", "data": [x]}],
    }


def answer(response: httpx.Response) -> tuple[float, int]:
    """(the doubled value, the worker pid) of a 200 from the gated model."""
    assert response.status_code == 200, response.text
    double, pid = response.json()["outputs"]
    return double["data"][0], pid["data"][0]


class Gate:
    """A file locked exclusively by the test; gated requests wait for a shared lock on it."""

    def __init__(self, path: Path) -> None:
        path.touch()
        self.path = str(path)
        self._fd = os.open(path, os.O_RDONLY)
        fcntl.flock(self._fd, fcntl.LOCK_EX)

    def open(self) -> None:
        if self._fd >= 0:
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = -1


class Entered:
    """A FIFO gated requests write their worker's pid to when predict starts."""

    def __init__(self, path: Path) -> None:
        os.mkfifo(path)
        self.path = str(path)
        self._read = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
        # Our own writer end keeps reads blocking (not at EOF) between the workers' writes.
        self._write = os.open(path, os.O_WRONLY)
        os.set_blocking(self._read, True)
        self._buffer = b""

    def pids(self, count: int) -> list[int]:
        while self._buffer.count(b"\n") < count:
            self._buffer += os.read(self._read, 64)
        *lines, self._buffer = self._buffer.split(b"\n", count)
        return [int(line) for line in lines]

    def close(self) -> None:
        os.close(self._read)
        os.close(self._write)


async def test_200_concurrent_requests_are_answered_correctly_by_both_workers(
    running: Running,
) -> None:
    workers = wait_for_workers(running, 2)
    limits = httpx.Limits(max_connections=200)
    async with httpx.AsyncClient(base_url=running.url, timeout=60, limits=limits) as client:
        responses = await asyncio.gather(
            *(client.post("/v2/models/gated/infer", json=body(i)) for i in range(200))
        )
        echo = await client.post("/v2/models/echo/infer", json=body(1))
    answers = [answer(r) for r in responses]
    assert [value for value, _ in answers] == [2.0 * i for i in range(200)]
    assert {pid for _, pid in answers} == workers
    assert echo.status_code == 200
    assert workers_of(running) == workers  # the in-process echo model added none


def test_a_large_json_tensor_reaches_a_worker_as_sent(running: Running) -> None:
    # Past the REST fast path's threshold (64 KiB): parsed into a float64 array in the main
    # process, sent to the worker through shared memory, cast to FP32 there by the codec.
    values = [(i + 0.5) / 7 for i in range(20_000)]
    request = {"inputs": [{"name": "x", "shape": [20_000], "datatype": "FP32", "data": values}]}
    response = httpx.post(f"{running.url}/v2/models/gated/infer", json=request, timeout=60)
    double, _ = answer_tensors(response)
    assert double["datatype"] == "FP32"
    assert double["data"] == (np.array(values, dtype=np.float32) * 2).tolist()


def answer_tensors(response: httpx.Response) -> list[dict[str, Any]]:
    assert response.status_code == 200, response.text
    outputs: list[dict[str, Any]] = response.json()["outputs"]
    return outputs


async def test_a_killed_worker_fails_only_its_in_flight_request_then_comes_back(
    running: Running, tmp_path: Path
) -> None:
    workers = wait_for_workers(running, 2)
    gate, entered = Gate(tmp_path / "gate"), Entered(tmp_path / "entered")
    try:
        async with httpx.AsyncClient(base_url=running.url, timeout=60) as client:
            gated = body(1, gate=gate.path, entered=entered.path)
            held = [asyncio.ensure_future(client.post("/v2/models/gated/infer", json=gated))]
            # Least-loaded dispatch: the second request goes to the other worker.
            (first,) = await asyncio.to_thread(entered.pids, 1)
            held.append(asyncio.ensure_future(client.post("/v2/models/gated/infer", json=gated)))
            (second,) = await asyncio.to_thread(entered.pids, 1)
            assert {first, second} == workers
            os.kill(first, signal.SIGKILL)

            # Its request fails at once, while the gate still holds the other one.
            done, _ = await asyncio.wait(held, return_when=asyncio.FIRST_COMPLETED)
            assert done == {held[0]}
            failed = held[0].result()
            # Retryable, so a client's retry policy sends it again (to the other worker).
            assert failed.status_code == 503
            assert failed.headers["retry-after"] == "1"
            assert failed.json()["code"] == "WORKER_LOST"
            assert re.fullmatch(
                rf"Worker [01] \(pid {first}\) of model 'gated' died while running this request",
                failed.json()["error"],
            )
            assert (await client.get("/v2/models/gated/ready")).status_code == 200

            more = [client.post("/v2/models/gated/infer", json=body(i)) for i in range(2, 12)]
            pending = asyncio.gather(*more)
            gate.open()
            answers = [answer(r) for r in [await held[1], *await pending]]
            assert answers[0] == (2.0, second)
            assert [value for value, _ in answers[1:]] == [2.0 * i for i in range(2, 12)]

            restarted = wait_for_workers(running, 2, without=frozenset({first}))
            assert second in restarted
            assert (await client.get("/v2/models/gated/ready")).status_code == 200
            # The new process exists before its model is loaded: probe until it answers too.
            seen: set[int] = set()
            deadline = time.monotonic() + RECOVERY_TIMEOUT_S
            while seen != restarted and time.monotonic() < deadline:
                batch = [client.post("/v2/models/gated/infer", json=body(i)) for i in range(8)]
                answers = [answer(r) for r in await asyncio.gather(*batch)]
                assert [value for value, _ in answers] == [2.0 * i for i in range(8)]
                seen |= {pid for _, pid in answers}
            assert seen == restarted
    finally:
        gate.open()
        entered.close()


def test_unload_and_load_reach_every_worker(running: Running) -> None:
    before = wait_for_workers(running, 2)
    with httpx.Client(base_url=running.url, timeout=60) as http:
        assert http.post("/v2/repository/models/gated/unload").status_code == 200
        assert workers_of(running) == set()  # unload returns after the workers are gone
        assert http.get("/v2/models/gated/ready").status_code == 400
        assert http.post("/v2/repository/models/gated/load").status_code == 200
        after = workers_of(running)
        assert len(after) == 2 and not after & before
        assert answer(http.post("/v2/models/gated/infer", json=body(21)))[0] == 42.0


def test_custom_metrics_recorded_in_workers_reach_the_main_metrics(running: Running) -> None:
    def calls() -> float:
        text = httpx.get(f"http://127.0.0.1:{running.metrics_port}/metrics", timeout=10).text
        samples = {
            (s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text)
            for s in family.samples
        }
        return samples.get(("gated_calls_total", (("model", "gated"), ("version", ""))), 0.0)

    before = calls()
    with httpx.Client(base_url=running.url, timeout=60) as http:
        for i in range(6):
            answer(http.post("/v2/models/gated/infer", json=body(i)))
    assert calls() - before == 6


def test_a_clean_shutdown_leaves_no_worker_behind(tmp_path: Path) -> None:
    with inferkit_start(repository(tmp_path)) as server:
        workers = wait_for_workers(server, 2)
        code, log = server.stop()
    assert code == 0, log
    assert "Traceback" not in log
    for pid in workers:
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)

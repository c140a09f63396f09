"""The real ``inferkit start`` serving a model file written for MLServer's API: ``_settings``,
``get_model_uri``, a registered codec, ``mlserver.register`` / ``log`` and ``MLServerError``
with a status, in process and in a worker process."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from harness import Running, inferkit_start
from prometheus_client.parser import text_string_to_metric_families
from test_compat import IDIOMS_SETTINGS, MLSERVER_IDIOMS

pytestmark = pytest.mark.e2e


def body(*texts: str, name: str = "words") -> dict[str, object]:
    tensor = {"name": name, "shape": [len(texts)], "datatype": "BYTES", "data": list(texts)}
    return {"inputs": [{**tensor, "parameters": {"content_type": "upper"}}]}


@pytest.fixture(scope="module")
def running(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Running]:
    root = tmp_path_factory.mktemp("repo")
    (root / "settings.json").write_text("{}")
    for folder, workers in (("inproc", 0), ("worker", 1)):
        (root / folder).mkdir()
        (root / folder / "idioms.py").write_text(MLSERVER_IDIOMS)
        (root / folder / "weights.txt").write_text("hello\n")
        settings = {**json.loads(IDIOMS_SETTINGS), "name": folder, "parallel_workers": workers}
        (root / folder / "model-settings.json").write_text(json.dumps(settings))
    with inferkit_start(Path(root)) as server:
        yield server


@pytest.mark.parametrize("model", ["inproc", "worker"])
def test_an_mlserver_model_file_serves_with_its_idioms(running: Running, model: str) -> None:
    with httpx.Client(base_url=running.url, timeout=10) as http:
        answer = http.post(f"/v2/models/{model}/infer", json=body("a", "b"))
        assert answer.status_code == 200, answer.text
        assert answer.json()["outputs"][0]["data"] == ["hello", "A", "B"]
        missing = http.post(f"/v2/models/{model}/infer", json=body("a", name="missing"))
        assert (missing.status_code, missing.json()) == (
            404,
            {"error": "No such thing", "code": "MODEL_NOT_FOUND"},
        )
    metrics = httpx.get(f"http://127.0.0.1:{running.metrics_port}/metrics", timeout=10).text
    samples = {
        (sample.name, sample.labels.get("model")): sample.value
        for family in text_string_to_metric_families(metrics)
        for sample in family.samples
    }
    assert samples[("idiom_words_count", model)] == 1
    assert samples[("idiom_words_sum", model)] == 2

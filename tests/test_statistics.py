"""Triton's statistics extension: the core accumulator, and its REST routes in-process."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import httpx
import msgspec
import pytest
from toymodels import FailingModel, named, sum_model

from inferkit import Server, errors
from inferkit.events import InferenceFinished, ModelLoaded
from inferkit.statistics import Statistics
from inferkit.transports.rest import create_rest_app
from inferkit.types import RepositoryIndexResponseItem

INDEX = [
    RepositoryIndexResponseItem(name="a", version="", state="READY"),
    RepositoryIndexResponseItem(name="b", version="1", state="READY"),
    RepositoryIndexResponseItem(name="b", version="2", state="UNAVAILABLE"),
    RepositoryIndexResponseItem(name="c", version="", state="FAILED", reason="boom"),
]

ZERO = {"count": 0, "ns": 0}


def finished(model: str = "a", version: str = "", **fields: Any) -> InferenceFinished:
    values: dict[str, Any] = {"duration_s": 0.003, "compute_s": 0.002, "ok": True, **fields}
    return InferenceFinished(model=model, version=version, **values)


def as_json(obj: object) -> Any:
    return msgspec.json.decode(msgspec.json.encode(obj))


def test_the_json_shape_tritonclient_reads() -> None:
    stats = Statistics(clock=lambda: 1700000000.25)
    stats(finished(batch_size=4))
    stats(finished(duration_s=0.001, compute_s=0.0005))
    stats(finished(duration_s=0.0002, compute_s=0.0, ok=False, code="INVALID_SHAPE"))
    stats(ModelLoaded(model="a", version="", duration_s=1.0))  # not an inference: ignored
    report = as_json(stats.report(INDEX, "a"))
    assert report == {
        "model_stats": [
            {
                "name": "a",
                "version": "",
                "last_inference": 1700000000250,
                "inference_count": 5,  # batch elements of successful requests
                "execution_count": 2,
                "inference_stats": {
                    "success": {"count": 2, "ns": 4_000_000},
                    "fail": {"count": 1, "ns": 200_000},
                    "queue": {"count": 2, "ns": 1_500_000},  # total - compute
                    "compute_input": {"count": 2, "ns": 0},
                    "compute_infer": {"count": 2, "ns": 2_500_000},
                    "compute_output": {"count": 2, "ns": 0},
                    "cache_hit": ZERO,
                    "cache_miss": ZERO,
                },
                "batch_stats": [
                    {
                        "batch_size": 1,
                        "compute_input": {"count": 1, "ns": 0},
                        "compute_infer": {"count": 1, "ns": 500_000},
                        "compute_output": {"count": 1, "ns": 0},
                    },
                    {
                        "batch_size": 4,
                        "compute_input": {"count": 1, "ns": 0},
                        "compute_infer": {"count": 1, "ns": 2_000_000},
                        "compute_output": {"count": 1, "ns": 0},
                    },
                ],
                "memory_usage": [],
            }
        ]
    }


@pytest.mark.parametrize(
    ("name", "version", "expected"),
    [
        (None, None, [("a", ""), ("b", "1")]),  # every READY version
        ("b", None, [("b", "1"), ("b", "2")]),  # every version of one model, whatever its state
        ("b", "2", [("b", "2")]),
        ("c", None, [("c", "")]),
    ],
)
def test_which_versions_are_reported(
    name: str | None, version: str | None, expected: list[tuple[str, str]]
) -> None:
    report = Statistics().report(INDEX, name, version)
    assert [(s.name, s.version) for s in report.model_stats] == expected


@pytest.mark.parametrize(
    ("name", "version", "message"),
    [
        ("nope", None, "Model 'nope' not found"),
        ("nope", "1", "Model 'nope' not found"),
        ("b", "3", "Model 'b' with version '3' not found"),
    ],
)
def test_unknown_models(name: str, version: str | None, message: str) -> None:
    with pytest.raises(errors.ModelNotFound) as info:
        Statistics().report(INDEX, name, version)
    assert info.value.message == message


def test_versions_are_counted_apart_and_a_model_without_requests_is_zero() -> None:
    stats = Statistics(clock=lambda: 2.0)
    stats(finished("b", "1"))
    one, two = stats.report(INDEX, "b").model_stats
    assert (one.execution_count, one.last_inference) == (1, 2000)
    assert (two.execution_count, two.last_inference, two.batch_stats) == (0, 0, [])


# -- the REST routes ----------------------------------------------------------------------

BODY = {"inputs": [{"name": "x", "shape": [2, 3], "datatype": "FP32", "data": [1] * 6}]}


@asynccontextmanager
async def rest(*models: Any) -> AsyncIterator[httpx.AsyncClient]:
    server = Server(models)
    await server.start()
    transport = httpx.ASGITransport(app=create_rest_app(server))
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as http:
        yield http


async def test_rest_routes_and_the_extension_is_advertised() -> None:
    async with rest(sum_model(), sum_model("v", version="1"), named(FailingModel, "bad")) as http:
        assert "statistics" in (await http.get("/v2")).json()["extensions"]
        assert (await http.post("/v2/models/sum/infer", json=BODY)).status_code == 200
        assert (await http.post("/v2/models/v/versions/1/infer", json=BODY)).status_code == 200
        assert (await http.post("/v2/models/bad/infer", json=BODY)).status_code == 500
        everything = (await http.get("/v2/models/stats")).json()["model_stats"]
        assert [(s["name"], s["version"]) for s in everything] == [
            ("sum", ""),
            ("v", "1"),
            ("bad", ""),
        ]
        one = (await http.get("/v2/models/sum/stats")).json()["model_stats"]
        assert [(s["name"], s["inference_count"], s["execution_count"]) for s in one] == [
            ("sum", 2, 1)
        ]
        versioned = (await http.get("/v2/models/v/versions/1/stats")).json()["model_stats"]
        assert versioned[0]["inference_stats"]["success"]["count"] == 1
        bad = (await http.get("/v2/models/bad/stats")).json()["model_stats"][0]
        assert bad["inference_stats"]["fail"]["count"] == 1 and bad["execution_count"] == 0
        missing = await http.get("/v2/models/nope/stats")
        assert missing.status_code == 404
        assert missing.json() == {"error": "Model 'nope' not found", "code": "MODEL_NOT_FOUND"}


async def test_two_apps_on_one_server_advertise_the_extension_once() -> None:
    server = Server([sum_model()])
    create_rest_app(server)
    create_rest_app(server)
    assert (await server.metadata()).extensions.count("statistics") == 1

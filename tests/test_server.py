"""The sans-I/O core: ``Server`` called directly, no transport."""

from __future__ import annotations

import asyncio
import logging
import shutil
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import msgspec
import numpy as np
import pytest
from toymodels import (
    BrokenLoadModel,
    FailingModel,
    HangingModel,
    SumModel,
    named,
    sum_model,
    sum_model_folder,
)

from inferkit import (
    InferenceRequest,
    InferenceResponse,
    MetadataTensor,
    Model,
    ModelSettings,
    RequestInput,
    RequestOutput,
    Server,
    Settings,
    decode_args,
    errors,
)
from inferkit.codecs import encode_tensor
from inferkit.events import Event, InferenceFinished, ModelFailed, ModelLoaded, ModelUnloaded


def fp32(*values: float, name: str = "x") -> InferenceRequest:
    return InferenceRequest(
        inputs=[RequestInput(name=name, shape=[1, len(values)], datatype="FP32", data=list(values))]
    )


async def started(*models: Any, **settings: Any) -> Server:
    server = Server(models, settings=Settings(**settings))
    await server.start()
    return server


async def test_infer_fills_id_name_and_version() -> None:
    server = await started(sum_model("adder", version="v1"))
    response = await server.infer("adder", fp32(1, 2, 3.5))
    assert response.model_name == "adder"
    assert response.model_version == "v1"
    assert len(response.id or "") == 36  # a uuid4
    assert response.outputs[0].name == "total"
    assert np.asarray(response.outputs[0].data).tolist() == [6.5]


async def test_infer_keeps_the_request_id() -> None:
    server = await started(sum_model())
    request = fp32(1)
    request.id = "my-id"
    assert (await server.infer("sum", request)).id == "my-id"


async def test_seed_quickstart_model_through_the_core() -> None:
    class MyKulModel(Model):
        @decode_args
        async def predict(self, docs: list[str]) -> np.ndarray:
            a, b = (set(d.split()) for d in docs)
            return np.array(len(a & b) / len(a | b))

    server = await started(MyKulModel(ModelSettings(name="doc-sim-model")))
    body = (
        b'{"inputs": [{"name": "docs", "shape": [2, 1], "datatype": "BYTES",'
        b' "parameters": {"content_type": "str"},'
        b' "data": ["Barbie is a 2023 film", "Oppenheimer is a 2023 film"]}]}'
    )
    response = await server.infer("doc-sim-model", msgspec.json.decode(body, type=InferenceRequest))
    output = response.outputs[0]
    assert (output.name, output.datatype, output.shape) == ("output-0", "FP64", [1])
    assert output.parameters == {"content_type": "np"}
    assert np.asarray(output.data).tolist() == [4 / 6]
    assert response.id


@pytest.mark.parametrize(
    ("name", "version", "message"),
    [
        ("nope", None, "Model 'nope' not found"),
        ("sum", "v9", "Model 'sum' with version 'v9' not found"),
    ],
)
async def test_unknown_model_or_version(name: str, version: str | None, message: str) -> None:
    server = await started(sum_model())
    with pytest.raises(errors.ModelNotFound) as caught:
        await server.infer(name, fp32(1), version)
    assert caught.value.message == message
    assert caught.value.code == "MODEL_NOT_FOUND"
    with pytest.raises(errors.ModelNotFound):
        await server.model_ready(name, version)


async def test_unload_then_load() -> None:
    server = await started(sum_model())
    await server.unload("sum")
    assert await server.model_ready("sum") is False
    assert [(i.name, i.state) for i in await server.index()] == [("sum", "UNAVAILABLE")]
    with pytest.raises(errors.ModelNotReady) as caught:
        await server.infer("sum", fp32(1))
    assert caught.value.message == "Model 'sum' is not ready (UNAVAILABLE)"
    await server.load("sum")
    assert await server.model_ready("sum") is True
    assert (await server.infer("sum", fp32(2))).outputs[0].name == "total"


DECLARED = [MetadataTensor(name="x", datatype="FP32", shape=[-1, 3])]


@pytest.mark.parametrize(
    ("tensor", "error", "message"),
    [
        (
            RequestInput(name="x", shape=[1, 3], datatype="INT32", data=[1, 2, 3]),
            errors.InvalidRequest,
            "Expected datatype FP32 for input 'x', got INT32 - at `$.inputs[0].datatype`",
        ),
        (
            RequestInput(name="x", shape=[1, 2], datatype="FP32", data=[1, 2]),
            errors.InvalidShape,
            "Expected shape [-1, 3] for input 'x', got [1, 2] - at `$.inputs[0].shape`",
        ),
        (
            RequestInput(name="x", shape=[2, 3], datatype="FP32", data=[1, 2, 3, 4, 5]),
            errors.InvalidShape,
            "Expected 6 elements for shape [2, 3], got 5 - at `$.inputs[0].data`",
        ),
        (
            RequestInput(name="x", shape=[1], datatype="FP128", data=[1]),
            errors.UnsupportedDatatype,
            None,
        ),
    ],
)
async def test_inputs_are_checked_before_the_model_runs(
    tensor: RequestInput, error: type[Exception], message: str | None
) -> None:
    server = await started(sum_model(inputs=DECLARED))
    with pytest.raises(error) as caught:
        await server.infer("sum", InferenceRequest(inputs=[tensor]))
    if message is not None:
        assert str(caught.value) == message
    assert (await server.infer("sum", fp32(1, 2, 3))).outputs  # still serving


async def test_requested_outputs_are_selected_and_keep_their_parameters() -> None:
    class TwoOutputs(Model):
        async def predict(self, payload: InferenceRequest) -> InferenceResponse:
            return InferenceResponse(
                model_name=self.name,
                outputs=[encode_tensor("a", np.ones(2)), encode_tensor("b", np.zeros(2))],
            )

    server = await started(named(TwoOutputs, "two"))
    request = fp32(1)
    request.outputs = [RequestOutput(name="b", parameters={"binary_data": False})]
    response = await server.infer("two", request)
    assert [o.name for o in response.outputs] == ["b"]
    assert response.outputs[0].parameters == {"binary_data": False}
    request.outputs = [RequestOutput(name="c")]
    with pytest.raises(errors.OutputNotFound) as caught:
        await server.infer("two", request)
    assert str(caught.value) == (
        "Model 'two' has no output 'c'; it produced ['a', 'b'] - at `$.outputs[0].name`"
    )


async def test_a_model_that_raises_leaks_nothing(caplog: pytest.LogCaptureFixture) -> None:
    server = await started(named(FailingModel, "bad"), sum_model())
    with caplog.at_level(logging.ERROR, logger="inferkit"):
        with pytest.raises(errors.InferenceFailed) as caught:
            await server.infer("bad", fp32(1))
    assert caught.value.message == "Model 'bad' failed to run inference; see the server log"
    assert "secret" not in caught.value.message
    assert "secret-token-123" in caplog.text  # the operator still sees it, once
    assert caplog.text.count("raised during predict") == 1
    assert (await server.infer("sum", fp32(1))).outputs


async def test_a_model_that_hangs_times_out() -> None:
    server = await started(named(HangingModel, "slow"), sum_model(), inference_timeout=0.05)
    with pytest.raises(errors.InferenceTimeout) as caught:
        await server.infer("slow", fp32(1))
    assert caught.value.message == "Model 'slow' did not answer within 0.05s"
    assert caught.value.retryable
    assert (await server.infer("sum", fp32(1))).outputs


async def test_a_model_that_fails_to_load_is_failed_and_the_others_serve(
    caplog: pytest.LogCaptureFixture,
) -> None:
    server = await started(named(BrokenLoadModel, "broken"), sum_model())
    index = {i.name: (i.state, i.reason) for i in await server.index()}
    # Clients get the class of the failure; its text is in the server log only.
    withheld = "FileNotFoundError (the reason is in the server log)"
    assert index == {"broken": ("FAILED", withheld), "sum": ("READY", "")}
    assert "Model 'broken' failed to load: FileNotFoundError: weights.bin is missing" in (
        caplog.text
    )
    assert await server.ready() is True
    assert [i.name for i in await server.index(ready=True)] == ["sum"]
    assert [i.name for i in await server.index(ready=False)] == ["broken"]
    with pytest.raises(errors.ModelLoadError) as caught:
        await server.load("broken")
    assert caught.value.message == f"Model 'broken' failed to load: {withheld}"
    assert caught.value.code == "MODEL_LOAD_FAILED"


async def test_expose_load_errors_tells_clients_the_reason() -> None:
    server = await started(named(BrokenLoadModel, "broken"), expose_load_errors=True)
    [item] = await server.index()
    assert (item.state, item.reason) == ("FAILED", "FileNotFoundError: weights.bin is missing")
    with pytest.raises(errors.ModelLoadError) as caught:
        await server.load("broken")
    assert caught.value.message == (
        "Model 'broken' failed to load: FileNotFoundError: weights.bin is missing"
    )


class LeakyLoadModel(Model):
    async def load(self) -> bool:
        raise RuntimeError("cannot connect to postgres://admin:hunter2@db/models")


async def test_a_load_failure_does_not_tell_clients_its_text(
    caplog: pytest.LogCaptureFixture,
) -> None:
    server = await started(named(LeakyLoadModel, "leaky"))
    [item] = await server.index()
    with pytest.raises(errors.ModelLoadError) as caught:
        await server.load("leaky")
    for told in (item.reason, caught.value.message):
        assert "hunter2" not in told
        assert "RuntimeError" in told
    assert "hunter2" in caplog.text  # the operator can still find out why


async def test_events_reach_listeners() -> None:
    events: list[Event] = []
    server = Server([sum_model(version="v1"), named(BrokenLoadModel, "broken")])
    server.add_listener(events.append)
    await server.start()
    await server.infer("sum", fp32(1, 2))
    with pytest.raises(errors.InvalidShape):
        await server.infer("sum", _bad_request())
    await server.unload("sum")
    kinds = [type(e) for e in events]
    assert kinds.count(ModelLoaded) == 1 and kinds.count(ModelFailed) == 1
    finished = [e for e in events if isinstance(e, InferenceFinished)]
    assert [(e.model, e.version, e.ok, e.code) for e in finished] == [
        ("sum", "v1", True, ""),
        ("sum", "v1", False, "INVALID_SHAPE"),
    ]
    assert all(e.duration_s >= e.compute_s >= 0 for e in finished)
    assert isinstance(events[-1], ModelUnloaded)


def _bad_request() -> InferenceRequest:
    return InferenceRequest(
        inputs=[RequestInput(name="x", shape=[2, 2], datatype="FP32", data=[1.0])]
    )


async def test_a_failing_listener_does_not_break_inference(
    caplog: pytest.LogCaptureFixture,
) -> None:
    server = await started(sum_model())

    def broken(event: Event) -> None:
        raise ValueError("listener bug")

    server.add_listener(broken)
    with caplog.at_level(logging.ERROR, logger="inferkit"):
        assert (await server.infer("sum", fp32(1))).outputs
    assert "listener" in caplog.text


async def test_versions_default_and_metadata() -> None:
    server = await started(sum_model(version="v2"), sum_model(version="v10"))
    assert (await server.infer("sum", fp32(1))).model_version == "v10"  # natural order
    assert (await server.infer("sum", fp32(1), "v2")).model_version == "v2"
    meta = await server.model_metadata("sum")
    assert sorted(meta.versions or []) == ["v10", "v2"]
    await server.unload("sum", "v2")
    assert (await server.model_metadata("sum")).versions == ["v10"]


async def test_unversioned_is_the_default() -> None:
    server = await started(sum_model(version="v1"), sum_model())
    assert (await server.infer("sum", fp32(1))).model_version is None


async def test_reload_keeps_serving_the_old_instance_until_the_new_one_is_ready() -> None:
    gate = asyncio.Event()
    loads = 0

    class Slow(SumModel):
        async def load(self) -> bool:
            nonlocal loads
            loads += 1
            if loads > 1:
                await gate.wait()
            return True

    server = Server([ModelSettings(name="slow", implementation="x.y")])
    server._registry.get("slow").factory = Slow  # build fresh instances, as a repository does
    await server.start()
    reload = asyncio.create_task(server.load("slow"))
    await asyncio.sleep(0)
    assert (await server.infer("slow", fp32(1))).outputs  # old instance still serves
    assert await server.model_ready("slow")
    gate.set()
    await reload
    assert loads == 2
    assert (await server.infer("slow", fp32(1))).outputs


async def test_unload_waits_for_requests_in_flight() -> None:
    release = asyncio.Event()
    unloaded = False

    class Busy(SumModel):
        async def predict(self, payload: InferenceRequest) -> InferenceResponse:
            await release.wait()
            assert not unloaded
            return await super().predict(payload)

        async def unload(self) -> bool:
            nonlocal unloaded
            unloaded = True
            return True

    server = await started(named(Busy, "busy"))
    request = asyncio.create_task(server.infer("busy", fp32(1)))
    await asyncio.sleep(0)
    unload = asyncio.create_task(server.unload("busy"))
    await asyncio.sleep(0)
    assert not unload.done()
    release.set()
    assert (await request).outputs
    await unload
    assert unloaded


async def test_readiness_follows_the_lifecycle() -> None:
    server = Server([sum_model()])
    assert await server.live() is True
    assert await server.ready() is False  # not started
    await server.start()
    assert await server.ready() is True
    server.begin_shutdown()
    assert await server.ready() is False
    with pytest.raises(errors.ShuttingDown) as caught:
        await server.infer("sum", fp32(1))
    assert caught.value.retryable
    await server.stop()
    assert [i.state for i in await server.index()] == ["UNAVAILABLE"]


async def test_metadata() -> None:
    server = Server(settings=Settings(server_name="srv", server_version="1.2"))
    meta = await server.metadata()
    assert (meta.name, meta.version) == ("srv", "1.2")
    assert "model_repository" in meta.extensions


async def test_two_servers_do_not_interfere() -> None:
    seen_a: list[Event] = []
    seen_b: list[Event] = []
    a = await started(sum_model())
    b = await started(sum_model())
    a.add_listener(seen_a.append)
    b.add_listener(seen_b.append)
    await a.unload("sum")
    assert await b.model_ready("sum") is True
    assert (await b.infer("sum", fp32(1))).outputs
    assert len(seen_a) == 1 and isinstance(seen_a[0], ModelUnloaded)
    assert len(seen_b) == 1 and isinstance(seen_b[0], InferenceFinished)
    assert a.codecs is not b.codecs


def test_import_inferkit_loads_no_framework() -> None:
    code = (
        "import sys, inferkit\n"
        "banned = ['starlette', 'hypercorn', 'grpclib', 'betterproto2', 'prometheus_client',"
        " 'pandas', 'sklearn', 'xgboost', 'opentelemetry']\n"
        "print([m for m in banned if any(n.split('.')[0] == m for n in sys.modules)])"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout
    assert out.strip() == "[]"


async def test_an_mlserver_repository_through_the_core(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    from inferkit.repository import ModelRepository
    from inferkit.settings_loader import load_settings

    (tmp_path / "settings.json").write_text('{"debug": "true", "http_port": 9080}')
    for folder, settings in {
        "adder": '{"name": "adder", "implementation": "model.Adder"}',
        "typo": '{"name": "typo", "implementation": "model.Missing"}',
        "garbled": '{"name": "garbled", ',
    }.items():
        (tmp_path / folder).mkdir()
        (tmp_path / folder / "model-settings.json").write_text(settings)
        (tmp_path / folder / "model.py").write_text(
            "from toymodels import SumModel\n\nclass Adder(SumModel):\n    pass\n"
        )
    settings = load_settings(tmp_path, {})
    server = Server(settings=settings, repository=ModelRepository(settings.model_repository_root))
    await server.start()
    index = {item.name: (item.state, item.reason) for item in await server.index()}
    assert index["adder"] == ("READY", "")
    assert index["typo"] == ("FAILED", "ModelLoadError (the reason is in the server log)")
    assert index["garbled"] == ("FAILED", "SettingsError (the reason is in the server log)")
    assert "Cannot import 'model.Missing': module 'model' has no attribute 'Missing'" in (
        caplog.text
    )
    assert f"Invalid settings in {tmp_path / 'garbled' / 'model-settings.json'}" in caplog.text
    assert await server.ready() is True
    assert np.asarray((await server.infer("adder", fp32(1, 2))).outputs[0].data).tolist() == [3.0]


async def test_a_loaded_model_that_reports_not_ready_is_shown_unavailable() -> None:
    model = sum_model()
    server = await started(model)
    model.ready = False  # as a parallel model does while all its workers are down
    assert await server.model_ready("sum") is False
    [item] = await server.index()
    assert (item.state, item.reason) == (
        "UNAVAILABLE",
        "The model is loaded but reports it cannot serve right now",
    )
    model.ready = True
    assert await server.model_ready("sum") is True


async def test_statistics_come_from_the_core_without_any_transport() -> None:
    server = await started(sum_model())
    await server.infer("sum", fp32(1, 2))
    with pytest.raises(errors.InvalidShape):
        await server.infer("sum", _bad_request())
    [stats] = (await server.model_statistics("sum")).model_stats
    assert (stats.name, stats.inference_count) == ("sum", 1)
    assert stats.inference_stats.success.count == 1
    assert stats.inference_stats.fail.count == 1
    assert "statistics" in (await server.metadata()).extensions
    with pytest.raises(errors.ModelNotFound):
        await server.model_statistics("nope")


# -- restarts and the repository -----------------------------------------------------------------


def test_a_stopped_server_starts_again() -> None:
    # An embedding app's lifespan may run twice: Starlette's TestClient used twice does, each
    # time in a new event loop.
    server = Server([sum_model()])

    async def lifespan() -> tuple[bool, list[float], bool]:
        async with server:
            ready = await server.ready()
            total = np.asarray((await server.infer("sum", fp32(1, 2))).outputs[0].data).tolist()
        return ready, total, await server.ready()

    assert asyncio.run(lifespan()) == (True, [3.0], False)
    assert asyncio.run(lifespan()) == (True, [3.0], False)


def states(index: list[Any]) -> dict[str, str]:
    return {f"{item.name}{':' if item.version else ''}{item.version}": item.state for item in index}


async def test_the_repository_is_scanned_off_the_loop_and_only_when_asked(
    tmp_path: Path,
) -> None:
    from inferkit.repository import Discovery, ModelRepository

    class Recording(ModelRepository):
        def __init__(self, root: Path) -> None:
            super().__init__(root)
            self.threads: list[int] = []

        def discover(self) -> Discovery:
            self.threads.append(threading.get_ident())
            return super().discover()

    sum_model_folder(tmp_path / "a", "a")
    repository = Recording(tmp_path)
    server = Server(repository=repository)
    await server.start()
    sum_model_folder(tmp_path / "late", "late")
    sum_model_folder(tmp_path / "later", "later")
    # What metrics scrapes, statistics and the gRPC name lookup call: memory only.
    assert states(await server.index()) == {"a": "READY"}
    await server.model_statistics()
    assert len(repository.threads) == 1
    # The repository index operation asks for a scan; load scans too.
    assert states(await server.index(rescan=True)) == {
        "a": "READY",
        "late": "UNAVAILABLE",
        "later": "UNAVAILABLE",
    }
    await server.load("later")
    assert await server.model_ready("later")
    assert len(repository.threads) == 3
    assert threading.get_ident() not in repository.threads


async def test_a_model_whose_folder_is_deleted_leaves_the_index_once_unloaded(
    tmp_path: Path,
) -> None:
    from inferkit.repository import ModelRepository

    sum_model_folder(tmp_path / "idle", "idle")
    sum_model_folder(tmp_path / "busy", "busy")
    (tmp_path / "broken").mkdir()
    (tmp_path / "broken" / "model-settings.json").write_text("{")
    server = Server(
        [sum_model("mine")],
        settings=Settings(load_models_at_startup=False),
        repository=ModelRepository(tmp_path),
    )
    await server.start()
    await server.load("busy")
    assert states(await server.index()) == {
        "broken": "FAILED",
        "busy": "READY",
        "idle": "UNAVAILABLE",
        "mine": "UNAVAILABLE",
    }
    for folder in ("idle", "busy", "broken"):
        shutil.rmtree(tmp_path / folder)
    await server.rescan()
    # Loaded, so in memory: it serves until unloaded. A model given in code has no folder.
    assert states(await server.index()) == {"busy": "READY", "mine": "UNAVAILABLE"}
    assert (await server.infer("busy", fp32(1))).outputs
    await server.unload("busy")
    assert states(await server.index()) == {"mine": "UNAVAILABLE"}
    with pytest.raises(errors.ModelNotFound):
        await server.load("busy")


async def test_a_version_whose_folder_is_deleted_goes_the_same_way(tmp_path: Path) -> None:
    from inferkit.repository import ModelRepository

    for version in ("1", "2", "3"):
        sum_model_folder(tmp_path / f"v{version}", "iris", version)
    server = Server(repository=ModelRepository(tmp_path))
    await server.start()
    await server.unload("iris", "1")
    shutil.rmtree(tmp_path / "v1")
    shutil.rmtree(tmp_path / "v2")
    await server.rescan()
    assert states(await server.index()) == {"iris:2": "READY", "iris:3": "READY"}
    sum_model_folder(tmp_path / "v2", "iris", "2")  # back before it was unloaded: it stays
    await server.rescan()
    await server.unload("iris", "2")
    assert states(await server.index()) == {"iris:2": "UNAVAILABLE", "iris:3": "READY"}


@pytest.mark.parametrize(
    ("folder", "content", "name", "version"),
    [
        # Valid JSON with a bad field: the model it names is the one listed FAILED.
        ("v1", '{"name": "m", "implementation": 5, "parameters": {"version": "v1"}}', "m", "v1"),
        ("folder", '{"name": "m", "implementation": 5}', "m", ""),
        # Not JSON: nothing can be read, so the folder names it.
        ("m", "{", "m", ""),
    ],
    ids=["named-versioned", "named", "unreadable"],
)
async def test_a_broken_settings_file_fails_the_same_in_the_index_and_on_load(
    tmp_path: Path, folder: str, content: str, name: str, version: str
) -> None:
    from inferkit.repository import ModelRepository

    (tmp_path / folder).mkdir()
    (tmp_path / folder / "model-settings.json").write_text(content)
    server = Server(repository=ModelRepository(tmp_path))
    await server.start()
    [item] = await server.index()
    assert (item.name, item.version, item.state) == (name, version, "FAILED")

    with pytest.raises(errors.ModelLoadError) as info:
        await server.load(name)

    assert info.value.code == "MODEL_LOAD_FAILED"
    assert info.value.message == f"Model '{name}' failed to load: {item.reason}"
    assert [(i.name, i.version, i.state) for i in await server.index()] == [
        (name, version, "FAILED")
    ]


async def test_a_broken_file_naming_a_served_model_does_not_shadow_it(tmp_path: Path) -> None:
    from inferkit.repository import ModelRepository

    sum_model_folder(tmp_path / "good", "m")
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "model-settings.json").write_text('{"name": "m", "implementation": 5}')
    server = Server(repository=ModelRepository(tmp_path))
    await server.start()
    # Listed under its folder's name, so "m" stays the model that works.
    assert states(await server.index()) == {"bad": "FAILED", "m": "READY"}
    assert (await server.infer("m", fp32(1))).outputs

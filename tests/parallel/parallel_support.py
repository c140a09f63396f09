"""Helpers of the worker tests: model classes written to a file under tmp (imported by path in
each worker, as a repository's ``model.py`` is), a gate the tests hold to keep requests in
flight, and a look at this process's worker children through ``/proc``."""

from __future__ import annotations

import fcntl
import os
from pathlib import Path

MODELS = '''
import fcntl
import os

import numpy as np

from inferkit import InferenceResponse, MetadataModelResponse, MetadataTensor, Model
from inferkit import ResponseOutput
from inferkit.codecs import decode_tensor, encode_tensor
from inferkit.errors import InvalidRequest


def wait_for_gate(parameters):
    """Block the worker until the test releases the lock on the file named by ``gate``."""
    gate = (parameters or {}).get("gate")
    if gate:
        with open(gate) as file:
            fcntl.flock(file, fcntl.LOCK_SH)


class Gated(Model):
    """Doubles input 0 and says which process answered."""

    async def predict(self, payload):
        wait_for_gate(payload.parameters)
        x = decode_tensor(payload.inputs[0])
        return InferenceResponse(
            model_name=self.name,
            outputs=[encode_tensor("double", x * 2), encode_tensor("pid", np.array([os.getpid()]))],
        )


class Echo(Model):
    """Returns every input as it arrived (list, array or bytes), and the request parameters."""

    async def predict(self, payload):
        return InferenceResponse(
            model_name=self.name,
            parameters=payload.parameters,
            outputs=[
                ResponseOutput(
                    name=t.name,
                    shape=t.shape,
                    datatype=t.datatype,
                    parameters={"received": type(t.data).__name__},
                    data=t.data,
                )
                for t in payload.inputs
            ],
        )


class Failing(Model):
    async def predict(self, payload):
        if (payload.parameters or {}).get("kind") == "invalid":
            raise InvalidRequest("Expected a positive number, got -1", where="$.inputs[0].data[0]")
        raise RuntimeError("secret-token-123")


class BrokenLoad(Model):
    async def load(self):
        raise FileNotFoundError("weights.bin is missing")


class Streaming(Model):
    """Answers each request of a stream twice: with its input, then with its input + 1."""

    async def predict_stream(self, payloads):
        async for payload in payloads:
            x = decode_tensor(payload.inputs[0])
            for step in range(2):
                yield InferenceResponse(
                    model_name=self.name, outputs=[encode_tensor("y", x + step)]
                )


class FirstOnly(Model):
    """Answers the first request of a stream and ends it, leaving the others unread."""

    async def predict_stream(self, payloads):
        async for payload in payloads:
            yield InferenceResponse(model_name=self.name, outputs=[payload.inputs[0]])
            return


class Metered(Model):
    """Custom metrics made in __init__ and in load, recorded in predict."""

    def __init__(self, settings):
        super().__init__(settings)
        self.calls = self.metrics.counter("calls", "Calls", ["kind"])

    async def load(self):
        self.sizes = self.metrics.histogram("sizes", "Sizes", buckets=[1, 10])
        self.last = self.metrics.gauge("last", "Last value")

    async def predict(self, payload):
        x = float(decode_tensor(payload.inputs[0]).sum())
        self.calls.labels("any").inc()
        self.sizes.observe(x)
        self.last.set(x)
        return InferenceResponse(
            model_name=self.name,
            outputs=[encode_tensor("pid", np.array([os.getpid()]))],
        )


class Described(Model):
    """Metadata computed in load(), as a model reading its signature from an artefact would."""

    async def load(self):
        self.signature = [MetadataTensor(name="pixels", datatype="FP32", shape=[-1, 64])]

    def metadata(self):
        return MetadataModelResponse(name=self.name, platform="custom", inputs=self.signature)
'''


class Gate:
    """A file the tests lock exclusively; gated requests wait for a shared lock on it."""

    def __init__(self, path: Path) -> None:
        self.path = path
        path.touch()
        self._fd: int | None = None

    def close(self) -> None:
        fd = os.open(self.path, os.O_RDONLY)
        fcntl.flock(fd, fcntl.LOCK_EX)
        self._fd = fd

    def open(self) -> None:
        if self._fd is not None:
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None

    @property
    def parameters(self) -> dict[str, str]:
        return {"gate": str(self.path)}


def worker_children(parent: int | None = None) -> set[int]:
    """PIDs of the ``spawn``-ed workers of ``parent`` (default: this process), not counting
    multiprocessing's resource tracker. Found by scanning ``/proc/*/stat`` for the parent pid
    (``/proc/<pid>/task/*/children`` needs a kernel option this machine lacks)."""
    parent = os.getpid() if parent is None else parent
    found = set()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            cmdline = (entry / "cmdline").read_bytes()
        except (FileNotFoundError, ProcessLookupError):
            continue  # it ended while we looked
        # The command name may hold spaces and parentheses: fields start after the last ")".
        ppid = int(stat.rpartition(")")[2].split()[1])
        if ppid == parent and b"spawn_main" in cmdline:
            found.add(int(entry.name))
    return found


def alive(pid: int) -> bool:
    """Whether a process exists (a zombie counts: it was not reaped)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True

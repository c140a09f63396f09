"""The container check (``nox -s container``): build the examples' image and drive it for real.

1. Start a dockerd of its own (own data-root, exec-root, socket and pidfile; stopped by PID).
2. Make a base image offline: ``mmdebstrap`` a Debian rootfs with python3 and ``docker import``
   it (no registry is reachable here), cached between runs.
3. ``inferkit build examples -t ... --base-image <that>`` with the legacy builder, the host's CA
   bundle for pip, and host networking for the build's pip.
4. Run the image on loopback ports and drive it with tritonclient over REST and gRPC (the
   quickstart model, both multi-model models), check the HEALTHCHECK, the non-root user and
   that ``PORT`` becomes the HTTP port. Then the multi-model folder alone, written with
   ``inferkit dockerfile`` and built with ``docker build``.
5. Remove the containers and images and stop dockerd, also on failure.

Exit status: 0 passed, 1 failed, 3 skipped: dockerd (or mmdebstrap) cannot be used on this
machine; then a line ``SKIPPED: cannot start dockerd: <why>`` is printed, and written to
``--status-file`` (with ``passed`` or ``failed`` in the other cases) for CI to read.
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import traceback
from collections.abc import Iterator
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = ROOT / "examples"
SKIPPED = 3
BASE_IMAGE = "inferkit-check-base:bookworm"
IMAGE = "inferkit-check:examples"
MULTI_IMAGE = "inferkit-check:multi-model"
CA_BUNDLE = Path("/etc/ssl/certs/ca-certificates.crt")
#: Upper bounds (s): the whole check stays inside CI's budget even when something hangs.
DOCKERD_START_S = 60
BUILD_S = 1200
READY_S = 180
#: The whole check, however its steps go: then it fails, and cleans up as on any failure.
TOTAL_S = 2400


class Skip(Exception):
    """The machine cannot run the check (not a failure of inferkit)."""


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--status-file", type=Path, help="write passed/failed/skipped: ... here")
    parser.add_argument(
        "--cache",
        type=Path,
        default=Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache"))
        / "inferkit-container-check",
        help="keeps the base rootfs and dockerd's data-root between runs",
    )
    parser.add_argument("--fresh", action="store_true", help="empty the cache first")
    args = parser.parse_args()
    started = time.monotonic()

    def too_long(signum: int, frame: object) -> None:
        raise TimeoutError(f"the container check took more than {TOTAL_S} s")

    signal.signal(signal.SIGALRM, too_long)
    signal.alarm(TOTAL_S)
    try:
        check(args.cache, fresh=args.fresh)
    except Skip as exc:
        status, code = f"skipped: cannot start dockerd: {exc}", SKIPPED
        print(f"\nSKIPPED: cannot start dockerd: {exc}", flush=True)
    except Exception as exc:
        traceback.print_exc()
        status, code = f"failed: {type(exc).__name__}: {exc}", 1
        print(f"\nFAILED: {type(exc).__name__}: {exc}", flush=True)
    else:
        status, code = "passed", 0
        print(f"\nPASSED: container check in {time.monotonic() - started:.0f} s", flush=True)
    signal.alarm(0)
    if args.status_file is not None:
        args.status_file.write_text(status + "\n")
    return code


def check(cache: Path, *, fresh: bool) -> None:
    if os.geteuid() != 0:
        raise Skip("dockerd needs root and this is not root")
    for tool, package in (("dockerd", "docker.io"), ("docker", "docker.io"), ("mmdebstrap", "")):
        if shutil.which(tool) is None:
            raise Skip(f"no `{tool}` on PATH (apt-get install {package or tool})")
    if fresh:
        shutil.rmtree(cache, ignore_errors=True)
    cache.mkdir(parents=True, exist_ok=True)
    with _locked(cache / "lock"), _dockerd(cache / "docker") as env:
        _base_image(cache, env)
        step("prepare the example models")
        _run([sys.executable, str(EXAMPLES / "prepare.py")], timeout=600)
        step("inferkit build examples")
        build_env = {**env, "DOCKER_BUILDKIT": "0"}
        _run(
            [
                *_inferkit(),
                "build",
                str(EXAMPLES),
                "-t",
                IMAGE,
                "--base-image",
                BASE_IMAGE,
                "--ca-bundle",
                str(CA_BUNDLE),
                "--network",
                "host",
            ],
            env=build_env,
            timeout=BUILD_S,
        )
        try:
            _drive(env)
            _multi_model(env)
        finally:
            _docker(env, "rmi", "-f", IMAGE, MULTI_IMAGE, check=False)
            _docker(env, "image", "prune", "-f", check=False)


def _multi_model(env: dict[str, str]) -> None:
    """The walkthrough's folder alone, the `inferkit dockerfile` way: its settings.json asks
    for ports 9080-9082, the image serves on its promised 8080-8082 all the same."""
    step("inferkit dockerfile examples/multi-model (a copy), then docker build")
    with tempfile.TemporaryDirectory(prefix="inferkit-check-") as tmp:
        folder = Path(tmp) / "multi-model"
        shutil.copytree(EXAMPLES / "multi-model", folder)
        options = ["--base-image", BASE_IMAGE, "--ca-bundle", str(CA_BUNDLE)]
        _run([*_inferkit(), "dockerfile", str(folder), *options], timeout=120)
        _run(
            ["docker", "build", "--network", "host", "-t", MULTI_IMAGE, str(folder)],
            env={**env, "DOCKER_BUILDKIT": "0"},
            timeout=BUILD_S,
        )
    name, http = "inferkit-check-multi", _free_port()
    _docker(env, "rm", "-f", name, check=False)
    try:
        _docker(env, "run", "-d", "--name", name, "-p", f"127.0.0.1:{http}:8080", MULTI_IMAGE)
        _wait_healthy(env, name)
        import tritonclient.http as httpclient

        sys.path.insert(0, str(EXAMPLES / "multi-model"))
        import data

        _, mushrooms, _, _ = data.mushrooms()
        rest = httpclient.InferenceServerClient(f"127.0.0.1:{http}", network_timeout=60.0)
        row = np.asarray(mushrooms[0:1], dtype=np.float32)
        tensor = httpclient.InferInput("predict", list(row.shape), "FP32")
        tensor.set_data_from_numpy(row)
        result = rest.infer("mushroom_xgboost", [tensor], model_version="v2.0.0")
        probability = result.as_numpy("predict")
        assert probability is not None and 0.0 <= float(probability.reshape(-1)[0]) <= 1.0
        rest.close()
        print("multi-model image: mushroom_xgboost answers on the promised port", flush=True)
    except BaseException:
        print(_docker(env, "logs", "--tail", "40", name, check=False, stderr=True))
        raise
    finally:
        _docker(env, "rm", "-f", name, check=False)


def _drive(env: dict[str, str]) -> None:
    config = _docker(env, "image", "inspect", "--format", "{{json .Config}}", IMAGE)
    image = json.loads(config)
    assert image["User"] == "1000:1000", image["User"]
    assert set(image["ExposedPorts"]) == {"8080/tcp", "8081/tcp", "8082/tcp"}, image
    http, grpc, metrics, knative = (_free_port() for _ in range(4))
    names = ["inferkit-check-main", "inferkit-check-port"]
    for name in names:
        _docker(env, "rm", "-f", name, check=False)
    try:
        step("docker run: the image on loopback ports")
        _docker(
            env,
            "run",
            "-d",
            "--name",
            names[0],
            "-p",
            f"127.0.0.1:{http}:8080",
            "-p",
            f"127.0.0.1:{grpc}:8081",
            "-p",
            f"127.0.0.1:{metrics}:8082",
            IMAGE,
        )
        # Knative's way: PORT names the HTTP port inside the container.
        _docker(
            env,
            "run",
            "-d",
            "--name",
            names[1],
            "-e",
            "PORT=9090",
            "-p",
            f"127.0.0.1:{knative}:9090",
            IMAGE,
        )
        _wait_healthy(env, names[0])
        _triton(http, grpc)
        _metrics(metrics)
        uid = _docker(env, "exec", names[0], "python", "-c", "import os; print(os.getuid())")
        assert uid.strip() == "1000", uid
        _wait_healthy(env, names[1])
        _ready(knative)
        print("PORT=9090 served the HTTP port, and the HEALTHCHECK followed it", flush=True)
    except BaseException:
        for name in names:
            print(f"--- docker logs {name} (last 40 lines)", flush=True)
            print(_docker(env, "logs", "--tail", "40", name, check=False, stderr=True))
        raise
    finally:
        for name in names:
            _docker(env, "rm", "-f", name, check=False)


def _triton(http_port: int, grpc_port: int) -> None:
    import tritonclient.grpc as grpcclient
    import tritonclient.http as httpclient

    sys.path.insert(0, str(EXAMPLES / "multi-model"))
    import data  # the example's own test rows

    _, digits, _, digit_labels = data.digits()
    _, mushrooms, _, _ = data.mushrooms()
    step("tritonclient over REST")
    rest = httpclient.InferenceServerClient(f"127.0.0.1:{http_port}", network_timeout=60.0)
    assert rest.is_server_ready()
    models = {item["name"]: item for item in rest.get_model_repository_index()}
    for name in ("doc-sim-model", "mnist_sklearn", "mushroom_xgboost", "word-stream"):
        assert models[name]["state"] == "READY", models
    row = np.asarray(digits[0:1], dtype=np.float32)
    tensor = httpclient.InferInput("predict", list(row.shape), "FP32")
    tensor.set_data_from_numpy(row)
    result = rest.infer("mnist_sklearn", [tensor], model_version="v1.0.0")
    predicted = result.as_numpy("predict")
    assert predicted is not None and predicted.reshape(-1)[0] == digit_labels[0], predicted
    docs = np.array([["a b c"], ["a b d"]], dtype=np.object_)
    text = httpclient.InferInput("docs", [2, 1], "BYTES")
    text.set_data_from_numpy(docs)
    score = rest.infer("doc-sim-model", [text]).as_numpy("output-0")
    assert score is not None and np.allclose(score, [2 / 3]), score
    rest.close()
    print("REST: ready, index, mnist_sklearn and doc-sim-model inferences are right", flush=True)

    step("tritonclient over gRPC")
    rpc = grpcclient.InferenceServerClient(f"127.0.0.1:{grpc_port}")
    assert rpc.is_server_ready()
    assert rpc.is_model_ready("mushroom_xgboost", "v2.0.0")
    row = np.asarray(mushrooms[0:1], dtype=np.float32)
    tensor = grpcclient.InferInput("predict", list(row.shape), "FP32")
    tensor.set_data_from_numpy(row)
    result = rpc.infer("mushroom_xgboost", [tensor], model_version="v2.0.0", client_timeout=60)
    probability = result.as_numpy("predict")
    assert probability is not None and 0.0 <= float(probability.reshape(-1)[0]) <= 1.0
    text = grpcclient.InferInput("docs", [2, 1], "BYTES")
    text.set_data_from_numpy(docs)
    score = rpc.infer("doc-sim-model", [text], client_timeout=60).as_numpy("output-0")
    assert score is not None and np.allclose(score, [2 / 3]), score
    rpc.close()
    print("gRPC: ready, mushroom_xgboost and doc-sim-model inferences are right", flush=True)


def _metrics(port: int) -> None:
    import urllib.request

    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=30) as response:
        body = response.read().decode()
    assert "model_infer_request_success" in body or "inferkit" in body, body[:500]
    print("metrics: served on the metrics port", flush=True)


def _ready(port: int) -> None:
    import urllib.request

    with urllib.request.urlopen(f"http://127.0.0.1:{port}/v2/health/ready", timeout=30) as ready:
        assert ready.status == 200


def _wait_healthy(env: dict[str, str], name: str) -> None:
    step(f"wait for {name} to be healthy (its HEALTHCHECK)")
    deadline = time.monotonic() + READY_S
    while time.monotonic() < deadline:
        state = _docker(
            env, "inspect", "--format", "{{.State.Status}} {{.State.Health.Status}}", name
        )
        status, health = state.split()
        if status != "running":
            raise AssertionError(f"{name} is {status}")
        if health == "healthy":
            return
        time.sleep(2)
    raise AssertionError(f"{name} not healthy after {READY_S} s")


def _base_image(cache: Path, env: dict[str, str]) -> None:
    present = _docker(env, "image", "inspect", BASE_IMAGE, check=False, quiet=True)
    if present.strip().startswith("["):
        if "Id" in present:
            print(f"base image {BASE_IMAGE}: cached", flush=True)
            return
    rootfs = cache / "bookworm-python3.tar"
    if not rootfs.is_file():
        step("mmdebstrap a Debian bookworm rootfs with python3 (cached for later runs)")
        partial = rootfs.with_suffix(".partial.tar")
        _run(
            [
                "mmdebstrap",
                "--variant=minbase",
                "--include=python3,python3-venv,ca-certificates",
                "bookworm",
                str(partial),
            ],
            timeout=900,
        )
        partial.rename(rootfs)
    step(f"docker import {rootfs.name} {BASE_IMAGE}")
    _docker(env, "import", "--change", 'CMD ["python3"]', str(rootfs), BASE_IMAGE)


@contextlib.contextmanager
def _dockerd(data_root: Path) -> Iterator[dict[str, str]]:
    """A dockerd of this check's own; yields the environment that points docker at it."""
    # A short path: a unix socket's path is limited to ~100 bytes.
    run = Path(tempfile.mkdtemp(prefix="ikd-"))
    sock, pidfile, log = run / "docker.sock", run / "docker.pid", run / "dockerd.log"
    step(f"start dockerd (data-root {data_root}, socket {sock})")
    with log.open("wb") as out:
        daemon = subprocess.Popen(
            [
                "dockerd",
                "--data-root",
                str(data_root),
                "--exec-root",
                str(run / "exec"),
                "-H",
                f"unix://{sock}",
                "--pidfile",
                str(pidfile),
            ],
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    env = {**os.environ, "DOCKER_HOST": f"unix://{sock}"}
    try:
        deadline = time.monotonic() + DOCKERD_START_S
        while True:
            if daemon.poll() is not None:
                raise Skip(f"dockerd exited ({daemon.returncode}): {_tail(log)}")
            if _docker(env, "version", "--format", "{{.Server.Version}}", check=False, quiet=True):
                break
            if time.monotonic() > deadline:
                raise Skip(f"dockerd did not answer in {DOCKERD_START_S} s: {_tail(log)}")
            time.sleep(1)
        yield env
    finally:
        step(f"stop dockerd (pid {daemon.pid})")
        if daemon.poll() is None:
            daemon.send_signal(signal.SIGTERM)
            try:
                daemon.wait(timeout=60)
            except subprocess.TimeoutExpired:
                daemon.kill()
                daemon.wait(timeout=30)
        _unmount_under(run)
        shutil.rmtree(run, ignore_errors=True)


def _unmount_under(folder: Path) -> None:
    """Unmount what dockerd left mounted under ``folder`` (its exec-root's network namespace)."""
    prefix = str(folder.resolve()) + "/"
    with open("/proc/self/mountinfo") as mounts:
        points = [line.split()[4] for line in mounts if line.split()[4].startswith(prefix)]
    for point in sorted(points, reverse=True):  # the deepest first
        subprocess.run(["umount", "-l", point], check=False, timeout=30)


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    with path.open("w") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            raise Skip(f"another container check holds {path}") from None
        yield


def _docker(
    env: dict[str, str], *args: str, check: bool = True, quiet: bool = False, stderr: bool = False
) -> str:
    done = subprocess.run(
        ["docker", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    if check and done.returncode != 0:
        raise RuntimeError(f"docker {' '.join(args)} failed: {done.stderr.strip()}")
    if done.returncode != 0 and not quiet and not stderr:
        print(done.stderr.strip(), flush=True)
    if stderr:
        return done.stdout + done.stderr
    return done.stdout if done.returncode == 0 else ""


def _run(command: list[str], *, env: dict[str, str] | None = None, timeout: float) -> None:
    print("$ " + " ".join(command), flush=True)
    subprocess.run(command, env=env, check=True, timeout=timeout)


def _inferkit() -> list[str]:
    return [sys.executable, "-m", "inferkit"]


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def _tail(log: Path) -> str:
    lines = [line for line in log.read_text(errors="replace").splitlines() if line.strip()]
    return lines[-1] if lines else "no output"


def step(what: str) -> None:
    print(f"\n=== {time.strftime('%H:%M:%S')} {what}", flush=True)


if __name__ == "__main__":
    sys.exit(main())

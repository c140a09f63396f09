"""The noxfile's long-lived commands end with nox: a SIGTERM to nox reaches the child."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

# A stand-in for `inferkit start`: says it is up, then records the signal that ends it.
CHILD = textwrap.dedent(
    """
    import os, signal, sys, time
    out = sys.argv[1]
    def ended(signum, frame):
        with open(out, "a") as f:
            f.write(f"{signal.Signals(signum).name} {os.getpid()}\\n")
        sys.exit(0)
    signal.signal(signal.SIGTERM, ended)
    with open(out, "a") as f:
        f.write(f"ready {os.getpid()}\\n")
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        time.sleep(0.05)
    """
)


def _probe_noxfile(folder: Path) -> Path:
    noxfile = folder / "noxfile.py"
    noxfile.write_text(
        textwrap.dedent(
            f"""
            import sys
            sys.path.insert(0, {str(ROOT)!r})
            import nox
            from noxfile import run_until_signalled

            @nox.session(python=False)
            def probe(session):
                out = session.posargs[0]
                run_until_signalled(session, {sys.executable!r}, "-c", {CHILD!r}, out)
            """
        )
    )
    return noxfile


def _wait_for(predicate: object, seconds: float) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if predicate():  # type: ignore[operator]
            return True
        time.sleep(0.05)
    return False


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGHUP])
def test_a_signal_to_nox_ends_the_command_it_runs(tmp_path: Path, signum: int) -> None:
    noxfile = _probe_noxfile(tmp_path)
    out = tmp_path / "child.log"
    nox = subprocess.Popen(
        [sys.executable, "-m", "nox", "-f", str(noxfile), "-s", "probe", "--", str(out)],
        cwd=tmp_path,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,  # the signal goes to nox alone, as from a supervisor
    )
    try:
        assert _wait_for(lambda: out.exists() and "ready" in out.read_text(), 60)
        child = int(out.read_text().split()[1])
        nox.send_signal(signum)
        nox.wait(timeout=60)
        assert _wait_for(lambda: not _alive(child), 30), "the child outlived nox"
        # It was asked to stop (SIGTERM, so it could drain), not killed.
        assert f"SIGTERM {child}" in out.read_text()
    finally:
        if nox.poll() is None:
            os.killpg(nox.pid, signal.SIGKILL)
            nox.wait()
        for line in out.read_text().splitlines() if out.exists() else []:
            pid = int(line.split()[1])
            if _alive(pid):
                os.kill(pid, signal.SIGKILL)

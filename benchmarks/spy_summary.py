"""Where a running server spends its CPU, by package: py-spy samples summed per top-level module.

    python benchmarks/spy_summary.py PID [--seconds 10]    # while a load generator runs

Samples the process with ``py-spy record --format raw`` (``pip install py-spy``; needs the
permission to trace it, e.g. root or the same user with ptrace allowed) and prints the share
of samples whose innermost frame is in each package (``inferkit``, ``hypercorn``, ``h11``,
``asyncio``, ``starlette``, ...), then the inclusive share of the functions seen most. It is
how docs/performance.md says how much of a small request is the HTTP server itself. Not run
by the tests.
"""

from __future__ import annotations

import argparse
import collections
import re
import subprocess
import sys
import tempfile
from pathlib import Path

_FILE = re.compile(r"\((.*?)(?::\d+)?\)$")
_LINE = re.compile(r":\d+\)$")


def package(frame: str) -> str:
    """``hypercorn`` for ``run (hypercorn/asyncio/run.py:12)``; the script's name otherwise."""
    match = _FILE.search(frame)
    if match is None:
        return "?"
    path = match.group(1)
    for marker in ("site-packages/", "lib/python3"):
        if marker in path:
            path = path.split(marker, 1)[1].lstrip("/").split("/", 1)[-1]
    return path.split("/", 1)[0].removesuffix(".py")


def summarise(lines: list[str], top: int = 25) -> str:
    """The report for py-spy raw lines (``frame;frame;... count``)."""
    own: collections.Counter[str] = collections.Counter()
    inclusive: collections.Counter[str] = collections.Counter()
    total = 0
    for line in lines:
        stack, _, count = line.rstrip().rpartition(" ")
        if not stack or not count.isdigit():
            continue
        frames = [_LINE.sub(")", frame) for frame in stack.split(";")]
        total += int(count)
        own[package(frames[-1])] += int(count)
        for frame in set(frames):
            inclusive[frame] += int(count)
    if not total:
        return "no samples"
    out = [f"{total} samples", "", "self time by package:"]
    out += [f"  {n / total:6.1%}  {name}" for name, n in own.most_common(12)]
    # The stack's roots (the CLI, the event loop) are in most samples and say nothing.
    inner = [(frame, n) for frame, n in inclusive.most_common() if n < total / 2][:top]
    out += ["", "inclusive, by function (roots left out):"]
    out += [f"  {n / total:6.1%}  {frame[:110]}" for frame, n in inner]
    return "\n".join(out)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("pid", type=int)
    parser.add_argument("--seconds", type=int, default=10)
    parser.add_argument("--rate", type=int, default=500, help="samples per second (500)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        raw = Path(tmp) / "spy.txt"
        command = ["py-spy", "record", "-p", str(args.pid), "-d", str(args.seconds)]
        command += ["-r", str(args.rate), "-f", "raw", "-o", str(raw), "--nonblocking"]
        done = subprocess.run(
            command,
            capture_output=True,
            text=True,
            check=False,
        )
        if done.returncode != 0 or not raw.exists():
            sys.exit(f"py-spy failed: {done.stderr.strip()}")
        print(summarise(raw.read_text().splitlines()))


if __name__ == "__main__":
    main()

"""In-process cost of a large JSON tensor request, plain path against the fast path.

What the REST endpoint and the ``sum`` model of the benchmark do per request, without HTTP:
decode the body, check the inputs, ``NumpyCodec.decode_input``, sum, encode the response.
``plain`` is the msgspec decoder alone (the path before the fast one, and still the fallback);
``fast`` is :class:`inferkit.transports.json_numbers.NumbersDecoder` first. Interleaved runs,
min and median::

    python benchmarks/json_tensors.py                 # 1,000,000 FP32, 15 runs each
    python benchmarks/json_tensors.py --elements 16   # a small request (below the threshold)
    python benchmarks/json_tensors.py --values zeros  # a tenth 0.0 (the text is checked)

``--values``: ``random`` floats in [0, 1) as Python writes them; ``zeros``: a tenth of them
0.0 (integral values: the fast path reads the text again for integers); ``js``: those zeros
written ``0``, as JavaScript writes them (the input keeps msgspec's list, after the parse);
``integers``: all written as integers (seen before parsing; msgspec's list).
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from collections.abc import Callable
from typing import Any

import msgspec
import numpy as np

from inferkit.admission import check_inputs
from inferkit.codecs import NumpyCodec, encode_tensor
from inferkit.transports.json_numbers import NumbersDecoder
from inferkit.types import InferenceRequest, InferenceResponse, encode_json


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--elements", type=int, default=1_000_000)
    parser.add_argument("--datatype", default="FP32", choices=["FP16", "FP32", "FP64"])
    parser.add_argument("--runs", type=int, default=15)
    parser.add_argument("--values", default="random", choices=["random", "zeros", "js", "integers"])
    args = parser.parse_args()

    rng = np.random.default_rng(0)
    data: list[Any] = rng.random(args.elements, dtype=np.float32).tolist()
    if args.values in ("zeros", "js"):
        zero = 0.0 if args.values == "zeros" else 0
        data = [zero if i % 10 == 9 else x for i, x in enumerate(data)]
    elif args.values == "integers":
        data = rng.integers(0, 256, args.elements).tolist()
    tensor = {"name": "x", "shape": [1, args.elements], "datatype": args.datatype}
    body = json.dumps({"inputs": [{**tensor, "data": data}]}, separators=(",", ":")).encode()
    plain = msgspec.json.Decoder(InferenceRequest).decode
    numbers = NumbersDecoder(plain)

    def serve(request: InferenceRequest) -> bytes:
        check_inputs(request, [])
        total = NumpyCodec.decode_input(request.inputs[0]).sum(axis=-1)
        response = InferenceResponse(model_name="sum", outputs=[encode_tensor("total", total)])
        return encode_json(response)

    def run_plain() -> bytes:
        return serve(plain(body))

    def run_fast() -> bytes:
        return serve(numbers.decode(body) or plain(body))

    assert run_plain() == run_fast()
    runs: dict[str, tuple[Callable[[], bytes], list[float]]] = {
        "plain": (run_plain, []),
        "fast": (run_fast, []),
    }
    for _ in range(args.runs):
        for function, times in runs.values():
            start = time.perf_counter()
            function()
            times.append(time.perf_counter() - start)
    print(
        f"{args.elements} x {args.datatype} ({args.values}), {len(body)} bytes of JSON, "
        f"{args.runs} runs"
    )
    medians = {}
    for name, (_, times) in runs.items():
        medians[name] = statistics.median(times)
        print(f"{name:6s} min {min(times) * 1e3:9.3f} ms  median {medians[name] * 1e3:9.3f} ms")
    print(f"plain / fast (medians): {medians['plain'] / medians['fast']:.2f}x")


if __name__ == "__main__":
    main()

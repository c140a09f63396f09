"""Send one request from a model's test set and print the response (the seed's ``test.py``).

    python3 test.py --model mnist_sklearn --version v1.0.0
    python3 test.py --model mushroom_xgboost --version v2.0.0 --port 9080

Only the standard library talks to the server; the test rows come from ``data.py``.
"""

from __future__ import annotations

import argparse
import json
import sys
import urllib.error
import urllib.request

import data  # next to this script, so first on sys.path

TEST_SETS = {"mnist_sklearn": data.digits, "mushroom_xgboost": data.mushrooms}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", required=True, choices=sorted(TEST_SETS))
    parser.add_argument("--version", required=True, help="e.g. v1.0.0")
    parser.add_argument("--host", default="localhost")
    parser.add_argument("--port", type=int, default=9080, help="the server's http_port")
    args = parser.parse_args(argv)

    _, x_test, _, _ = TEST_SETS[args.model]()
    x_0 = x_test[0:1]
    request = {
        "inputs": [
            {"name": "predict", "shape": list(x_0.shape), "datatype": "FP32", "data": x_0.tolist()}
        ]
    }
    url = f"http://{args.host}:{args.port}/v2/models/{args.model}/versions/{args.version}/infer"
    post = urllib.request.Request(
        url, data=json.dumps(request).encode(), headers={"Content-Type": "application/json"}
    )
    # No proxy: the server is local, whatever http_proxy says.
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    try:
        with opener.open(post, timeout=30) as response:
            answer = json.load(response)
    except urllib.error.HTTPError as exc:
        print(f"{exc.code} {exc.reason}: {exc.read().decode()}", file=sys.stderr)
        return 1
    except urllib.error.URLError as exc:
        print(f"Cannot reach {url}: {exc.reason}", file=sys.stderr)
        return 1
    print(json.dumps(answer))
    return 0


if __name__ == "__main__":
    sys.exit(main())

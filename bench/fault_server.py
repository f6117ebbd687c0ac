"""A tiny KServe V2 (Open Inference Protocol) model server that misbehaves on purpose.

It predicts ``1 if x0 > 0 else 0`` (with class probabilities) for every row,
except rows whose ``x0`` is one of the magic values below:

* mode ``fail-one``: a batch holding a row with ``x0 == POISON`` is answered
  with HTTP 500 (a model that raises on one particular input);
* mode ``bad-answer``: HTTP 200, but a row with ``x0 == NULL_LABEL`` gets a
  null label, ``x0 == NAN_LABEL`` a NaN label, and a batch holding a row with
  ``x0 == SHORT_PROBS`` gets a probabilities tensor one value short;
* mode ``flip``: a healthy server that predicts the opposite (``x0 < 0``), to
  tell which version scored a record.

    python bench/fault_server.py --port P --model NAME --version V --mode fail-one

Binds 127.0.0.1. ``GET /v2/models/NAME/ready`` answers ``{"ready": true}``.
"""

from __future__ import annotations

import argparse
import json
from typing import Any

from aiohttp import web

POISON = 666.0
NULL_LABEL = 555.0
NAN_LABEL = 444.0
SHORT_PROBS = 333.0
MODES = ("fail-one", "bad-answer", "flip")


def rows_of(body: dict[str, Any]) -> list[list[float]]:
    tensor = body["inputs"][0]
    n, width = tensor["shape"]
    data = tensor["data"]
    return [data[i * width : (i + 1) * width] for i in range(n)]


def answer(mode: str, rows: list[list[float]]) -> tuple[int, list[Any], list[float]]:
    """(HTTP status, labels, flat probabilities) for the rows, as ``mode`` misbehaves."""
    x0 = [r[0] for r in rows]
    if mode == "fail-one" and POISON in x0:
        return 500, [], []
    labels: list[Any] = [int(v < 0) if mode == "flip" else int(v > 0) for v in x0]
    probs = [p for label in labels for p in ((0.2, 0.8) if label else (0.8, 0.2))]
    if mode == "bad-answer":
        for i, v in enumerate(x0):
            if v == NULL_LABEL:
                labels[i] = None
            elif v == NAN_LABEL:
                labels[i] = float("nan")
        if SHORT_PROBS in x0:
            probs = probs[:-1]
    return 200, labels, probs


def build_app(model: str, version: str, mode: str) -> web.Application:
    async def ready(_: web.Request) -> web.Response:
        return web.json_response({"name": model, "ready": True})

    async def infer(request: web.Request) -> web.Response:
        rows = rows_of(await request.json())
        status, labels, probs = answer(mode, rows)
        if status != 200:
            return web.Response(status=status, text=f"model {model} failed on this input\n")
        body = {
            "model_name": model,
            "model_version": version,
            "outputs": [
                {"name": "label", "shape": [len(labels)], "datatype": "INT64", "data": labels},
                {
                    "name": "probabilities",
                    "shape": [len(labels), 2],
                    "datatype": "FP64",
                    "data": probs,
                    "parameters": {"classes": "[0, 1]"},
                },
            ],
        }
        # json.dumps writes NaN as the bare token NaN, which is the point of NAN_LABEL
        return web.Response(text=json.dumps(body), content_type="application/json")

    app = web.Application()
    app.router.add_get(f"/v2/models/{model}/ready", ready)
    app.router.add_get(f"/v2/models/{model}", ready)
    app.router.add_post(f"/v2/models/{model}/infer", infer)
    return app


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--model", required=True)
    parser.add_argument("--version", default="1")
    parser.add_argument("--mode", choices=MODES, required=True)
    args = parser.parse_args()
    web.run_app(
        build_app(args.model, args.version, args.mode),
        host="127.0.0.1",
        port=args.port,
        print=None,
        access_log=None,
    )


if __name__ == "__main__":
    main()

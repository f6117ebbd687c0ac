"""The KServe V1/V2 client against an in-process transport: bodies, parsing, retries."""

from __future__ import annotations

import asyncio
import json

import httpx
import pytest

from connectors.kserve_client import InferenceClient, ModelServerError
from schemas.settings import KServeSettings
from tests.helpers import Recorder

URL = "http://127.0.0.1:8081"


def client(
    handler: Recorder, delays: list[float] | None = None, retries: int = 3
) -> InferenceClient:
    async def fake_sleep(seconds: float) -> None:
        if delays is not None:
            delays.append(seconds)

    return InferenceClient(
        KServeSettings(max_retries=retries, timeout_s=1.0),
        transport=httpx.MockTransport(handler),
        sleep=fake_sleep,
    )


def run(coro):
    return asyncio.run(coro)


def test_v1_request_and_response():
    rec = Recorder(
        httpx.Response(
            200,
            json={
                "predictions": [1, 0],
                "model_version": "7",
                "probabilities": [{"1": 0.9}, {"0": 0.8}],
            },
        )
    )
    result = run(client(rec).predict(URL, "churn", "v1", [[1.0, 2.0], [3.0, 4.0]]))
    assert rec.requests[0].url == f"{URL}/v1/models/churn:predict"
    assert json.loads(rec.requests[0].content) == {"instances": [[1.0, 2.0], [3.0, 4.0]]}
    assert result.labels == [1, 0]
    assert result.model_version == "7"
    assert result.probabilities == [{"1": 0.9}, {"0": 0.8}]


def test_v2_request_and_response():
    rec = Recorder(
        httpx.Response(
            200,
            json={
                "model_name": "churn",
                "model_version": "8",
                "outputs": [{"name": "label", "shape": [2], "datatype": "INT64", "data": [0, 1]}],
            },
        )
    )
    result = run(client(rec).predict(URL + "/", "churn", "v2", [[1.0, 2.0], [3.0, 4.0]]))
    assert rec.requests[0].url == f"{URL}/v2/models/churn/infer"
    body = json.loads(rec.requests[0].content)
    assert body["inputs"][0]["shape"] == [2, 2]
    assert body["inputs"][0]["data"] == [1.0, 2.0, 3.0, 4.0]
    assert body["inputs"][0]["datatype"] == "FP64"
    assert (result.labels, result.model_version) == ([0, 1], "8")
    assert result.probabilities is None  # a server that sends no probabilities output


def test_v2_probabilities_are_kept_with_their_class_names():
    output = {"name": "probabilities", "shape": [2, 2], "datatype": "FP64"}
    outputs = [
        {"name": "label", "shape": [2], "datatype": "INT64", "data": [0, 1]},
        output | {"data": [0.9, 0.1, 0.2, 0.8], "parameters": {"classes": '["no", "yes"]'}},
    ]
    rec = Recorder(httpx.Response(200, json={"outputs": outputs}))
    result = run(client(rec).predict(URL, "churn", "v2", [[1.0], [2.0]]))
    assert result.probabilities == [{"no": 0.9, "yes": 0.1}, {"no": 0.2, "yes": 0.8}]
    # without class names the columns are numbered; a wrong shape is a malformed answer
    unnamed = [outputs[0], output | {"data": [0.9, 0.1, 0.2, 0.8]}]
    rec = Recorder(httpx.Response(200, json={"outputs": unnamed}))
    assert run(client(rec).predict(URL, "churn", "v2", [[1.0], [2.0]])).probabilities == [
        {"0": 0.9, "1": 0.1},
        {"0": 0.2, "1": 0.8},
    ]
    short = [outputs[0], output | {"data": [0.9, 0.1]}]
    with pytest.raises(ModelServerError, match="unexpected v2 response"):
        run(
            client(Recorder(httpx.Response(200, json={"outputs": short}))).predict(
                URL, "churn", "v2", [[1.0], [2.0]]
            )
        )


def test_retriable_failures_are_retried_with_growing_backoff():
    rec = Recorder(
        httpx.Response(503, text="loading"),
        httpx.ConnectError("refused"),
        httpx.Response(200, json={"predictions": [1]}),
    )
    delays: list[float] = []
    result = run(client(rec, delays).predict(URL, "m", "v1", [[0.0]]))
    assert result.labels == [1]
    assert len(rec.requests) == 3
    assert len(delays) == 2 and all(d > 0 for d in delays)


def test_retries_stop_at_the_budget_and_raise_a_retriable_error():
    rec = Recorder(httpx.ConnectError("refused"))
    with pytest.raises(ModelServerError, match="unreachable") as info:
        run(client(rec, retries=2).predict(URL, "m", "v1", [[0.0]]))
    assert info.value.retriable
    assert info.value.url == URL and info.value.model == "m"
    assert len(rec.requests) == 3


def test_client_errors_are_not_retried():
    rec = Recorder(httpx.Response(400, text="bad shape"))
    with pytest.raises(ModelServerError, match="answered 400: bad shape") as info:
        run(client(rec).predict(URL, "m", "v1", [[0.0]]))
    assert not info.value.retriable
    assert len(rec.requests) == 1


def test_an_internal_error_goes_back_to_the_caller_at_once():
    """A 500 may be the input's fault: the scorer isolates records, the client does not retry."""
    rec = Recorder(httpx.Response(500, text="boom"))
    with pytest.raises(ModelServerError, match="answered 500: boom") as info:
        run(client(rec).predict(URL, "m", "v1", [[0.0]]))
    assert info.value.retriable and not info.value.unavailable
    assert len(rec.requests) == 1


def test_timeouts_are_retriable():
    rec = Recorder(httpx.ReadTimeout("slow"), httpx.Response(200, json={"predictions": [3]}))
    assert run(client(rec).predict(URL, "m", "v1", [[0.0]])).labels == [3]


def test_a_short_answer_is_an_error_not_a_silent_gap():
    rec = Recorder(httpx.Response(200, json={"predictions": [1]}))
    with pytest.raises(ModelServerError, match="1 predictions for 2 rows"):
        run(client(rec).predict(URL, "m", "v1", [[0.0], [1.0]]))


def test_ready_probe():
    assert run(client(Recorder(httpx.Response(200, json={"ready": True}))).ready(URL, "m", "v2"))
    assert not run(
        client(Recorder(httpx.Response(200, json={"ready": False}))).ready(URL, "m", "v1")
    )
    assert not run(client(Recorder(httpx.ConnectError("down"))).ready(URL, "m", "v1"))


# ------------------------------------------------- the production path: aiohttp on loopback


def test_model_calls_over_real_http_map_answers_and_failures_alike() -> None:
    """Without an injected transport the model calls go through aiohttp: a real loopback
    server answers, fails, refuses and stalls, and the client tells each case apart."""
    from aiohttp import web

    from connectors.process import free_port

    seen: list[dict] = []
    stall = asyncio.Event()  # set only at the end: the stalled calls end by the client's timeout

    async def predict(request: web.Request) -> web.Response:
        body = await request.json()
        seen.append(body)
        case = request.match_info["model"]
        if case == "busy":
            return web.Response(status=503, text="warming up")
        if case == "rejects":
            return web.Response(status=400, text="feature count 3, expected 2")
        if case == "stalls":
            await stall.wait()
        return web.json_response({"predictions": [len(r) for r in body["instances"]]})

    async def main() -> list[object]:
        app = web.Application()
        app.router.add_post("/v1/models/{model}:predict", predict)
        runner = web.AppRunner(app)
        await runner.setup()
        port = free_port()
        await web.TCPSite(runner, "127.0.0.1", port).start()
        url = f"http://127.0.0.1:{port}"
        c = InferenceClient(KServeSettings(max_retries=1, timeout_s=0.3), sleep=lambda s: sleep0())
        out: list[object] = []
        try:
            out.append(await c.predict(url, "m", "v1", [[1.0, 2.0], [3.0]]))
            for model in ("busy", "rejects", "stalls"):
                try:
                    await c.predict(url, model, "v1", [[1.0]])
                except ModelServerError as err:
                    out.append(err)
            try:
                await c.predict(f"http://127.0.0.1:{free_port()}", "m", "v1", [[1.0]])
            except ModelServerError as err:
                out.append(err)
        finally:
            await c.aclose()
            stall.set()  # the stalled handlers end, so the server stops at once
            await runner.cleanup()
        return out

    ok, busy, rejects, stalls, refused = run(main())
    assert ok.labels == [2, 1] and ok.latency_ms > 0
    assert seen[0] == {"instances": [[1.0, 2.0], [3.0]]}
    assert busy.status == 503 and busy.unavailable and "warming up" in str(busy)
    assert rejects.status == 400 and not rejects.retriable and "feature count" in str(rejects)
    assert stalls.status is None and stalls.unavailable and "timed out" in str(stalls)
    assert refused.status is None and refused.unavailable and "unreachable" in str(refused)
    assert sum(1 for body in seen if body == {"instances": [[1.0]]}) == 2 + 1 + 2, (
        "busy and stalled calls are retried once (max_retries=1), a rejected one is not"
    )


async def sleep0() -> None:
    await asyncio.sleep(0)

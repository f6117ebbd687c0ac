"""The model host on real parts: its HTTP API, real kserve.ModelServer processes, MinIO.

One test walks a host's whole life, because every server start costs ~5-10 s:
deploy (201), idempotent deploy (200), unregistered version (404), bad bodies
(400), a full port range (503), the listing and the state file, HostDeployer
against it, then a shutdown that stops the servers and a new host on the same
state dir that serves them again on the same ports, a DELETE, and the freed port
serving the next version.
"""

from __future__ import annotations

import asyncio
import json
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
import uvicorn
from pydantic import SecretStr
from sklearn.linear_model import LogisticRegression

from connectors.deployers import HostDeployer
from connectors.kafka import EventProducer
from connectors.kserve_client import InferenceClient
from connectors.process import free_port, is_running
from connectors.registry import ModelRegistry
from connectors.signing import signed
from schemas import ModelVersionEvent, new_event
from schemas.model_card import ModelCard
from schemas.settings import KServeSettings, Settings, StackSettings
from schemas.topics import Topic, topic_name
from streams.dev.localrun import stop_model_servers
from streams.servers.model_host import ModelHost, create_model_host_app
from tests.integration.flip_models import publish_flip_models

pytestmark = pytest.mark.integration

START_DEADLINE_S = 120  # app start; a restoring host starts two model servers first
STOP_DEADLINE_S = 90  # shutdown stops every model server (SIGTERM, up to 30 s each)
HTTP_TIMEOUT_S = 120  # a POST waits for the server to load (the host allows 90 s)
ROWS = [[2.0, 1.0], [-2.0, 1.0]]  # v1 predicts a > 0, v2 and v3 a < 0


def consecutive_free_ports() -> tuple[int, int]:
    """Two free loopback ports p, p + 1 (bounded search)."""
    for _ in range(200):
        low = free_port()
        if low >= 65535:
            continue
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", low + 1))
            except OSError:
                continue
        return low, low + 1
    raise AssertionError("no two consecutive free loopback ports found")


def publish_third_version(settings: Settings, model: str) -> None:
    rng = np.random.default_rng(4)
    x = rng.normal(size=(200, 2))
    card = ModelCard(
        name=model,
        version="3",
        framework="sklearn",
        features=["a", "b"],
        classes=[0, 1],
        created_at=datetime.now(UTC),
    )
    registry = ModelRegistry.for_settings(settings)
    registry.publish(card, LogisticRegression().fit(x, (x[:, 0] < 0).astype(int)))


@contextmanager
def running_host(settings: Settings) -> Iterator[str]:
    """A model host app served by uvicorn in a thread; yields its URL, shuts it down after."""
    port = free_port()
    server = uvicorn.Server(
        uvicorn.Config(
            create_model_host_app(ModelHost(settings)),
            host="127.0.0.1",
            port=port,
            log_level="warning",
            lifespan="on",
        )
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + START_DEADLINE_S
        while not server.started:
            assert thread.is_alive(), "the model host app died while starting"
            assert time.monotonic() < deadline, f"model host not started in {START_DEADLINE_S}s"
            thread.join(timeout=0.05)
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=STOP_DEADLINE_S)
        assert not thread.is_alive(), "the model host app did not shut down"


def predict(settings: Settings, url: str, model: str) -> tuple[list[Any], str | None]:
    async def call() -> tuple[list[Any], str | None]:
        async with InferenceClient(settings.kserve) as client:
            result = await client.predict(url, model, "v1", ROWS)
            return result.labels, result.model_version

    return asyncio.run(call())


def served(state_file: Path) -> list[tuple[str, str, int, str]]:
    return [
        (d["model"], d["version"], d["port"], d["url"]) for d in json.loads(state_file.read_text())
    ]


def test_model_host_deploys_restores_and_retires_real_servers(
    live_stack: Settings, unique: str, tmp_path: Path
):
    model = f"host{unique}"
    publish_flip_models(live_stack, model)
    publish_third_version(live_stack, model)
    low, high = consecutive_free_ports()
    settings = live_stack.model_copy(
        update={
            "kserve": KServeSettings(port_min=low, port_max=high, timeout_s=5.0, max_retries=1),
            "stack": StackSettings(cache_dir=live_stack.stack.cache_dir, state_dir=tmp_path),
        }
    )
    state_file = tmp_path / "model-host.json"

    try:
        # ---- the first host: deploy, conflicts, errors, a full range, listing, HostDeployer
        with (
            running_host(settings) as host_url,
            httpx.Client(base_url=host_url, timeout=HTTP_TIMEOUT_S) as http,
        ):
            assert http.get("/healthz").json() == {"ok": True, "serving": 0}

            first = http.post("/v1/deployments", json={"model": model, "version": "1"})
            assert first.status_code == 201, first.text
            v1 = first.json()
            assert v1["model"] == model and v1["version"] == "1"
            assert v1["port"] in (low, high)
            assert v1["url"] == f"http://127.0.0.1:{v1['port']}"
            assert v1["pid"] is not None and is_running(v1["pid"])
            assert predict(settings, v1["url"], model) == ([1, 0], "1")

            again = http.post("/v1/deployments", json={"model": model, "version": "1"})
            assert again.status_code == 200, again.text
            assert again.json() == v1  # same url, same pid: no second process
            assert sorted(p.name for p in tmp_path.glob("model-*.pid")) == [
                f"model-{model}-1-{v1['port']}.pid"
            ]

            missing = http.post("/v1/deployments", json={"model": model, "version": "9"})
            assert missing.status_code == 404, missing.text
            assert missing.json()["error"] == "NotRegistered"
            assert "versions: 1, 2, 3" in missing.json()["reason"]

            for bad in (
                {"model": model},
                {"model": "Not A Name!", "version": "1"},
                {"model": model, "version": "1", "extra": True},
            ):
                answer = http.post("/v1/deployments", json=bad)
                assert answer.status_code == 400, (bad, answer.text)
                assert answer.json()["error"] == "BadRequest"
            assert http.post("/v1/deployments", content=b"not json").status_code == 400

            second = http.post("/v1/deployments", json={"model": model, "version": "2"})
            assert second.status_code == 201, second.text
            v2 = second.json()
            assert {v1["port"], v2["port"]} == {low, high}, "v2 gets the other port of the range"
            assert v2["url"] == f"http://127.0.0.1:{v2['port']}"
            assert predict(settings, v2["url"], model) == ([0, 1], "2")

            full = http.post("/v1/deployments", json={"model": model, "version": "3"})
            assert full.status_code == 503, full.text
            assert full.json()["error"] == "ServerNotReady"
            assert "WEIR_KSERVE__PORT_MIN/PORT_MAX" in full.json()["reason"]
            assert f"{low}-{high}" in full.json()["reason"]

            assert http.get("/v1/deployments").json() == [v1, v2]
            assert http.get("/healthz").json() == {"ok": True, "serving": 2}
            assert served(state_file) == [
                (model, "1", v1["port"], v1["url"]),
                (model, "2", v2["port"], v2["url"]),
            ]

            via_host = settings.model_copy(
                update={"kserve": KServeSettings(deployer="host", host_url=host_url)}
            )
            assert HostDeployer(via_host).deploy(model, "1") == v1["url"]
            assert http.get("/v1/deployments").json() == [v1, v2]  # nothing new started

        # ---- shutdown stopped both servers, kept the state file
        assert not is_running(v1["pid"]) and not is_running(v2["pid"])
        assert list(tmp_path.glob("model-*.pid")) == []
        assert len(served(state_file)) == 2

        # ---- a new host on the same state dir serves both again, on the same ports
        with (
            running_host(settings) as host_url,
            httpx.Client(base_url=host_url, timeout=HTTP_TIMEOUT_S) as http,
        ):
            restored = http.get("/v1/deployments").json()
            assert [(d["version"], d["port"], d["url"]) for d in restored] == [
                ("1", v1["port"], v1["url"]),
                ("2", v2["port"], v2["url"]),
            ]
            r1, r2 = restored
            assert is_running(r1["pid"]) and is_running(r2["pid"])
            assert predict(settings, v1["url"], model) == ([1, 0], "1")
            assert predict(settings, v2["url"], model) == ([0, 1], "2")

            # a version a route points at is not stopped: v2 active on the control topic
            producer = EventProducer(settings)

            def route(version: str, url: str) -> None:
                change = ModelVersionEvent(
                    action="activate",
                    model=model,
                    version=version,
                    url=url,
                    protocol="v1",
                    features=["a", "b"],
                )
                event = signed(settings, new_event(change, source="test"))
                producer.send(topic_name(settings.kafka, Topic.MODELS), event)

            route("2", v2["url"])
            busy = http.delete(f"/v1/deployments/{model}/2")
            assert busy.status_code == 409 and "is routed (active)" in busy.text, busy.text
            assert is_running(r2["pid"])
            route("1", v1["url"])  # v2 serves nothing any more

            # a worker's keep-alive connection to v2, open while v2 is retired: the server
            # closes it first, so v2's port is left in TIME_WAIT on the server side
            with httpx.Client(timeout=10) as pool:
                assert pool.get(f"{v2['url']}/v1/models/{model}").status_code == 200
                gone = http.delete(f"/v1/deployments/{model}/2")
                assert gone.status_code == 200, gone.text
                assert gone.json()["version"] == "2"
                assert not is_running(r2["pid"])
            assert http.get("/v1/deployments").json() == [r1]
            assert served(state_file) == [(model, "1", v1["port"], v1["url"])]
            assert http.delete(f"/v1/deployments/{model}/2").status_code == 404
            assert is_running(r1["pid"])

            # the freed port serves the next version at once (TIME_WAIT does not block it)
            third = http.post("/v1/deployments", json={"model": model, "version": "3"})
            assert third.status_code == 201, third.text
            v3 = third.json()
            assert (v3["port"], v3["url"]) == (v2["port"], v2["url"])
            assert predict(settings, v3["url"], model) == ([0, 1], "3")
            assert http.get("/v1/deployments").json() == [r1, v3]
            assert served(state_file) == [
                (model, "1", v1["port"], v1["url"]),
                (model, "3", v3["port"], v3["url"]),
            ]

        assert not is_running(r1["pid"]) and not is_running(v3["pid"])
        assert len(served(state_file)) == 2
    finally:
        stop_model_servers(settings)


def test_model_host_changes_need_its_token_when_one_is_set(live_stack: Settings):
    settings = live_stack.model_copy(
        update={"kserve": KServeSettings(host_token=SecretStr("host-secret"))}
    )

    async def call(method: str, path: str, token: str | None) -> httpx.Response:
        app = create_model_host_app(ModelHost(settings))  # no lifespan: nothing is restored
        headers = {} if token is None else {"authorization": f"Bearer {token}"}
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://host") as client:
            return await client.request(method, path, headers=headers, json={})

    assert asyncio.run(call("DELETE", "/v1/deployments/m/1", None)).status_code == 401
    assert asyncio.run(call("POST", "/v1/deployments", "wrong")).status_code == 401
    assert asyncio.run(call("GET", "/v1/deployments", None)).status_code == 200  # reads are open
    authorized = asyncio.run(call("POST", "/v1/deployments", "host-secret"))
    assert authorized.status_code == 400, "past the token check: the empty body is refused"

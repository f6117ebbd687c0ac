"""A real kserve.ModelServer process serving a registry model, called over V1 and V2."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pytest
from sklearn.linear_model import LogisticRegression

from connectors.kserve_client import InferenceClient, ModelServerError
from connectors.process import free_port
from connectors.registry import ModelRegistry
from schemas.model_card import ModelCard
from schemas.settings import Settings, StackSettings
from streams.servers.model_server import server_process, start_server

pytestmark = pytest.mark.integration

READY_TIMEOUT_S = 90  # importing kserve and loading from MinIO takes ~5-10 s on 2 cores


def listening_addresses(port: int) -> set[str]:
    """Local addresses in LISTEN state on ``port`` (hex, as in /proc/net/tcp)."""
    found = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            local, state = line.split()[1], line.split()[3]
            addr, _, hexport = local.rpartition(":")
            if state == "0A" and int(hexport, 16) == port:
                found.add(addr)
    return found


def test_model_server_serves_v1_and_v2_on_loopback_only(
    live_stack: Settings, unique: str, tmp_path: Path
):
    rng = np.random.default_rng(1)
    x = rng.normal(size=(300, 3))
    y = (x[:, 0] > 0).astype(int)
    name = f"m{unique}"
    registry = ModelRegistry.for_settings(live_stack)
    card = ModelCard(
        name=name,
        version="1",
        framework="sklearn",
        features=["a", "b", "c"],
        classes=[0, 1],
        created_at=datetime.now(UTC),
    )
    assert registry.publish(card, LogisticRegression().fit(x, y)) == f"s3://models/{name}/1/"
    assert registry.versions(name) == ["1"]

    settings = live_stack.model_copy(
        update={"stack": StackSettings(cache_dir=live_stack.stack.cache_dir, state_dir=tmp_path)}
    )
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    start_server(settings, name, "1", port)
    proc = server_process(settings, name, "1", port)

    async def exercise() -> None:
        async with InferenceClient(settings.kserve) as client:
            await client.wait_ready(url, name, "v1", timeout_s=READY_TIMEOUT_S)
            assert await client.ready(url, name, "v2")
            rows = [[2.0, 0.0, 0.0], [-2.0, 0.0, 0.0]]
            v1 = await client.predict(url, name, "v1", rows)
            v2 = await client.predict(url, name, "v2", rows)
            assert v1.labels == v2.labels == [1, 0]
            assert v2.probabilities == v1.probabilities is not None  # V2 keeps them too
            assert v1.model_version == v2.model_version == "1"
            assert v1.probabilities is not None and v1.probabilities[0]["1"] > 0.5

    try:
        asyncio.run(exercise())
        assert listening_addresses(port) == {"0100007F"}, "REST binds 127.0.0.1 only"
    finally:
        assert proc.stop(timeout_s=30) is not None

    async def down() -> None:
        async with InferenceClient(settings.kserve) as client:
            assert not await client.ready(url, name, "v1")
            with pytest.raises(ModelServerError) as info:
                await client.predict(url, name, "v1", [[0.0, 0.0, 0.0]], attempts=2)
            assert info.value.retriable

    asyncio.run(down())

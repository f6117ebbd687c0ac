"""Helpers for tests that run model servers and workers as real processes."""

from __future__ import annotations

import asyncio
import socket
import sys
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
from sklearn.linear_model import LogisticRegression

from connectors.kafka import ConsumedMessage, EventConsumer
from connectors.kserve_client import InferenceClient
from connectors.minio_store import ObjectStore
from connectors.model_server import server_process, start_server
from connectors.registry import ModelRegistry
from schemas.model_card import ModelCard
from streams.settings import Settings, settings_env
from streams.stack.process import ServiceProcess

FEATURES = ["a", "b"]
SERVER_READY_S = 90  # kserve import + model load from MinIO: ~5-10 s on 2 cores


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def publish_flip_models(settings: Settings, model: str) -> None:
    """v1 predicts a > 0, v2 predicts a < 0: an output tells which version scored it."""
    rng = np.random.default_rng(3)
    x = rng.normal(size=(400, 2))
    registry = ModelRegistry(ObjectStore(settings.minio), settings.minio.models_bucket)
    for version, y in (("1", x[:, 0] > 0), ("2", x[:, 0] < 0)):
        card = ModelCard(
            name=model,
            version=version,
            framework="sklearn",
            features=FEATURES,
            classes=[0, 1],
            created_at=datetime.now(UTC),
        )
        registry.publish(card, LogisticRegression().fit(x, y.astype(int)))


def expected_output(version: str, a: float) -> int:
    return int(a > 0) if version == "1" else int(a < 0)


def serve(settings: Settings, model: str, version: str, port: int) -> ServiceProcess:
    start_server(settings, model, version, port)

    async def wait() -> None:
        async with InferenceClient(settings.kserve) as client:
            await client.wait_ready(
                f"http://127.0.0.1:{port}", model, "v1", timeout_s=SERVER_READY_S
            )

    asyncio.run(wait())
    return server_process(settings, model, version, port)


def start_worker(settings: Settings, worker_id: str) -> ServiceProcess:
    weir = str(Path(sys.executable).parent / "weir")
    proc = ServiceProcess(
        f"worker-{worker_id}", settings.stack.run_dir, marker=f"--worker-id {worker_id}"
    )
    proc.start([weir, "worker", "--worker-id", worker_id], env=settings_env(settings))
    return proc


class Collector:
    """Reads output topics and keeps what arrived, for bounded waits on conditions."""

    def __init__(self, settings: Settings, topics: list[str], group: str) -> None:
        self.consumer = EventConsumer(settings, topics, group_id=group)
        self.messages: list[ConsumedMessage] = []

    def until(self, condition: Callable[[], bool], *, deadline_s: float, what: str) -> None:
        for msg in self.consumer.take(10**9, deadline_s=deadline_s, stop=condition):
            self.messages.append(msg)
        if not condition():
            raise AssertionError(f"timed out after {deadline_s}s waiting for {what}")

    def events(self, type_: str) -> list:
        return [m.event for m in self.messages if m.event is not None and m.event.type == type_]

    def close(self) -> None:
        self.consumer.close()

"""Running the loop's processes locally: model servers, workers, and reading outputs.

Used by the demo, the benchmarks and the integration tests: model servers and
workers are started as real processes with PID files under the stack's state
directory, and :class:`Collector` reads output topics with bounded waits.
"""

from __future__ import annotations

import asyncio
import socket
import sys
from collections.abc import Callable
from pathlib import Path

from connectors.kafka import ConsumedMessage, EventConsumer
from connectors.kserve_client import InferenceClient
from connectors.model_server import server_process, start_server
from streams.settings import Settings, settings_env
from streams.stack.process import ServiceProcess

SERVER_READY_S = 90  # kserve import + model load from MinIO: ~5-10 s on 2 cores


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


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

    def poll_for(self, seconds: float) -> int:
        """Read whatever arrives within ``seconds``; returns how many messages came."""
        before = len(self.messages)
        self.messages.extend(self.consumer.take(10**9, deadline_s=seconds))
        return len(self.messages) - before

    def events(self, type_: str) -> list:
        return [m.event for m in self.messages if m.event is not None and m.event.type == type_]

    def close(self) -> None:
        self.consumer.close()


def stop_model_servers(settings: Settings) -> list[int]:
    """Stop every model server started under this stack's state dir (by PID file)."""
    stopped = []
    for pid_file in sorted(settings.stack.run_dir.glob("model-*.pid")):
        name = pid_file.name.removesuffix(".pid")
        _, model_version_port = name.split("-", 1)
        model, version, port = model_version_port.rsplit("-", 2)
        pid = server_process(settings, model, version, int(port)).stop()
        if pid is not None:
            stopped.append(pid)
    return stopped

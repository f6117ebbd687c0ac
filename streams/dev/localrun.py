"""Running the loop's processes locally: workers, and reading outputs.

Used by the demo, the benchmarks and the integration tests: workers are started
as real processes with PID files under the stack's state directory (model
servers by :func:`streams.servers.deployers.serve`), and :class:`Collector`
reads output topics with bounded waits.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from connectors.kafka import ConsumedMessage, EventConsumer
from connectors.process import ServiceProcess
from schemas.settings import Settings, settings_env
from streams.servers.model_server import local_servers, server_process


def start_worker(settings: Settings, worker_id: str) -> ServiceProcess:
    weir = str(Path(sys.executable).parent / "weir")
    proc = ServiceProcess(
        f"worker-{worker_id}", settings.stack.run_dir, marker=f"--worker-id {worker_id}"
    )
    proc.start([weir, "worker", "--worker-id", worker_id], env=settings_env(settings))
    return proc


CHECK_EVERY_S = 0.25


class Collector:
    """Reads output topics and keeps what arrived, for bounded waits on conditions."""

    def __init__(self, settings: Settings, topics: list[str], group: str) -> None:
        self.consumer = EventConsumer(settings, topics, group_id=group)
        self.messages: list[ConsumedMessage] = []
        self.arrived: list[float] = []  # when each message was read (monotonic), for latencies
        self._by_type: dict[str, list[Any]] = {}  # event type → its events, in arrival order

    def until(self, condition: Callable[[], bool], *, deadline_s: float, what: str) -> None:
        """Read until ``condition()`` holds (or the deadline passes, then raise)."""
        if not self.wait(condition, deadline_s=deadline_s):
            raise AssertionError(f"timed out after {deadline_s}s waiting for {what}")

    def wait(self, condition: Callable[[], bool], *, deadline_s: float) -> bool:
        """Read until ``condition()`` holds or the deadline passes; returns whether it holds.

        The condition usually scans every message kept so far, so it is checked at
        most every ``CHECK_EVERY_S`` while messages stream in (and after each idle
        poll): checking it per message made a 20,000-prediction wait quadratic.
        """
        checked = [time.monotonic()]

        def due() -> bool:
            now = time.monotonic()
            if now - checked[0] < CHECK_EVERY_S:
                return False
            checked[0] = now
            return condition()

        self._keep(self.consumer.take(10**9, deadline_s=deadline_s, stop=due))
        return condition()

    def poll_for(self, seconds: float) -> int:
        """Read whatever arrives within ``seconds``; returns how many messages came."""
        before = len(self.messages)
        self._keep(self.consumer.take(10**9, deadline_s=seconds))
        return len(self.messages) - before

    def _keep(self, messages: Iterable[ConsumedMessage]) -> None:
        for msg in messages:
            self.messages.append(msg)
            self.arrived.append(time.monotonic())
            if msg.event is not None:
                self._by_type.setdefault(msg.event.type, []).append(msg.event)

    def events(self, type_: str) -> list:
        """The events of ``type_`` read so far, in arrival order (a new list; no scan)."""
        return list(self._by_type.get(type_, ()))

    def events_since(self, type_: str, start: int) -> list:
        """The events of ``type_`` from the ``start``-th read on (to take them as they come)."""
        return self._by_type.get(type_, [])[start:]

    def count(self, type_prefix: str) -> int:
        """How many events read so far have a type that starts with ``type_prefix``."""
        return sum(len(v) for t, v in self._by_type.items() if t.startswith(type_prefix))

    def close(self) -> None:
        self.consumer.close()


def stop_model_servers(settings: Settings) -> list[int]:
    """Stop every model server started under this stack's state dir (by PID file)."""
    stopped = []
    for model, version, port in local_servers(settings):
        pid = server_process(settings, model, version, port).stop()
        if pid is not None:
            stopped.append(pid)
    return stopped

"""The local stack launcher: ``weir stack up | down | status``.

Brings up a real Apache Kafka broker (KRaft) and a real MinIO server on
loopback, each from a cache outside the repository, then creates weir's topics
and buckets. Services with ``managed=False`` in settings are not started; their
configured endpoints are checked and used instead.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

from connectors.kafka import ensure_topics
from connectors.minio_store import ObjectStore, ensure_reader
from connectors.process import ServiceProcess, wait_until
from connectors.signing import ensure_keys
from schemas import StackError
from schemas.settings import Settings
from streams.dev.stack import kafka, minio

Say = Callable[[str], None]
ROLE_NOTES = {
    "worker": "reads and writes weir's topics, may not write the models topic",
    "control": "may also write the models topic (routes) and create topics",
}


@dataclass(frozen=True)
class ServiceStatus:
    name: str
    address: str
    managed: bool
    pid: int | None
    ready: bool
    log: str | None


@dataclass
class UpReport:
    """What ``up`` did and how long each phase took (seconds)."""

    fetched: dict[str, bool] = field(default_factory=dict)
    fetch_s: float = 0.0
    start_s: float = 0.0
    ready_s: float = 0.0
    started: dict[str, int] = field(default_factory=dict)
    already_running: dict[str, int] = field(default_factory=dict)
    topics: dict[str, str] = field(default_factory=dict)
    buckets: dict[str, str] = field(default_factory=dict)
    principals: dict[str, str] = field(default_factory=dict)  # SASL: principal → role
    minio_reader: str = "off"  # the read-only MinIO user: "ready" | "off"
    signing_key: str = ""  # id of the key that signs routes
    key_made: bool = False  # made now (first start)

    @property
    def total_s(self) -> float:
        return self.fetch_s + self.start_s + self.ready_s


def _quiet(_: str) -> None:
    pass


class Stack:
    """Up, down and status of the local services named in one Settings."""

    def __init__(self, settings: Settings, *, say: Say = _quiet) -> None:
        self.settings = settings
        self._say = say

    def _processes(self) -> dict[str, ServiceProcess]:
        return {"kafka": kafka.process(self.settings), "minio": minio.process(self.settings)}

    def _managed(self) -> dict[str, bool]:
        return {"kafka": self.settings.kafka.managed, "minio": self.settings.minio.managed}

    def fetch(self) -> dict[str, bool]:
        """Download the Kafka jars and build MinIO unless cached (in parallel).

        Returns service → True when it downloaded or built, False when cached.
        """
        managed = self._managed()
        fetchers = {"kafka": kafka.ensure_jars, "minio": minio.ensure_binary}
        todo = {n: f for n, f in fetchers.items() if managed[n]}
        if not todo:
            return {}
        self._say("checking cached Kafka jars and MinIO binary (first run downloads/builds)")
        with ThreadPoolExecutor(max_workers=len(todo)) as pool:
            futures = {n: pool.submit(f, self.settings) for n, f in todo.items()}
            return {n: fut.result() for n, fut in futures.items()}

    def up(self) -> UpReport:
        """Fetch what is missing, start what is managed, wait until both are ready."""
        s = self.settings
        report = UpReport()
        managed = self._managed()
        s.stack.run_dir.mkdir(parents=True, exist_ok=True)

        t0 = time.monotonic()
        report.fetched = self.fetch()
        report.fetch_s = time.monotonic() - t0

        t1 = time.monotonic()
        starters = {"kafka": kafka.start, "minio": minio.start}
        procs = self._processes()
        for name, starter in starters.items():
            if not managed[name]:
                continue
            running = procs[name].pid()
            if running is not None:
                report.already_running[name] = running
                self._say(f"{name} already running (pid {running})")
            else:
                report.started[name] = starter(s)
                self._say(f"{name} started (pid {report.started[name]})")
        report.start_s = time.monotonic() - t1

        t2 = time.monotonic()
        checks = {"kafka": kafka.ready, "minio": minio.ready}
        for name, check in checks.items():
            self._wait_ready(name, check, procs[name] if managed[name] else None)
        if managed["kafka"]:
            report.principals = kafka.secure(s)  # SASL stacks: users and ACLs
            for principal, role in report.principals.items():
                self._say(f"kafka principal {principal}: {ROLE_NOTES[role]}")
        report.topics = ensure_topics(s)
        report.buckets = ObjectStore(s.minio).ensure_buckets()
        report.minio_reader = ensure_reader(s.minio)  # model servers read with it, only
        pair, report.key_made = ensure_keys(s)  # routes are signed: a key pair on first start
        report.signing_key = pair.id
        report.ready_s = time.monotonic() - t2
        return report

    def _wait_ready(
        self, name: str, check: Callable[[Settings], bool], proc: ServiceProcess | None
    ) -> None:
        def ok() -> bool:
            if proc is not None and proc.pid() is None:
                raise StackError(
                    f"{name} exited during start; last lines of {proc.log_file}:\n"
                    f"{proc.log_tail()}",
                    service=name,
                    address=self._address(name),
                )
            return check(self.settings)

        waited = wait_until(
            ok,
            timeout_s=self.settings.stack.ready_timeout_s,
            what=f"waiting for {name} to be ready",
        )
        self._say(f"{name} ready at {self._address(name)} ({waited:.1f}s)")

    def _address(self, name: str) -> str:
        if name == "kafka":
            return self.settings.kafka.bootstrap_servers
        return self.settings.minio.endpoint

    def down(self, only: tuple[str, ...] | None = None) -> dict[str, int | None]:
        """Stop exactly the PIDs this stack recorded; returns name → PID stopped."""
        stopped: dict[str, int | None] = {}
        for name, proc in self._processes().items():
            if only is not None and name not in only:
                continue
            stopped[name] = proc.stop()
            if stopped[name] is not None:
                self._say(f"{name} stopped (pid {stopped[name]})")
        return stopped

    def status(self) -> list[ServiceStatus]:
        checks = {"kafka": kafka.ready, "minio": minio.ready}
        managed = self._managed()
        out = []
        for name, proc in self._processes().items():
            pid = proc.pid()
            reachable = pid is not None or not managed[name]
            out.append(
                ServiceStatus(
                    name=name,
                    address=self._address(name),
                    managed=managed[name],
                    pid=pid,
                    ready=reachable and checks[name](self.settings),
                    log=str(proc.log_file) if managed[name] else None,
                )
            )
        return out

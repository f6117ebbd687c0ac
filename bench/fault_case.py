"""One fault scenario's run: its topics, workers, stream, bounded waits and its table row.

A :class:`Case` gives a scenario topics of its own (prefix ``faults-<name>``),
routes its model, starts its workers, streams records, and waits on
conditions — every wait bounded by the scenario's deadline, so a stuck
product ends the scenario with the figures measured so far and a FAIL, never
a hang. What the scenario expected and did not get goes into
:attr:`Row.failures`; what is worth knowing anyway into :attr:`Row.notes`.
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
from confluent_kafka.admin import AdminClient
from fault_io import FEATURES, Figures, Msg, Stream, Tally, accounted, figures
from fault_procs import Worker, start_worker
from fault_stack import PrivateStack

from connectors.kafka import EventProducer, ensure_topics
from connectors.process import ServiceProcess, free_port, is_running, wait_until
from connectors.signing import signed
from schemas import ModelVersionEvent, ServiceError, StackError, new_event
from schemas.settings import ScoringSettings, Settings, StackSettings
from schemas.topics import Topic, topic_name
from streams import lag

MODEL = "faults"
START_S = 150.0  # a worker's start: imports, group join, the control fold (2 busy cores)
DRAIN_S = 60.0  # the last outcomes after the stream stops
HERE = Path(__file__).resolve().parent
CRASH_LOOP = 3  # role exits that end a scenario early: it will not recover by itself


class Stuck(Exception):
    """The scenario cannot go on: the product is stuck or crash-looping."""


Say = Callable[[str], None]


@dataclass
class Row:
    """One line of the table."""

    name: str
    figures: Figures = field(default_factory=Figures)
    restarts: int | None = None  # None: no supervisor watched the role
    alive: bool | None = None
    measured: str = ""
    failures: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return not self.failures

    def expect(self, condition: bool, failure: str) -> None:
        if not condition:
            self.failures.append(failure)


@dataclass
class Suite:
    """What every case shares: the private stack, its settings, the served model."""

    settings: Settings
    stack: PrivateStack
    model_url: str
    model_server: ServiceProcess
    records: int
    say: Say


def group_lag(settings: Settings, group: str, topic: str) -> int | None:
    """Records of ``topic`` the group has not committed (None: the broker did not answer)."""
    address = settings.kafka.bootstrap_servers
    # a quiet admin client of its own: the broker faults are deliberate, their noise is not news
    client = AdminClient({"bootstrap.servers": address, "log_level": 0})
    try:
        return sum(lag.group_lag(client, group, topic, address=address).values())
    except ServiceError:  # the broker is paused or down: nothing to say yet
        return None


class Case:
    def __init__(self, suite: Suite, name: str, deadline_s: float) -> None:
        self.suite, self.name = suite, name
        self.row = Row(name)
        self.started = time.monotonic()
        self.deadline = self.started + deadline_s
        self.run_dir = suite.settings.stack.run_dir / "runs" / name
        base = suite.settings
        self.settings = base.model_copy(
            update={
                "kafka": base.kafka.model_copy(update={"topic_prefix": f"faults-{name}"}),
                "scoring": ScoringSettings(model=MODEL, worker_id=f"faults-{name}"),
                "stack": StackSettings(cache_dir=base.stack.cache_dir, state_dir=self.run_dir),
            }
        )
        ensure_topics(self.settings)
        self.tally = Tally(self.settings).start()
        self.workers: list[Worker] = []
        self.started_workers = 0
        self.settled = False
        self.helpers: list[ServiceProcess] = []
        self.streams: list[Stream] = []
        self.fault_at = time.time()

    # ------------------------------------------------------------------ plumbing

    def say(self, text: str) -> None:
        self.suite.say(f"[{self.name}] {text}")

    def topic(self, t: Topic) -> str:
        return topic_name(self.settings.kafka, t)

    def left_s(self) -> float:
        return max(0.0, self.deadline - time.monotonic())

    def wait(
        self,
        check: Callable[[], bool],
        what: str,
        timeout_s: float | None = None,
        *,
        required: bool = True,
    ) -> bool:
        """Poll ``check``, bounded by ``timeout_s`` and the deadline.

        At the bound a required wait ends the scenario (:class:`Stuck`); another
        is noted and returns False. A worker in a crash loop ends it at once.
        """
        bound = self.left_s() if timeout_s is None else min(timeout_s, self.left_s())

        def probe() -> bool:
            looping = {
                r: n for w in self.workers for r, n in w.restarts().items() if n >= CRASH_LOOP
            }
            if looping:
                raise Stuck(f"crash loop: {looping} restarts while waiting for {what}")
            return check()

        try:
            wait_until(probe, timeout_s=bound, what=what, interval_s=0.2)
        except StackError:
            if required:
                raise Stuck(f"stuck: {what} (not within {bound:.0f}s)") from None
            self.row.notes.append(f"not within {bound:.0f}s: {what}")
            return False
        return True

    def hold(self, seconds: float) -> None:
        """Keep a fault on for ``seconds`` (its length is the point, not a condition)."""
        end = time.monotonic() + seconds
        wait_until(lambda: time.monotonic() >= end, timeout_s=seconds + 5, what="the fault")

    def mark_fault(self) -> None:
        self.fault_at = time.time()

    def close(self) -> None:
        for stream in self.streams:
            stream.stop(timeout_s=10)
        for worker in self.workers:
            with contextlib.suppress(Exception):
                worker.stop()
        for helper in self.helpers:
            with contextlib.suppress(Exception):
                helper.stop(timeout_s=10)
        self.tally.stop()

    # ------------------------------------------------------------------ routes

    def publish(self, change: ModelVersionEvent) -> None:
        event = signed(self.settings, new_event(change, source="faults"))
        EventProducer(self.settings).send(self.topic(Topic.MODELS), event)

    def activate(
        self, url: str | None = None, *, version: str = "1", features: list[str] | None = FEATURES
    ) -> None:
        self.publish(
            ModelVersionEvent(
                action="activate",
                model=MODEL,
                version=version,
                url=url or self.suite.model_url,
                protocol="v2",
                features=features,
            )
        )

    def fault_server(self, mode: str, version: str = "1") -> str:
        """Start bench/fault_server.py in ``mode``; returns its URL once it answers ready."""
        port = free_port()
        proc = ServiceProcess(
            f"fault-server-{mode}-{port}", self.run_dir, marker=f"--port {port} --model"
        )
        argv = [sys.executable, str(HERE / "fault_server.py"), "--port", str(port)]
        proc.start([*argv, "--model", MODEL, "--version", version, "--mode", mode])
        self.helpers.append(proc)
        url = f"http://127.0.0.1:{port}"

        def ready() -> bool:
            with contextlib.suppress(httpx.HTTPError):
                return httpx.get(f"{url}/v2/models/{MODEL}/ready", timeout=1).status_code == 200
            return False

        self.wait(ready, f"fault server ({mode}) to answer", timeout_s=30)
        return url

    # ------------------------------------------------------------------ workers

    def worker(
        self,
        roles: tuple[str, ...] = ("scoring",),
        *,
        supervised: bool = True,
        tag: str = "",
        live: bool = False,
        wait_ready: bool = True,
    ) -> Worker:
        settings = self.settings
        if live:
            settings = settings.model_copy(
                update={"live": settings.live.model_copy(update={"port": free_port()})}
            )
        self.started_workers += 1  # a log of its own per process: counts never mix
        wid = f"faults-{self.name}-{tag or self.started_workers}"
        worker = start_worker(settings, self.run_dir, wid, roles, supervised=supervised)
        self.workers.append(worker)
        if wait_ready:
            self.wait_ready(worker)
        return worker

    @staticmethod
    def ready_lines(worker: Worker) -> int:
        return worker.count("control caught up")

    def wait_ready(self, worker: Worker, before: int = 0) -> bool:
        """Scoring has folded the control topic (and, with a live view, every role is ready)."""
        if worker.live_port:
            return self.wait(
                lambda: self.readyz(worker) == 200, "every role ready (/readyz)", START_S
            )
        return self.wait(
            lambda: self.ready_lines(worker) > before, "scoring to fold the routes", START_S
        )

    @staticmethod
    def readyz(worker: Worker) -> int | None:
        try:
            return httpx.get(f"http://127.0.0.1:{worker.live_port}/readyz", timeout=2).status_code
        except httpx.HTTPError:
            return None

    def restart(self, worker: Worker) -> Worker:
        """Stop ``worker`` (SIGTERM) and start one like it; returns the new one once ready."""
        worker.stop()
        self.record_restarts(worker)
        self.workers.remove(worker)
        return self.worker(worker.roles, supervised=worker.supervised, live=bool(worker.live_port))

    def kill(self, pid: int) -> None:
        os.kill(pid, signal.SIGKILL)
        wait_until(lambda: not is_running(pid), timeout_s=30, what="the killed process to die")
        with contextlib.suppress(ChildProcessError):
            os.waitpid(pid, 0)  # ours: reap it

    def record_restarts(self, worker: Worker) -> None:
        if worker.supervised:
            self.row.restarts = (self.row.restarts or 0) + sum(worker.restarts().values())

    # ------------------------------------------------------------------ the stream

    def stream(self, make: Callable[[int], Msg], *, rate: float = 100.0, **kw: Any) -> Stream:
        stream = Stream(self.settings, make, rate=rate, **kw).start()
        self.streams.append(stream)
        return stream

    def predicted(self) -> int:
        return len(self.tally.predictions)

    def wait_predictions(self, n: int, what: str = "", timeout_s: float | None = None) -> bool:
        target = self.predicted() + n
        return self.wait(
            lambda: self.predicted() >= target, what or f"{n} more predictions", timeout_s
        )

    def finish(
        self, stream: Stream, *, at_least: int | None = None, drain_s: float = DRAIN_S
    ) -> Figures:
        """Let the stream reach ``at_least`` records, stop it, wait for every outcome."""
        if at_least is not None:
            self.wait(lambda: stream.produced >= at_least, f"{at_least} records produced")
        elif stream.limit is not None:
            self.wait(lambda: not stream.running, f"the stream's {stream.limit} records sent")
        stream.stop(timeout_s=min(60.0, self.left_s() + 1))
        self.wait(
            lambda: accounted(stream, self.tally),
            "every record predicted or dead-lettered",
            drain_s,
        )
        group = f"{self.settings.kafka.topic_prefix}-scoring-{MODEL}"
        # once the group committed to the end, no late duplicate is still on its way
        with contextlib.suppress(StackError):
            wait_until(
                lambda: group_lag(self.settings, group, self.topic(Topic.RECORDS)) == 0,
                timeout_s=min(10.0, self.left_s()),
                what="the scoring group to commit to the end",
                interval_s=0.5,
            )
        return self.measure(stream)

    def measure(self, stream: Stream) -> Figures:
        f = figures(stream, self.tally, fault_at=self.fault_at)
        self.row.figures = f
        if stream.failed:
            self.row.notes.append(f"{len(stream.failed)} not sent: {stream.failed[0][:80]}")
        return f

    def abandon(self) -> None:
        """The figures as they stand, when the scenario cannot finish."""
        for stream in self.streams:
            stream.stop(timeout_s=10)
        if self.streams:
            f = self.measure(self.streams[0])
            if f.missing:
                self.row.failures.append(f"{f.missing} records neither scored nor dead-lettered")

    def log_lines(self, text: str) -> list[str]:
        """Lines of every worker's log (of this case) that contain ``text``."""
        logs = sorted(self.run_dir.glob("worker-*.log"))
        return [
            line
            for log in logs
            for line in log.read_text(errors="replace").splitlines()
            if text in line
        ]

    def settle_workers(self) -> None:
        """Alive and restarts of every worker still running, for the row."""
        if self.settled or not self.workers:
            return
        self.settled = True  # restarts are counted once
        self.row.alive = all(w.alive() for w in self.workers)
        for w in self.workers:
            self.record_restarts(w)


def run_case(suite: Suite, name: str, deadline_s: float, body: Callable[[Case], None]) -> Row:
    """Run one scenario; whatever happens, close it and return its row."""
    case = Case(suite, name, deadline_s)
    try:
        body(case)
    except Stuck as stuck:
        case.row.failures.insert(0, str(stuck))
        case.abandon()
    except Exception as exc:
        case.row.failures.insert(0, f"error: {type(exc).__name__}: {str(exc)[:200]}")
        with contextlib.suppress(Exception):
            case.abandon()
    finally:
        with contextlib.suppress(Exception):
            case.settle_workers()
        case.close()
    case.row.seconds = time.monotonic() - case.started
    return case.row


@contextlib.contextmanager
def signalled(pid: int, stop: int, cont: int) -> Iterator[None]:
    os.kill(pid, stop)
    try:
        yield
    finally:
        os.kill(pid, cont)

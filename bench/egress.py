"""Forwarding predictions to a Knative sink: `weir egress` beside a naive forwarder.

**Setup (not measured).** ``--events`` predictions (default 5,000; binary-mode
``io.weir.prediction.v1`` CloudEvents, 4 partitions) are encoded once and
produced, byte for byte, to each run's own predictions topic. The sink is a
CloudEvents receiver on loopback (aiohttp, in this process) that answers 202
after ``--delays`` milliseconds (default 0 and 5: a sink on the same host, and
one a few milliseconds away, such as a broker ingress across a cluster's
network).

**Systems**, each a process of its own draining the same events with a fresh
consumer group:

* **naive** (``bench/peer_egress.py``): a consumer script — confluent-kafka, one
  POST per event (httpx keep-alive), its offset committed after the sink answered;
* **weir-1**: ``weir egress`` with ``WEIR_KNATIVE__EGRESS_CONCURRENCY=1``;
* **weir**: ``weir egress`` at its defaults (16 events in flight, batches of 512,
  offsets committed once a batch was delivered).

*events/s* = 0.9 N / (time the sink took the N/10-th event → the N-th); *CPU
ms / event* is the process's CPU (utime + stime, ``/proc``) over the same span.
The sink counts every request; retries would show as more requests than events.
Every process is stopped by PID and its topics and group deleted.

    .venv/bin/python bench/egress.py [--events 5000] [--delays 0,5] [--reps 1]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import statistics
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from _shared import delete_groups, delete_topics, machine_line, tree_cpu_seconds
from aiohttp import web
from confluent_kafka import Consumer, Producer, TopicPartition
from rich.console import Console
from rich.table import Table

from connectors.kafka import ensure_topics, list_topics
from connectors.process import ServiceProcess
from schemas import Prediction, new_event, to_kafka
from schemas.settings import Settings, StackSettings, settings_env
from schemas.topics import Topic, topic_name

SYSTEMS = ("naive", "weir-1", "weir")
HERE = Path(__file__).resolve().parent
Message = tuple[bytes | None, bytes, list[tuple[str, bytes]]]


class Sink:
    """A CloudEvents receiver on loopback: counts requests, answers 202 after ``delay_s``."""

    def __init__(self) -> None:
        self.delay_s = 0.0
        self.count = 0
        self.at: list[float] = []  # monotonic time of each request's arrival
        self._loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        threading.Thread(target=self._serve, name="bench-sink", daemon=True).start()
        self._ready.wait(10)

    def _serve(self) -> None:
        asyncio.set_event_loop(self._loop)
        app = web.Application()
        app.router.add_post("/", self._handle)
        runner = web.AppRunner(app, access_log=None)
        self._loop.run_until_complete(runner.setup())
        site = web.TCPSite(runner, "127.0.0.1", 0)
        self._loop.run_until_complete(site.start())
        self.port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        self._ready.set()
        self._loop.run_forever()

    async def _handle(self, request: web.Request) -> web.Response:
        await request.read()
        self.count += 1
        self.at.append(time.monotonic())
        if self.delay_s:
            await asyncio.sleep(self.delay_s)
        return web.Response(status=202)

    def reset(self, delay_s: float) -> None:
        self.delay_s, self.count, self.at = delay_s, 0, []

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/"


def encode(n: int) -> list[Message]:
    out = []
    for i in range(n):
        prediction = Prediction(
            record_id=f"r-{i:07d}",
            model="bench",
            version="1",
            url="http://127.0.0.1:8081",
            output=i % 2,
            scores={"0": 0.4, "1": 0.6},
            latency_ms=3.2,
        )
        rec = to_kafka(new_event(prediction, source="bench-egress"))
        out.append((rec.key, rec.value, [(k, bytes(v or b"")) for k, v in rec.headers]))
    return out


@dataclass
class Result:
    system: str
    delay_ms: float
    rep: int
    events: int
    rate: float
    cpu_ms: float | None
    requests: int


class Bench:
    def __init__(self, args: argparse.Namespace, console: Console) -> None:
        self.args, self.console = args, console
        self.prefix = f"bench-egress-{uuid.uuid4().hex[:8]}"
        self.state_dir = Path(tempfile.mkdtemp(prefix="weir-bench-egress-"))
        self.sink = Sink()
        self.messages = encode(args.events)

    def settings_for(self, sub: str) -> Settings:
        base = Settings()
        return base.model_copy(
            update={
                "kafka": base.kafka.model_copy(update={"topic_prefix": sub}),
                "k_sink": self.sink.url,
                "stack": StackSettings(cache_dir=base.stack.cache_dir, state_dir=self.state_dir),
            }
        )

    def fill(self, settings: Settings) -> str:
        ensure_topics(settings)
        topic = topic_name(settings.kafka, Topic.PREDICTIONS)
        producer = Producer({"bootstrap.servers": settings.kafka.bootstrap_servers})
        for key, value, headers in self.messages:
            producer.produce(topic, value, key, headers=headers)
            producer.poll(0)
        producer.flush(60)
        return topic

    def start_at_beginning(self, settings: Settings, group: str, topic: str) -> None:
        """`weir egress` starts a new group at the end; this one starts at the beginning."""
        consumer = Consumer(
            {"bootstrap.servers": settings.kafka.bootstrap_servers, "group.id": group}
        )
        try:
            parts = list_topics(settings)[topic]
            consumer.commit(
                offsets=[TopicPartition(topic, p, 0) for p in range(parts)], asynchronous=False
            )
        finally:
            consumer.close()

    def run(self, system: str, delay_ms: float, rep: int) -> Result:
        sub = f"{self.prefix}-{system}-{int(delay_ms)}-{rep}"
        settings = self.settings_for(sub)
        topic = self.fill(settings)
        group = f"{sub}-egress"
        if system == "naive":
            argv = [sys.executable, str(HERE / "peer_egress.py"), sub]
            env = dict(os.environ) | {
                "EGRESS_BOOTSTRAP": settings.kafka.bootstrap_servers,
                "EGRESS_TOPIC": topic,
                "EGRESS_GROUP": group,
                "K_SINK": self.sink.url,
            }
            marker = f"peer_egress.py {sub}"
        else:
            self.start_at_beginning(settings, group, topic)
            if system == "weir-1":
                settings = settings.model_copy(
                    update={
                        "knative": settings.knative.model_copy(update={"egress_concurrency": 1})
                    }
                )
            argv = [str(Path(sys.executable).parent / "weir"), "egress"]
            env = settings_env(settings) | {"BENCH_TAG": sub}
            marker = "weir egress"
        self.sink.reset(delay_ms / 1000)
        n = len(self.messages)
        proc = ServiceProcess(sub, settings.stack.run_dir, marker=marker)
        proc.start(argv, env=env)
        try:
            tenth = self.wait(proc, lambda: self.sink.count >= n // 10, "the first tenth")
            cpu0 = tree_cpu_seconds(proc.pid())
            done = self.wait(proc, lambda: self.sink.count >= n, f"{n} events")
            cpu1 = tree_cpu_seconds(proc.pid())
        finally:
            proc.stop()
            delete_groups(settings, [group])
            delete_topics(settings, sub)
        at = sorted(self.sink.at)
        span = max(at[n - 1] - at[n // 10 - 1], 1e-9) if len(at) >= n else done - tenth
        steady = n - n // 10
        cpu = None if cpu0 is None or cpu1 is None else (cpu1 - cpu0) * 1000 / steady
        result = Result(system, delay_ms, rep, n, steady / span, cpu, self.sink.count)
        self.console.log(
            f"{system} (sink {delay_ms:g} ms) rep {rep}: {result.rate:,.0f} events/s, "
            f"CPU {cpu or 0:.3f} ms/event, {result.requests} requests for {n} events"
        )
        return result

    def wait(self, proc: ServiceProcess, done: Callable[[], bool], what: str) -> float:
        deadline = time.monotonic() + self.args.deadline
        while not done():
            if time.monotonic() > deadline:
                raise RuntimeError(f"timed out after {self.args.deadline:.0f}s waiting for {what}")
            if proc.pid() is None:
                raise RuntimeError(f"{proc.name} exited; see {proc.log_file}\n{proc.log_tail()}")
            time.sleep(0.02)
        return time.monotonic()


def report(console: Console, results: list[Result]) -> None:
    table = Table(title="to a CloudEvents sink on loopback (medians over reps, range)")
    for col in ("system", "sink delay", "events/s", "CPU ms / event", "requests / event"):
        table.add_column(col)
    keys = dict.fromkeys((r.system, r.delay_ms) for r in results)
    rates: dict[tuple[str, float], float] = {}
    for system, delay in keys:
        runs = [r for r in results if (r.system, r.delay_ms) == (system, delay)]
        rate = statistics.median(r.rate for r in runs)
        rates[(system, delay)] = rate
        cpus = [r.cpu_ms for r in runs if r.cpu_ms is not None]
        table.add_row(
            system,
            f"{delay:g} ms",
            f"{rate:,.0f} ({min(r.rate for r in runs):,.0f}-{max(r.rate for r in runs):,.0f})",
            f"{statistics.median(cpus):.3f}" if cpus else "-",
            f"{statistics.median(r.requests / r.events for r in runs):.2f}",
        )
    console.print(table)
    for delay in dict.fromkeys(d for _, d in keys):
        if ("weir", delay) in rates and ("naive", delay) in rates:
            console.print(
                f"sink {delay:g} ms: weir egress / naive = "
                f"{rates[('weir', delay)] / rates[('naive', delay)]:.1f}x"
            )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=5000, help="predictions per run")
    parser.add_argument("--delays", default="0,5", help="sink answer delays, ms")
    parser.add_argument("--systems", default=",".join(SYSTEMS), help="comma-separated subset")
    parser.add_argument("--reps", type=int, default=1, help="repetitions, order alternating")
    parser.add_argument("--deadline", type=float, default=300.0, help="bound per run, s")
    args = parser.parse_args()
    systems = [s for s in args.systems.split(",") if s]
    if unknown := set(systems) - set(SYSTEMS):
        parser.error(f"unknown systems {sorted(unknown)}; choose from {', '.join(SYSTEMS)}")
    delays = [float(d) for d in args.delays.split(",") if d.strip()]
    console = Console(width=None if sys.stdout.isatty() else 140)
    console.rule("weir bench: egress to a Knative sink")
    bench = Bench(args, console)
    results = []
    with contextlib.suppress(KeyboardInterrupt):
        for rep in range(1, args.reps + 1):
            for delay in delays:
                for system in systems if rep % 2 else reversed(systems):
                    results.append(bench.run(system, delay, rep))
    report(console, results)
    console.print(machine_line(bench.settings_for(bench.prefix)))


if __name__ == "__main__":
    main()

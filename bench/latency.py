"""End-to-end latency at a low input rate: Faust's 1.5 s fetch wait against weir's, same run.

faust-streaming 0.15.3 builds its worker consumer with ``fetch_max_wait_ms=1500``
written into the call; weir's own Faust transport (``streams/faust_transport.py``)
uses ``WEIR_KAFKA__FETCH_MAX_WAIT_MS`` instead (default 100 ms). Two variants of
the same real weir worker (``weir worker``, a Faust process) run one after the
other, in alternating order over ``--repeat`` repetitions:

* **baseline** — ``fetch_max_wait_ms=1500``, exactly Faust's hard-coded value;
* **weir** — the default ``fetch_max_wait_ms`` of ``KafkaSettings`` (100 ms).

Setup of each variant (not measured): a fresh topic prefix, a scikit-learn
``LogisticRegression`` published to the MinIO registry, one ``kserve.ModelServer``
(V1 REST) serving it, an ``activate`` event on the models topic, a ``Collector``
on the predictions topic and the worker. Warm-up: records ``w-<seq>`` are
produced at ``--rate`` until the first prediction arrives (the worker is routed
and scoring), then for ``--warmup`` seconds more, and drained.

Measured: ``--records`` records ``m-<seq>`` produced by a thread of this script
at a fixed ``--rate``, each at its own due time (not in bursts), with an
already connected producer (``linger.ms=0``, flushed between records).
Latency per record = time the collector in this script read its prediction -
time just before the record was produced (same monotonic clock). Also: the
prediction CloudEvent's ``time`` (stamped by the worker when it built the
prediction) - the record CloudEvent's ``time`` (stamped just before it was
produced), the "scored" latency, which leaves the collector's read out.
Afterwards, with no input, the worker's CPU (``/proc/<pid>/stat``) and the
requests it sends to the broker (data segments on its sockets, from ``ss``)
over ``--idle`` seconds: the price of fetching more often.

    .venv/bin/python -m bench.latency [--records 300] [--rate 20] [--repeat 1]
    .venv/bin/python bench/latency.py   # the same, run as a script like the others
"""

from __future__ import annotations

import argparse
import contextlib
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from connectors.kafka import EventProducer, ensure_topics
from connectors.process import ServiceProcess, free_port
from connectors.signing import signed
from schemas import InputRecord, ModelVersionEvent, new_event
from schemas.settings import KafkaSettings, ScoringSettings, Settings
from schemas.topics import Topic, topic_name
from streams.dev.localrun import Collector, start_worker, stop_model_servers
from streams.servers.deployers import serve

if __package__:  # python -m bench.latency
    from bench._shared import (
        FEATURES,
        bench_settings,
        delete_groups,
        delete_models,
        delete_topics,
        machine_line,
        process_tree,
        publish_model,
        tree_cpu_seconds,
    )
else:  # python bench/latency.py, as the other bench scripts run
    from _shared import (  # type: ignore[no-redef]
        FEATURES,
        bench_settings,
        delete_groups,
        delete_models,
        delete_topics,
        machine_line,
        process_tree,
        publish_model,
        tree_cpu_seconds,
    )

PREDICTION = "io.weir.prediction.v1"
FAUST_FETCH_WAIT_MS = 1500  # faust/transport/drivers/aiokafka.py, faust-streaming 0.15.3
WEIR_FETCH_WAIT_MS = int(KafkaSettings.model_fields["fetch_max_wait_ms"].default)


# ----------------------------------------------------------------- helpers


def requests_sent(pid: int | None, broker_port: int) -> int | None:
    """Data segments the process and its descendants sent to the broker so far
    (``ss -tinp``): one per Kafka request while idle (fetches, heartbeats, metadata),
    on their open sockets."""
    if pid is None:
        return None
    tree = {f"pid={p}," for p in process_tree(pid)}
    try:
        out = subprocess.run(
            ["ss", "-tinpH", f"dport = :{broker_port}"],
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        ).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    total, mine = 0, False
    for line in out.splitlines():
        if not line.startswith(("\t", " ")):  # a socket line; its details follow
            mine = any(p in line for p in tree)
        elif mine:
            found = re.search(r"\bdata_segs_out:(\d+)", line)
            total += int(found.group(1)) if found else 0
    return total


def pct(values: list[float], q: float) -> float | None:
    return float(np.percentile(values, q)) if values else None


class Stream(threading.Thread):
    """Produces records ``<tag>-<seq>`` at a fixed rate, up to ``count`` or until halted.

    ``producer`` is already connected (the run's warm-up used it), so the first
    record does not pay for the connection and the idempotent producer's set-up.
    """

    def __init__(
        self,
        producer: EventProducer,
        topic: str,
        rate: float,
        tag: str,
        count: int | None = None,
    ) -> None:
        super().__init__(name=f"bench-stream-{tag}", daemon=True)
        self.producer, self.topic, self.rate = producer, topic, rate
        self.tag, self.count = tag, count
        self.sent_at: list[float] = []  # monotonic, just before produce; index = seq
        self.sent_wall: list[datetime] = []  # the record CloudEvent's time
        self.halt = threading.Event()
        self.error: BaseException | None = None

    def run(self) -> None:
        producer = self.producer
        rng = np.random.default_rng(5)
        start = time.monotonic()
        try:
            while not self.halt.is_set() and (self.count is None or len(self.sent_at) < self.count):
                seq = len(self.sent_at)
                delay = start + seq / self.rate - time.monotonic()
                if delay > 0 and self.halt.wait(delay):
                    break
                values = rng.normal(size=len(FEATURES)).round(6)
                record = InputRecord(
                    id=f"{self.tag}-{seq:06d}",
                    features=dict(zip(FEATURES, map(float, values), strict=True)),
                    timestamp=datetime.now(UTC),
                )
                event = new_event(record, source="bench-latency")
                self.sent_at.append(time.monotonic())
                assert event.time is not None
                self.sent_wall.append(event.time)
                producer.produce(self.topic, event)  # linger 0: sent at once
                if start + (seq + 1) / self.rate - time.monotonic() > 0.005:
                    producer.flush(30)  # acknowledged before the next one is due
        except BaseException as exc:  # surfaced by the main thread
            self.error = exc
        finally:
            with contextlib.suppress(Exception):
                producer.flush(30)


class Tally:
    """Predictions of one model read so far: first read time and event time per record id."""

    def __init__(self, out: Collector, model: str) -> None:
        self.out, self.model = out, model
        self.index = 0
        self.read_at: dict[str, float] = {}  # monotonic, when this script read it
        self.stamped: dict[str, datetime] = {}  # the prediction CloudEvent's time
        self.count: Counter[str] = Counter()

    def __call__(self) -> None:
        messages, arrived = self.out.messages, self.out.arrived
        while self.index < len(messages):
            event, now = messages[self.index].event, arrived[self.index]
            self.index += 1
            if event is None or event.type != PREDICTION or event.data.model != self.model:
                continue
            rid = event.data.record_id
            self.count[rid] += 1
            if rid not in self.read_at:
                self.read_at[rid] = now
                if event.time is not None:
                    self.stamped[rid] = event.time

    def seen(self, tag: str) -> int:
        return sum(1 for rid in self.read_at if rid.startswith(f"{tag}-"))


@dataclass
class Result:
    variant: str
    rep: int
    fetch_wait_ms: int
    produced: int
    latencies_ms: list[float] = field(default_factory=list)  # collector read - produce
    scored_ms: list[float] = field(default_factory=list)  # prediction time - record time
    duplicates: int = 0
    first_prediction_s: float = 0.0  # worker start → first warm-up prediction
    busy_cpu_s: float | None = None  # worker CPU during the measured records
    idle_s: float = 0.0
    idle_cpu_s: float | None = None
    idle_requests: int | None = None

    @property
    def predicted(self) -> int:
        return len(self.latencies_ms)


# ---------------------------------------------------------------- one variant


class Run:
    """One variant, one repetition: its own prefix, model, server and worker."""

    def __init__(
        self, args: argparse.Namespace, console: Console, variant: str, wait_ms: int, rep: int
    ) -> None:
        self.args, self.console, self.variant, self.rep = args, console, variant, rep
        self.uid = uuid.uuid4().hex[:8]
        self.prefix = f"bench-lat-{self.uid}"
        self.model = f"blat{self.uid}"
        self.state_dir = Path(tempfile.mkdtemp(prefix="weir-bench-lat-"))
        base = bench_settings(
            prefix=self.prefix,
            model=self.model,
            state_dir=self.state_dir,
            batch_size=args.batch_size,
            batch_wait=args.batch_wait,
        )
        self.settings = base.model_copy(
            update={"kafka": base.kafka.model_copy(update={"fetch_max_wait_ms": wait_ms})}
        )
        k = self.settings.kafka
        self.records_t = topic_name(k, Topic.RECORDS)
        self.predictions_t = topic_name(k, Topic.PREDICTIONS)
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.worker: ServiceProcess | None = None
        self.producer: EventProducer | None = None
        self.out: Collector | None = None
        self.tally: Tally | None = None
        self.streams: list[Stream] = []
        self.result = Result(variant, rep, wait_ms, 0)

    def log(self, message: str) -> None:
        self.console.log(f"[bold]{self.variant}[/] rep {self.rep}: {message}")

    def wait(self, condition: Any, *, what: str, deadline_s: float) -> None:
        """Read predictions until ``condition()``; fail fast if a stream or the worker died."""
        assert self.out is not None and self.tally is not None
        tally = self.tally

        def check() -> bool:
            tally()
            for stream in self.streams:
                if stream.error is not None:
                    raise RuntimeError(f"the record stream failed: {stream.error!r}")
            if self.worker is not None and self.worker.pid() is None:
                raise RuntimeError(f"the weir worker exited; see {self.worker.log_file}")
            return bool(condition())

        self.out.until(check, deadline_s=deadline_s, what=what)

    def stream(self, tag: str, count: int | None = None) -> Stream:
        assert self.producer is not None
        stream = Stream(self.producer, self.records_t, self.args.rate, tag, count)
        self.streams.append(stream)
        stream.start()
        return stream

    def setup(self) -> None:
        t = time.monotonic()
        ensure_topics(self.settings)
        publish_model(self.settings, self.model)
        serve(self.settings, self.model, "1", self.port)
        change = ModelVersionEvent(
            action="activate",
            model=self.model,
            version="1",
            url=self.url,
            protocol="v1",
            features=FEATURES,
        )
        self.producer = EventProducer(self.settings, **{"linger.ms": 0})
        self.producer.send(
            topic_name(self.settings.kafka, Topic.MODELS),
            signed(self.settings, new_event(change, source="bench-lat")),
        )
        self.out = Collector(self.settings, [self.predictions_t], group=f"{self.prefix}-collect")
        self.tally = Tally(self.out, self.model)
        self.log(
            f"topics {self.prefix}.*, model {self.model} v1 served at {self.url} "
            f"({time.monotonic() - t:.1f}s); starting the worker "
            f"(fetch_max_wait_ms={self.settings.kafka.fetch_max_wait_ms})"
        )
        started = time.monotonic()
        self.worker = start_worker(self.settings, self.uid)
        warm = self.stream("w")
        tally = self.tally
        self.wait(lambda: tally.seen("w") > 0, what="the first prediction", deadline_s=120)
        self.result.first_prediction_s = time.monotonic() - started
        until = time.monotonic() + self.args.warmup
        self.wait(lambda: time.monotonic() >= until, what="warm-up", deadline_s=60)
        warm.halt.set()
        warm.join(timeout=30)
        produced = len(warm.sent_at)
        self.wait(lambda: tally.seen("w") >= produced, what="warm-up drained", deadline_s=60)
        self.log(
            f"worker routed and scoring: first prediction {self.result.first_prediction_s:.1f}s "
            f"after start; {produced} warm-up records scored"
        )

    def measure(self) -> None:
        assert self.worker is not None and self.tally is not None and self.out is not None
        n, tally, worker = self.args.records, self.tally, self.worker
        with Progress(
            TextColumn(f"[bold]{self.variant}[/] rep {self.rep}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.fields[last]}"),
            TimeElapsedColumn(),
            console=self.console,
        ) as progress:
            task = progress.add_task(self.variant, total=n, last="")
            cpu0 = tree_cpu_seconds(worker.pid())
            stream = self.stream("m", n)
            shown = 0

            def done() -> bool:
                nonlocal shown
                seen = tally.seen("m")
                if seen != shown:
                    shown = seen
                    rid = f"m-{seen - 1:06d}"
                    last = ""
                    if rid in tally.read_at and seen - 1 < len(stream.sent_at):
                        ms = (tally.read_at[rid] - stream.sent_at[seen - 1]) * 1000
                        last = f"last {ms:5.0f} ms"
                    progress.update(task, completed=seen, last=last)
                return seen >= n

            self.wait(done, what=f"{n} predictions", deadline_s=n / self.args.rate + 60)
            cpu1 = tree_cpu_seconds(worker.pid())
        r = self.result
        r.busy_cpu_s = None if cpu0 is None or cpu1 is None else cpu1 - cpu0
        stream.join(timeout=30)
        r.produced = len(stream.sent_at)
        for seq, (sent, wall) in enumerate(zip(stream.sent_at, stream.sent_wall, strict=True)):
            rid = f"m-{seq:06d}"
            if rid in tally.read_at:
                r.latencies_ms.append((tally.read_at[rid] - sent) * 1000)
            if rid in tally.stamped:
                r.scored_ms.append((tally.stamped[rid] - wall).total_seconds() * 1000)
        r.duplicates = sum(c - 1 for rid, c in tally.count.items() if rid.startswith("m-"))
        lat = r.latencies_ms
        if lat:
            worst = sorted(range(len(lat)), key=lat.__getitem__)[-3:][::-1]
            self.log(
                f"{r.predicted}/{r.produced} predicted, p50 {pct(lat, 50):.0f} ms; slowest: "
                + ", ".join(f"#{i} {lat[i]:.0f} ms" for i in worst)
            )

        # idle: no input, the worker only polls
        pid, port = worker.pid(), self.settings.kafka.host_port[1]
        self.out.poll_for(2.0)  # let the last commit and fetches settle
        cpu0, q0, t0 = tree_cpu_seconds(pid), requests_sent(pid, port), time.monotonic()
        self.out.poll_for(self.args.idle)
        cpu1, q1 = tree_cpu_seconds(pid), requests_sent(pid, port)
        r.idle_s = time.monotonic() - t0
        if cpu0 is not None and cpu1 is not None:
            r.idle_cpu_s = cpu1 - cpu0
        if q0 is not None and q1 is not None:
            r.idle_requests = q1 - q0
        self.log(
            f"idle {r.idle_s:.0f}s: worker CPU {r.idle_cpu_s}s, requests to the broker "
            f"{r.idle_requests}"
        )

    def cleanup(self, ok: bool) -> None:
        for stream in self.streams:
            stream.halt.set()
            stream.join(timeout=30)
        if self.out is not None:
            with contextlib.suppress(Exception):
                self.out.close()
        if self.worker is not None:
            pid = self.worker.stop()
            if pid is not None:
                self.log(f"worker stopped (pid {pid})")
        for pid in stop_model_servers(self.settings):
            self.log(f"model server stopped (pid {pid})")
        if self.args.keep_topics:
            self.log(f"kept topics {self.prefix}.* and model {self.model}")
        else:
            delete_groups(
                self.settings, [f"{self.prefix}-collect", f"{self.prefix}-scoring-{self.model}"]
            )
            delete_topics(self.settings, self.prefix)
            delete_models(self.settings, self.model)
        if ok and not self.args.keep_logs:
            shutil.rmtree(self.state_dir, ignore_errors=True)
        else:
            self.log(f"logs kept in {self.state_dir}")


def run_variant(
    args: argparse.Namespace, console: Console, variant: str, wait_ms: int, rep: int
) -> Result:
    run = Run(args, console, variant, wait_ms, rep)
    ok = False
    try:
        run.setup()
        run.measure()
        ok = True
    finally:
        run.cleanup(ok)
    return run.result


# ---------------------------------------------------------------- the report


def report(console: Console, results: list[Result], args: argparse.Namespace) -> None:
    def ms(v: float | None) -> str:
        return "-" if v is None else f"{v:.0f}"

    table = Table(
        "variant",
        "rep",
        "fetch wait ms",
        "records",
        "p50 ms",
        "p90 ms",
        "p99 ms",
        "max ms",
        "scored p50 ms",
        "scored p99 ms",
        "dup",
        "busy CPU s",
        "idle CPU %",
        "idle req/s",
        title=f"record produced → prediction read, {args.records} records at "
        f"{args.rate:g} records/s; batch {args.batch_size} / {args.batch_wait * 1000:.0f} ms",
    )
    rows = list(results)
    if args.repeat > 1:  # one pooled row per variant
        for variant in dict.fromkeys(r.variant for r in results):
            mine = [r for r in results if r.variant == variant]
            pooled = Result(variant, 0, mine[0].fetch_wait_ms, sum(r.produced for r in mine))
            for r in mine:
                pooled.latencies_ms += r.latencies_ms
                pooled.scored_ms += r.scored_ms
                pooled.duplicates += r.duplicates
            rows.append(pooled)
    for r in rows:
        lat = r.latencies_ms
        idle_cpu = None if r.idle_cpu_s is None else 100 * r.idle_cpu_s / r.idle_s
        table.add_row(
            r.variant,
            str(r.rep) if r.rep else "all",
            str(r.fetch_wait_ms),
            f"{r.predicted}/{r.produced}",
            ms(pct(lat, 50)),
            ms(pct(lat, 90)),
            ms(pct(lat, 99)),
            ms(max(lat) if lat else None),
            ms(pct(r.scored_ms, 50)),
            ms(pct(r.scored_ms, 99)),
            str(r.duplicates),
            "-" if r.busy_cpu_s is None or not r.rep else f"{r.busy_cpu_s:.2f}",
            "-" if idle_cpu is None or not r.rep else f"{idle_cpu:.1f}",
            "-" if r.idle_requests is None or not r.rep else f"{r.idle_requests / r.idle_s:.1f}",
        )
    console.print(table)

    def overall(variant: str, q: float) -> float | None:
        return pct([v for r in results if r.variant == variant for v in r.latencies_ms], q)

    for q in (50, 99):
        b, w = overall("baseline", q), overall("weir", q)
        if b and w:
            per_rep = [
                (pct(rb.latencies_ms, q) or 0) / (pct(rw.latencies_ms, q) or 1)
                for rb, rw in zip(
                    [r for r in results if r.variant == "baseline"],
                    [r for r in results if r.variant == "weir"],
                    strict=False,
                )
            ]
            spread = (
                f" (per rep {min(per_rep):.1f}-{max(per_rep):.1f}x)" if len(per_rep) > 1 else ""
            )
            console.print(
                f"p{q} baseline / weir: {b:.0f} / {w:.0f} ms = [bold]{b / w:.1f}x[/]{spread}"
            )
    first = {
        v: [r.first_prediction_s for r in results if r.variant == v] for v in ("baseline", "weir")
    }
    console.print(
        "worker start → first prediction (s, median): "
        + ", ".join(f"{v} {statistics.median(s):.1f}" for v, s in first.items() if s)
    )
    console.print(machine_line(Settings()))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=300, help="measured records per variant")
    parser.add_argument("--rate", type=float, default=20.0, help="records/s produced")
    parser.add_argument("--repeat", type=int, default=1, help="repetitions of each variant")
    parser.add_argument(
        "--baseline-wait",
        type=int,
        default=FAUST_FETCH_WAIT_MS,
        help="baseline fetch_max_wait_ms (Faust's hard-coded value)",
    )
    parser.add_argument(
        "--weir-wait",
        type=int,
        default=WEIR_FETCH_WAIT_MS,
        help="weir fetch_max_wait_ms (the KafkaSettings default)",
    )
    scoring = ScoringSettings()
    parser.add_argument(
        "--batch-size", type=int, default=scoring.batch_size, help="weir micro-batch size"
    )
    parser.add_argument(
        "--batch-wait", type=float, default=scoring.batch_wait_s, help="weir batch wait, s"
    )
    parser.add_argument("--warmup", type=float, default=5.0, help="s of scoring before measuring")
    parser.add_argument("--idle", type=float, default=10.0, help="s of idle worker measured")
    parser.add_argument("--keep-topics", action="store_true", help="keep topics and models")
    parser.add_argument("--keep-logs", action="store_true", help="keep process logs")
    args = parser.parse_args()
    console = Console(width=None if sys.stdout.isatty() else 150)
    variants = {"baseline": args.baseline_wait, "weir": args.weir_wait}
    console.rule(
        f"weir bench: end-to-end latency at {args.rate:g} records/s, "
        f"fetch wait {args.baseline_wait} ms (Faust) vs {args.weir_wait} ms (weir)"
    )
    results: list[Result] = []
    for rep in range(1, args.repeat + 1):
        order = ("baseline", "weir") if rep % 2 else ("weir", "baseline")
        for variant in order:
            results.append(run_variant(args, console, variant, variants[variant], rep))
    report(console, results, args)


if __name__ == "__main__":
    main()

"""B6: model hot swap under a steady stream, against a restart-based swap, same run.

Setup (not timed): a fresh topic prefix, two versions of one model whose
outputs tell them apart (v1 answers classes 0/1, v2 answers 2/3), two
``kserve.ModelServer`` processes (one per version, V1 REST), an ``activate v1``
event on the models topic, one weir worker (``weir worker``, a real Faust
process) and a steady stream of records produced at ``--rate`` records/s by a
thread of this script for the whole run.

Swaps alternate between the two kinds, ``--reps`` of each, direction
alternating v1 → v2 → v1 …:

* **hot** (weir) — at time T an ``activate`` event for the other version is
  published on the models topic; the running worker switches routes;
* **restart** (baseline) — at time T the worker process is stopped (SIGKILL
  by default, as ``kill -9`` or a crash would; ``--restart-signal term`` for a
  graceful stop, which ``ServiceProcess.stop`` turns into SIGKILL after 30 s),
  the ``activate`` event is published, and a new worker process starts with
  the new URL already active (it replays the compacted models topic) and
  resumes the consumer group.

Per swap: T → first prediction of the new version read from the predictions
topic, T → last prediction of the old version, records produced after T that
were still scored by the old version, duplicates read in the swap's window,
records produced in the window that never got a prediction (lost, checked
after the stream stops and the backlog drains), and end-to-end latency
(prediction read - record produced, same clock) in the ``--window`` seconds
after T against the same span before it.

    .venv/bin/python bench/hot_swap.py [--reps 3] [--rate 300]
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import signal
import statistics
import sys
import tempfile
import threading
import time
import uuid
from collections import Counter
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
from _shared import (
    FEATURES,
    Stream,
    bench_settings,
    delete_groups,
    delete_models,
    delete_topics,
    machine_line,
)
from rich.console import Console
from rich.table import Table
from sklearn.linear_model import LogisticRegression

from connectors.kafka import EventProducer, ensure_topics
from connectors.process import ServiceProcess, free_port
from connectors.registry import ModelRegistry
from connectors.signing import signed
from schemas import ModelVersionEvent, new_event
from schemas.model_card import ModelCard
from schemas.settings import ScoringSettings, Settings
from schemas.topics import Topic, topic_name
from streams.dev.localrun import Collector, start_worker
from streams.servers.deployers import serve
from streams.servers.model_server import start_server

PREDICTION = "io.weir.prediction.v1"
CLASSES = {"1": [0, 1], "2": [2, 3]}  # an output tells which version's server produced it


def version_of_output(output: Any) -> str | None:
    for version, classes in CLASSES.items():
        if output in classes:
            return version
    return None


# ----------------------------------------------------------------- helpers


def publish_tagged_models(settings: Settings, model: str) -> None:
    """v1 and v2 learn the same boundary but answer with disjoint class labels."""
    rng = np.random.default_rng(3)
    x = rng.normal(size=(2000, len(FEATURES)))
    side = (x @ rng.normal(size=len(FEATURES)) > 0).astype(int)
    registry = ModelRegistry.for_settings(settings)
    for version, classes in CLASSES.items():
        card = ModelCard(
            name=model,
            version=version,
            framework="sklearn",
            features=FEATURES,
            classes=classes,
            created_at=datetime.now(UTC),
        )
        registry.publish(card, LogisticRegression().fit(x, np.asarray(classes)[side]))


def percentile(values: list[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


@dataclass
class Seen:
    seq: int
    version: str
    at: float  # monotonic, when this script read the prediction


class Tally:
    """Every prediction of the model read so far, in read order."""

    def __init__(self, out: Collector, model: str) -> None:
        self.out, self.model = out, model
        self.index = 0
        self.seen: list[Seen] = []
        self.count: Counter[int] = Counter()
        self.max_seq = -1
        self.mismatched = 0  # stamped version differs from the server that answered

    def __call__(self) -> None:
        messages, arrived = self.out.messages, self.out.arrived
        while self.index < len(messages):
            event, read_at = messages[self.index].event, arrived[self.index]
            self.index += 1
            if event is None or event.type != PREDICTION or event.data.model != self.model:
                continue
            p = event.data
            if version_of_output(p.output) != p.version:
                self.mismatched += 1
            seq = int(p.record_id.removeprefix("s-"))
            self.seen.append(Seen(seq, p.version, read_at))
            self.count[seq] += 1
            self.max_seq = max(self.max_seq, seq)


@dataclass
class Swap:
    kind: str  # "hot" | "restart"
    old: str
    new: str
    at: float  # T, monotonic
    first_new: float | None = None
    stop_s: float | None = None  # restart only: until the old worker process is gone
    end: float | None = None  # the next swap's T (or the end of the run)
    scanned: int = 0  # predictions already searched for the first new-version one


# ---------------------------------------------------------------- the run


class Bench:
    def __init__(self, args: argparse.Namespace, console: Console) -> None:
        self.args = args
        self.console = console
        self.uid = uuid.uuid4().hex[:8]
        self.prefix = f"bench-swap-{self.uid}"
        self.model = f"bswap{self.uid}"
        self.state_dir = Path(tempfile.mkdtemp(prefix="weir-bench-swap-"))
        self.settings = bench_settings(
            prefix=self.prefix,
            model=self.model,
            state_dir=self.state_dir,
            batch_size=args.batch_size,
            batch_wait=args.batch_wait,
        )
        k = self.settings.kafka
        self.records_t = topic_name(k, Topic.RECORDS)
        self.predictions_t = topic_name(k, Topic.PREDICTIONS)
        self.models_t = topic_name(k, Topic.MODELS)
        self.ports = {"1": free_port(), "2": free_port()}
        self.servers: list[ServiceProcess] = []
        self.workers: list[ServiceProcess] = []
        self.worker: ServiceProcess | None = None
        self.stream: Stream | None = None
        self.out: Collector | None = None
        self.tally: Tally | None = None
        self.producer: EventProducer | None = None
        self.swaps: list[Swap] = []

    def log(self, message: str) -> None:
        self.console.log(message)

    def url(self, version: str) -> str:
        return f"http://127.0.0.1:{self.ports[version]}"

    def activate(self, version: str) -> None:
        change = ModelVersionEvent(
            action="activate",
            model=self.model,
            version=version,
            url=self.url(version),
            protocol="v1",
            features=FEATURES,
        )
        assert self.producer is not None
        self.producer.send(
            self.models_t, signed(self.settings, new_event(change, source="bench-swap"))
        )

    def start_worker(self) -> ServiceProcess:
        worker = start_worker(self.settings, f"{self.uid}-{len(self.workers) + 1}")
        self.workers.append(worker)
        return worker

    def wait(self, condition: Any, *, what: str, deadline_s: float | None = None) -> None:
        """Read predictions until ``condition()``; fail fast if the stream or worker died."""
        assert self.out is not None and self.tally is not None
        tally, stream = self.tally, self.stream

        def check() -> bool:
            tally()
            if stream is not None and stream.error is not None:
                raise RuntimeError(f"the record stream failed: {stream.error!r}")
            if self.worker is not None and self.worker.pid() is None:
                raise RuntimeError(f"the weir worker exited; see {self.worker.log_file}")
            return bool(condition())

        self.out.until(check, deadline_s=deadline_s or self.args.deadline, what=what)

    def setup(self) -> None:
        t = time.monotonic()
        ensure_topics(self.settings)
        publish_tagged_models(self.settings, self.model)
        self.log(f"topics {self.prefix}.* created, {self.model} v1 and v2 published")
        start_server(self.settings, self.model, "2", self.ports["2"])  # both load at once
        for version in ("1", "2"):
            self.servers.append(serve(self.settings, self.model, version, self.ports[version]))
            self.log(f"model server v{version} ready at {self.url(version)}")
        self.producer = EventProducer(self.settings)
        self.activate("1")
        group = f"{self.prefix}-collect"
        self.out = Collector(self.settings, [self.predictions_t], group=group)
        self.tally = Tally(self.out, self.model)
        self.stream = Stream(self.settings, self.records_t, self.args.rate)
        self.stream.start()
        self.worker = self.start_worker()
        self.wait(lambda: bool(self.tally and self.tally.seen), what="the first prediction")
        self.settle(self.args.warmup, "warm-up (caught up with the stream)")
        self.log(
            f"worker scoring v1 at {self.args.rate:.0f} records/s; "
            f"setup {time.monotonic() - t:.1f}s"
        )

    def first_new_after(self, swap: Swap) -> bool:
        assert self.tally is not None
        seen = self.tally.seen
        while swap.first_new is None and swap.scanned < len(seen):
            s = seen[swap.scanned]
            swap.scanned += 1
            if s.at >= swap.at and s.version == swap.new:
                swap.first_new = s.at
        return swap.first_new is not None

    def hot(self, old: str, new: str) -> Swap:
        swap = Swap("hot", old, new, time.monotonic())
        self.activate(new)
        self.wait(lambda: self.first_new_after(swap), what=f"first v{new} prediction")
        return swap

    def restart(self, old: str, new: str) -> Swap:
        assert self.worker is not None
        old_worker, self.worker = self.worker, None
        swap = Swap("restart", old, new, time.monotonic())
        done = threading.Event()
        failure: list[BaseException] = []

        def restart() -> None:
            try:
                pid = old_worker.pid()
                if self.args.restart_signal == "kill" and pid is not None:
                    os.kill(pid, signal.SIGKILL)
                    with contextlib.suppress(ChildProcessError):
                        os.waitpid(pid, 0)  # our child: reap it, so no zombie stays
                old_worker.stop()
                swap.stop_s = time.monotonic() - swap.at
                self.activate(new)
                self.worker = self.start_worker()
            except BaseException as exc:
                failure.append(exc)
            finally:
                done.set()

        # the restart runs aside so that predictions keep being read meanwhile
        thread = threading.Thread(target=restart, name="bench-restart", daemon=True)
        thread.start()

        def ready() -> bool:
            if failure:
                raise RuntimeError(f"restart failed: {failure[0]!r}")
            return done.is_set() and self.first_new_after(swap)

        self.wait(ready, what=f"first v{new} prediction after the restart")
        thread.join()
        return swap

    def caught_up(self) -> bool:
        """The newest prediction read is for a record produced less than a second ago."""
        assert self.stream is not None and self.tally is not None
        seq = self.tally.max_seq
        return seq >= 0 and self.stream.produced_at[seq] > time.monotonic() - 1.0

    def settle(self, seconds: float, what: str) -> None:
        """Keep reading for ``seconds``, then until the worker has caught up with the stream."""
        until = time.monotonic() + seconds
        self.wait(lambda: time.monotonic() >= until and self.caught_up(), what=what)

    def run(self) -> None:
        version = "1"
        # alternate the order per repetition, so each kind swaps in both directions
        order = [
            kind
            for rep in range(1, self.args.reps + 1)
            for kind in (("hot", "restart") if rep % 2 else ("restart", "hot"))
        ]
        for i, kind in enumerate(order, 1):
            new = "2" if version == "1" else "1"
            swap = self.hot(version, new) if kind == "hot" else self.restart(version, new)
            assert swap.first_new is not None
            self.swaps.append(swap)
            self.log(
                f"swap {i}/{len(order)} {kind:7} v{version} → v{new}: first v{new} prediction "
                f"{swap.first_new - swap.at:.3f}s after T"
                + (f" (old worker gone after {swap.stop_s:.2f}s)" if swap.stop_s else "")
            )
            version = new
            self.settle(self.args.gap, "the gap between swaps (caught up with the stream)")
        end = time.monotonic()
        for a, b in zip(self.swaps, [*self.swaps[1:], None], strict=True):
            a.end = b.at if b is not None else end
        assert self.stream is not None and self.tally is not None
        self.stream.halt.set()
        self.stream.join(timeout=30)
        produced = len(self.stream.produced_at)
        tally = self.tally
        self.log(f"stream stopped after {produced} records; waiting for the backlog")
        with contextlib.suppress(AssertionError):
            self.wait(
                lambda: len(tally.count) >= produced,
                what="a prediction for every record",
                deadline_s=self.args.drain,
            )

    def cleanup(self, ok: bool) -> None:
        if self.stream is not None:
            self.stream.halt.set()
            self.stream.join(timeout=30)
        if self.out is not None:
            self.out.close()
        for proc in self.workers + self.servers:
            pid = proc.stop()
            if pid is not None:
                self.log(f"stopped {proc.name} (pid {pid})")
        if self.args.keep_topics:
            self.log(f"kept topics {self.prefix}.* and model {self.model}")
        else:
            delete_groups(
                self.settings,
                [f"{self.prefix}-collect", f"{self.prefix}-scoring-{self.model}"],
            )
            delete_topics(self.settings, self.prefix)
            delete_models(self.settings, self.model)
            self.log(f"deleted topics {self.prefix}.*, their groups and model {self.model}")
        if ok and not self.args.keep_logs:
            shutil.rmtree(self.state_dir, ignore_errors=True)
        else:
            self.log(f"logs kept in {self.state_dir}")


# ---------------------------------------------------------------- the report


@dataclass
class SwapFigures:
    kind: str
    label: str
    latency_s: float
    stop_s: float | None
    last_old_s: float | None
    old_after_t: int
    lost: int
    duplicates: int
    p99_before_ms: float | None
    p99_after_ms: float | None
    max_after_s: float | None


def figures(bench: Bench) -> list[SwapFigures]:
    assert bench.stream is not None and bench.tally is not None
    produced_at = bench.stream.produced_at
    seen, count = bench.tally.seen, bench.tally.count
    first_seen: dict[int, float] = {}
    for s in seen:
        first_seen.setdefault(s.seq, s.at)
    window = bench.args.window
    rows = []
    for swap in bench.swaps:
        assert swap.first_new is not None and swap.end is not None
        t, end = swap.at, swap.end
        old_after = [s for s in seen if s.version == swap.old and s.at >= t and s.at < end]
        last_old = max((s.at for s in old_after), default=None)
        old_after_t = sum(1 for s in old_after if produced_at[s.seq] > t)
        in_window = [i for i, p in enumerate(produced_at) if t <= p < end]
        lost = sum(1 for i in in_window if count[i] == 0)
        duplicates = 0
        reads: Counter[int] = Counter()
        for s in seen:
            reads[s.seq] += 1
            if reads[s.seq] > 1 and t <= s.at < end:
                duplicates += 1

        def latencies(lo: float, hi: float) -> list[float]:
            return [
                first_seen[i] - p
                for i, p in enumerate(produced_at)
                if lo <= p < hi and i in first_seen
            ]

        before = latencies(t - window, t)
        after = latencies(t, min(t + window, end))
        p99_before, p99_after = percentile(before, 0.99), percentile(after, 0.99)
        rows.append(
            SwapFigures(
                kind=swap.kind,
                label=f"v{swap.old} → v{swap.new}",
                latency_s=swap.first_new - t,
                stop_s=swap.stop_s,
                last_old_s=None if last_old is None else last_old - t,
                old_after_t=old_after_t,
                lost=lost,
                duplicates=duplicates,
                p99_before_ms=None if p99_before is None else p99_before * 1000,
                p99_after_ms=None if p99_after is None else p99_after * 1000,
                max_after_s=max(after) if after else None,
            )
        )
    return rows


def report(console: Console, bench: Bench) -> None:
    def num(v: float | None, fmt: str) -> str:
        return "-" if v is None else format(v, fmt)

    args = bench.args
    rows = figures(bench)
    table = Table(
        "#",
        "kind",
        "swap",
        "T → first new s",
        "stop s",
        "T → last old s",
        "old-scored after T",
        "lost",
        "dup",
        "p99 before ms",
        "p99 after ms",
        "max after s",
        title=f"model swap under {args.rate:.0f} records/s; weir batch {args.batch_size} / "
        f"{args.batch_wait * 1000:.0f} ms; restart = SIG{args.restart_signal.upper()} + new "
        "worker",
    )
    for i, r in enumerate(rows, 1):
        table.add_row(
            str(i),
            "hot (weir)" if r.kind == "hot" else "restart",
            r.label,
            f"{r.latency_s:.3f}",
            num(r.stop_s, ".2f"),
            num(r.last_old_s, ".3f"),
            str(r.old_after_t),
            str(r.lost),
            str(r.duplicates),
            num(r.p99_before_ms, ".0f"),
            num(r.p99_after_ms, ".0f"),
            num(r.max_after_s, ".2f"),
        )
    console.print(table)
    summary = Table("metric", "hot (weir)", "restart", "restart / hot", title="summary (median)")
    by = {k: [r for r in rows if r.kind == k] for k in ("hot", "restart")}

    def med(kind: str, get: Any) -> float | None:
        values = [v for v in (get(r) for r in by[kind]) if v is not None]
        return statistics.median(values) if values else None

    for label, get, fmt in (
        ("T → first new-version prediction, s", lambda r: r.latency_s, ".3f"),
        ("p99 latency after T, ms", lambda r: r.p99_after_ms, ".0f"),
        ("max latency after T, s", lambda r: r.max_after_s, ".2f"),
    ):
        h, r = med("hot", get), med("restart", get)
        ratio = f"{r / h:.1f}x" if h and r else "-"
        summary.add_row(label, num(h, fmt), num(r, fmt), ratio)
    for label, get in (
        ("old-scored after T (total)", lambda r: r.old_after_t),
        ("lost (total)", lambda r: r.lost),
        ("duplicates (total)", lambda r: r.duplicates),
    ):
        summary.add_row(label, str(sum(map(get, by["hot"]))), str(sum(map(get, by["restart"]))), "")
    console.print(summary)
    assert bench.stream is not None and bench.tally is not None
    produced = len(bench.stream.produced_at)
    predicted = len(bench.tally.count)
    console.print(
        f"records produced {produced}, with a prediction {predicted}, "
        f"lost overall {produced - predicted}, "
        f"duplicates overall {sum(bench.tally.count.values()) - predicted}, "
        f"stamped version ≠ answering server {bench.tally.mismatched}"
    )
    console.print(machine_line(bench.settings))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reps", type=int, default=3, help="swaps of each kind")
    parser.add_argument("--rate", type=float, default=300.0, help="records/s produced")
    defaults = ScoringSettings()  # what a user gets
    parser.add_argument(
        "--batch-size", type=int, default=defaults.batch_size, help="weir micro-batch size"
    )
    parser.add_argument(
        "--batch-wait", type=float, default=defaults.batch_wait_s, help="weir batch wait, s"
    )
    parser.add_argument(
        "--gap", type=float, default=10.0, help="s after a swap (and caught up) before the next"
    )
    parser.add_argument("--window", type=float, default=5.0, help="latency window after T, s")
    parser.add_argument("--warmup", type=float, default=10.0, help="s of scoring before swap 1")
    parser.add_argument(
        "--restart-signal",
        choices=("term", "kill"),
        default="kill",
        help="how the restart baseline stops the worker (term: SIGTERM, SIGKILL after 30 s)",
    )
    parser.add_argument("--deadline", type=float, default=90.0, help="bound per wait, s")
    parser.add_argument("--drain", type=float, default=60.0, help="bound on the final drain, s")
    parser.add_argument("--keep-topics", action="store_true", help="keep topics and models")
    parser.add_argument("--keep-logs", action="store_true", help="keep process logs")
    args = parser.parse_args()
    console = Console(width=None if sys.stdout.isatty() else 140)
    console.rule("weir bench: model hot swap (B6)")
    bench = Bench(args, console)
    ok = False
    try:
        bench.setup()
        bench.run()
        ok = True
    finally:
        bench.cleanup(ok)
    report(console, bench)


if __name__ == "__main__":
    main()

"""Embedded snapshot delay: a learner snapshot published → the first prediction it serves.

Purpose: it calibrates ``bench/adaptation.py``'s ``--embed-s`` (0.25 s: a heavy
snapshot, the forest leading) and ``--embed-light-s`` (0.25 s: a light one, the
regression leading), which simulate publish → serving of an online learner's
snapshot there: how many records the old version still serves meanwhile.

Setup (not timed): a fresh topic prefix, model and state directory; version 1
of the model (``_shared.publish_model``) behind a ``kserve.ModelServer``
process (``streams.servers.deployers.serve``) and a signed ``activate v1``
route; one scoring role as a real process (``weir worker --role scoring``, the
default scoring settings) and a steady stream of records produced at
``--rate`` records/s by a thread of this script for the whole run. Two river
models, trained before the run on the demo stream (``streams.synthetic``, the
stream ``bench/adaptation.py``'s learner learns), stand for what a learner
snapshot is:

* **light** — river's scaled logistic regression
  (``agents.leader.scaled_linear``) after ``--light-rows`` rows (~1.7 KB
  pickled): a snapshot while the regression leads;
* **heavy** — ``river.forest.ARFClassifier(seed=0)`` after ``--heavy-rows``
  rows (6,000; the adaptation benchmark's forests are of this size): a
  snapshot while the forest leads. Stored as the learner role stores a
  snapshot (``connectors.registry.lean_pickle``, without the random
  generators' state), it is about 0.5 MB where a whole pickle of it is
  ~11.5 MB.

What is timed, per snapshot, as the learner role publishes one
(``streams/roles/learner.py``, ``store_snapshot`` and ``publish``): from the
start — before the pickle — through ``lean_pickle(model)``,
``registry.publish_bytes(card, blob)`` (a card with ``learner.format =
"pickle"``) and a signed ``activate`` route (protocol ``embedded``, url
``embedded_url(model, version)``) on the models topic, until the first
prediction whose ``url`` names that snapshot (its CloudEvent time, set by the
worker: the same clock on this machine). The parts are reported too: the
pickle, the registry write, signing and sending the route, and route sent →
first prediction (the worker folds the route, loads the snapshot from MinIO
and scores a batch with it). Kinds alternate (light, heavy, light, …),
``--reps`` of each, every one a new registry version; between two, at least
``--gap`` s of scoring and until the worker has caught up with the stream.

Warm-up: the first embedded load of a worker process also imports river (and
the predictor) — 0.7 s more on this machine — which a learner pays once per
scoring process, not per snapshot. So a light warm-up snapshot goes first; it
is shown in the table but left out of the statistics.

    .venv/bin/python bench/embed_delay.py [--reps 6] [--rate 300] [--heavy-rows 6000]
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import statistics
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from _shared import (
    FEATURES,
    Stream,
    bench_settings,
    delete_groups,
    delete_models,
    delete_topics,
    groups_with_prefix,
    machine_line,
    publish_model,
)
from rich.console import Console
from rich.table import Table
from river import forest

from agents.leader import scaled_linear
from connectors.kafka import EventProducer, ensure_topics
from connectors.process import ServiceProcess, free_port
from connectors.registry import ModelRegistry, lean_pickle
from connectors.signing import signed
from schemas import ModelVersionEvent, new_event
from schemas.model_card import ModelCard
from schemas.payloads import embedded_url
from schemas.settings import ScoringSettings, settings_env
from schemas.topics import Topic, topic_name
from streams import synthetic
from streams.dev.localrun import Collector
from streams.servers.deployers import serve

PREDICTION = "io.weir.prediction.v1"
LEARNER = "online"  # the learner's route version; its snapshots are online.<n>
SNAPSHOT_FEATURES = list(synthetic.FEATURES)  # x0..x2: records carry x0..x7, a superset
KINDS = ("light", "heavy")


def trained(kind: str, rows: int) -> Any:
    """The river model a learner snapshot of ``kind`` holds, after ``rows`` demo rows."""
    model: Any = scaled_linear() if kind == "light" else forest.ARFClassifier(seed=0)
    for row in synthetic.drifting_stream(rows, rows, seed=42):  # one concept, no drift
        model.learn_one(row.features, row.label)
    return model


class Served:
    """Reads the predictions kept so far (once each): the first time each url served."""

    def __init__(self, out: Collector, model: str) -> None:
        self.out, self.model = out, model
        self.index = 0
        self.count = 0
        self.max_seq = -1
        self.first: dict[str, datetime] = {}  # url → earliest prediction event time

    def __call__(self) -> None:
        messages = self.out.messages
        while self.index < len(messages):
            event = messages[self.index].event
            self.index += 1
            if event is None or event.type != PREDICTION or event.data.model != self.model:
                continue
            self.count += 1
            self.max_seq = max(self.max_seq, int(event.data.record_id.removeprefix("e-")))
            url, at = event.data.url, event.time
            if at is not None and (url not in self.first or at < self.first[url]):
                self.first[url] = at


@dataclass
class Snapshot:
    kind: str
    version: str
    warmup: bool
    size: int = 0
    pickle_s: float = 0.0
    write_s: float = 0.0
    route_s: float = 0.0  # signing and sending the activate route
    served_s: float = 0.0  # route sent → first prediction
    total_s: float = 0.0  # start (before the pickle) → first prediction


class Bench:
    def __init__(self, args: argparse.Namespace, console: Console) -> None:
        self.args = args
        self.console = console
        self.uid = uuid.uuid4().hex[:8]
        self.prefix = f"bench-embed-{self.uid}"
        self.model = f"bembed{self.uid}"
        self.state_dir = Path(tempfile.mkdtemp(prefix="weir-bench-embed-"))
        defaults = ScoringSettings()  # what a user gets
        self.settings = bench_settings(
            prefix=self.prefix,
            model=self.model,
            state_dir=self.state_dir,
            batch_size=defaults.batch_size,
            batch_wait=defaults.batch_wait_s,
        )
        k = self.settings.kafka
        self.records_t = topic_name(k, Topic.RECORDS)
        self.predictions_t = topic_name(k, Topic.PREDICTIONS)
        self.models_t = topic_name(k, Topic.MODELS)
        self.registry = ModelRegistry.for_settings(self.settings)
        self.models: dict[str, Any] = {}
        self.server: ServiceProcess | None = None
        self.worker: ServiceProcess | None = None
        self.stream: Stream | None = None
        self.out: Collector | None = None
        self.served: Served | None = None
        self.producer: EventProducer | None = None
        self.snapshots: list[Snapshot] = []

    def log(self, message: str) -> None:
        self.console.log(message)

    def route(self, change: ModelVersionEvent) -> None:
        """Sign ``change`` with the stack's key and put it on the models topic."""
        assert self.producer is not None
        self.producer.send(
            self.models_t, signed(self.settings, new_event(change, source="bench-embed"))
        )

    def start_worker(self) -> ServiceProcess:
        """``weir worker --role scoring``: the scoring role alone, in one process."""
        weir = str(Path(sys.executable).parent / "weir")
        worker_id = f"embed-{self.uid}"
        proc = ServiceProcess(
            f"worker-{worker_id}", self.settings.stack.run_dir, marker=f"--worker-id {worker_id}"
        )
        proc.start(
            [weir, "worker", "--role", "scoring", "--worker-id", worker_id],
            env=settings_env(self.settings),
        )
        return proc

    def wait(self, condition: Any, *, what: str) -> None:
        """Read predictions until ``condition()``; fail fast if the stream or worker died."""
        assert self.out is not None and self.served is not None
        served, stream, worker = self.served, self.stream, self.worker

        def check() -> bool:
            served()
            if stream is not None and stream.error is not None:
                raise RuntimeError(f"the record stream failed: {stream.error!r}")
            if worker is not None and worker.pid() is None:
                raise RuntimeError(f"the weir worker exited; see {worker.log_file}")
            return bool(condition())

        self.out.until(check, deadline_s=self.args.deadline, what=what)

    def caught_up(self) -> bool:
        """The newest prediction read is for a record produced less than a second ago."""
        assert self.stream is not None and self.served is not None
        seq = self.served.max_seq
        return seq >= 0 and self.stream.produced_at[seq] > time.monotonic() - 1.0

    def settle(self, seconds: float, what: str) -> None:
        """Keep reading for ``seconds``, then until the worker has caught up with the stream."""
        until = time.monotonic() + seconds
        self.wait(lambda: time.monotonic() >= until and self.caught_up(), what=what)

    def setup(self) -> None:
        t = time.monotonic()
        for kind, rows in (("light", self.args.light_rows), ("heavy", self.args.heavy_rows)):
            self.models[kind] = trained(kind, rows)
        self.log(
            f"trained the light regression ({self.args.light_rows} rows) and the heavy "
            f"forest ({self.args.heavy_rows} rows) in {time.monotonic() - t:.1f}s"
        )
        ensure_topics(self.settings)
        publish_model(self.settings, self.model, "1")
        port = free_port()
        self.server = serve(self.settings, self.model, "1", port)
        self.log(f"topics {self.prefix}.* created; {self.model} v1 served at port {port}")
        self.producer = EventProducer(self.settings)
        self.route(
            ModelVersionEvent(
                action="activate",
                model=self.model,
                version="1",
                url=f"http://127.0.0.1:{port}",
                protocol="v1",
                features=FEATURES,
            )
        )
        self.out = Collector(self.settings, [self.predictions_t], group=f"{self.prefix}-collect")
        self.served = Served(self.out, self.model)
        self.stream = Stream(
            self.settings, self.records_t, self.args.rate, tag="e", source="bench-embed"
        )
        self.stream.start()
        self.worker = self.start_worker()
        served = self.served
        self.wait(lambda: served.count > 0, what="the first v1 prediction")
        self.settle(self.args.warmup, "warm-up (caught up with the stream)")
        self.log(
            f"scoring role serving v1 at {self.args.rate:.0f} records/s; "
            f"setup {time.monotonic() - t:.1f}s"
        )

    def publish(self, kind: str, number: int, *, warmup: bool = False) -> Snapshot:
        """Store a snapshot and route to it, as the learner role does; time it to serving."""
        assert self.served is not None
        version = f"{LEARNER}.{number}"
        url = embedded_url(self.model, version)
        snap = Snapshot(kind, version, warmup)
        start = datetime.now(UTC)
        t0 = time.perf_counter()
        blob = lean_pickle(self.models[kind])  # as the learner role stores a snapshot
        t1 = time.perf_counter()
        card = ModelCard(
            name=self.model,
            version=version,
            framework="river",
            features=SNAPSHOT_FEATURES,
            created_at=start,
            learner={"family": f"bench-{kind}", "online": True, "format": "pickle"},
        )
        self.registry.publish_bytes(card, blob)
        t2 = time.perf_counter()
        self.route(
            ModelVersionEvent(
                # as the learner role routes a snapshot while it serves: the warm-up's takes
                # over (an activate), every later one moves the route (a refresh)
                action="activate" if warmup else "refresh",
                model=self.model,
                version=LEARNER,
                url=url,
                protocol="embedded",
                features=SNAPSHOT_FEATURES,
            )
        )
        t3 = time.perf_counter()
        served = self.served
        self.wait(lambda: url in served.first, what=f"the first prediction of {version}")
        # predictions come on several partitions: read on before taking the earliest
        self.settle(self.args.gap, "the gap between snapshots (caught up with the stream)")
        total = (served.first[url] - start).total_seconds()
        snap.size = len(blob)
        snap.pickle_s, snap.write_s, snap.route_s = t1 - t0, t2 - t1, t3 - t2
        snap.total_s = total
        snap.served_s = total - (t3 - t0)
        return snap

    def run(self) -> None:
        order = [("light", True)] + [(k, False) for _ in range(self.args.reps) for k in KINDS]
        for number, (kind, warmup) in enumerate(order, 1):
            snap = self.publish(kind, number, warmup=warmup)
            self.snapshots.append(snap)
            self.log(
                f"snapshot {number}/{len(order)} {kind:5} {snap.version}"
                f"{' (warm-up)' if warmup else ''}: {snap.size:,} B, publish → first "
                f"prediction {snap.total_s:.3f}s"
            )

    def cleanup(self, ok: bool) -> None:
        if self.stream is not None:
            self.stream.halt.set()
            self.stream.join(timeout=30)
        if self.out is not None:
            self.out.close()
        for proc in (self.worker, self.server):
            pid = proc.stop() if proc is not None else None
            if proc is not None and pid is not None:
                # stop() reaps an exited child without blocking; a process whose threads
                # are still ending is not reapable yet: wait for it, so no zombie stays
                with contextlib.suppress(ChildProcessError):
                    os.waitpid(pid, 0)
                self.log(f"stopped {proc.name} (pid {pid})")
        if self.args.keep_topics:
            self.log(f"kept topics {self.prefix}.* and model {self.model}")
        else:
            with contextlib.suppress(Exception):  # best effort, as delete_groups is
                delete_groups(self.settings, groups_with_prefix(self.settings, self.prefix))
            delete_topics(self.settings, self.prefix)
            delete_models(self.settings, self.model)
            self.log(f"deleted topics {self.prefix}.*, their groups and model {self.model}")
        if ok and not self.args.keep_logs:
            shutil.rmtree(self.state_dir, ignore_errors=True)
        else:
            self.log(f"logs kept in {self.state_dir}")


def report(console: Console, bench: Bench) -> None:
    args, rate = bench.args, bench.args.rate
    table = Table(
        "#",
        "kind",
        "version",
        "bytes",
        "pickle s",
        "registry write s",
        "route sign+send s",
        "route → first prediction s",
        "publish → first prediction s",
        f"records at {rate:.0f}/s",
        title=f"embedded snapshot published → first prediction, under {rate:.0f} records/s "
        "(scoring role, default settings)",
    )
    for i, s in enumerate(bench.snapshots, 1):
        table.add_row(
            str(i),
            s.kind + (" (warm-up)" if s.warmup else ""),
            s.version,
            f"{s.size:,}",
            f"{s.pickle_s:.3f}",
            f"{s.write_s:.3f}",
            f"{s.route_s:.3f}",
            f"{s.served_s:.3f}",
            f"{s.total_s:.3f}",
            f"{s.total_s * rate:.0f}",
        )
    console.print(table)
    summary = Table(
        "kind",
        "n",
        "bytes (median)",
        "median s",
        "min s",
        "max s",
        f"records at {rate:.0f}/s (median)",
        f"records at {rate:.0f}/s (max)",
        "median pickle / write / route → first s",
        "adaptation.py now",
        title="publish → first prediction, per kind (warm-up left out)",
    )
    simulated = {"light": "--embed-light-s 0.25", "heavy": "--embed-s 0.25"}
    for kind in KINDS:
        rows = [s for s in bench.snapshots if s.kind == kind and not s.warmup]
        if not rows:
            continue
        totals = sorted(s.total_s for s in rows)
        med = statistics.median(totals)
        parts = " / ".join(
            f"{statistics.median(getattr(s, f) for s in rows):.3f}"
            for f in ("pickle_s", "write_s", "served_s")
        )
        summary.add_row(
            kind,
            str(len(rows)),
            f"{statistics.median(s.size for s in rows):,.0f}",
            f"{med:.3f}",
            f"{totals[0]:.3f}",
            f"{totals[-1]:.3f}",
            f"{med * rate:.0f}",
            f"{totals[-1] * rate:.0f}",
            parts,
            simulated[kind],
        )
    console.print(summary)
    warm = [s for s in bench.snapshots if s.warmup]
    light = [s.total_s for s in bench.snapshots if s.kind == "light" and not s.warmup]
    if warm and light:
        console.print(
            f"warm-up ({warm[0].version}, light, left out): {warm[0].total_s:.3f}s — the "
            f"worker's first embedded load imports river; "
            f"{warm[0].total_s - statistics.median(light):.3f}s over the light median, paid "
            "once per scoring process"
        )
    console.print(
        f"{args.reps} of each kind, alternating; light = scaled logistic regression after "
        f"{args.light_rows} rows, heavy = ARFClassifier(seed=0) after {args.heavy_rows} rows "
        "of the demo stream; times from before the pickle to the first prediction's event time"
    )
    console.print(machine_line(bench.settings))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reps", type=int, default=6, help="snapshots of each kind")
    parser.add_argument("--rate", type=float, default=300.0, help="records/s produced")
    parser.add_argument(
        "--heavy-rows",
        type=int,
        default=6000,
        help="rows the heavy forest learnt (6,000, as the adaptation benchmark's forests)",
    )
    parser.add_argument(
        "--light-rows", type=int, default=300, help="rows the light regression learnt"
    )
    parser.add_argument(
        "--gap",
        type=float,
        default=2.0,
        help="s of scoring after a snapshot serves (and caught up) before the next",
    )
    parser.add_argument("--warmup", type=float, default=5.0, help="s of v1 scoring first")
    parser.add_argument("--deadline", type=float, default=90.0, help="bound per wait, s")
    parser.add_argument("--keep-topics", action="store_true", help="keep topics and models")
    parser.add_argument("--keep-logs", action="store_true", help="keep process logs")
    args = parser.parse_args()
    console = Console(width=None if sys.stdout.isatty() else 160)
    console.rule("weir bench: embedded snapshot publish → first prediction")
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

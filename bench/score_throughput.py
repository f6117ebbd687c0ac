"""B1 (drain part): records/s through score → predict, weir worker vs a naive loop, same run.

Setup (not timed): a fresh topic prefix, one scikit-learn LogisticRegression
published to the MinIO registry, one ``kserve.ModelServer`` process serving it
(V1 REST), an ``activate`` event on the prefix's models topic and N records
pre-filled in the records topic.

Systems, each reading the same N records with a fresh consumer group and
writing one prediction per record to the predictions topic:

* **weir** — ``weir worker`` as a user starts it: every role (scoring, monitor,
  feedback, performance; retraining off) as supervised child processes, at the
  scoring role's default batch size and wait (``--batch-size``, ``--batch-wait``);
* **naive** — a confluent-kafka loop written here, run as its own process: one
  synchronous httpx POST per record (V1 protocol), produce the prediction,
  commit (``--baseline-commit``: ``async`` per record, the usual naive loop, or
  ``sync``: flush and commit synchronously per record, at-least-once).

Wall time runs from the process start to the moment the last of the N
predictions is read from the predictions topic (a ``Collector`` in this
process); "steady" is the rate between the 10 % and 100 % marks, which leaves
process start-up and group join out. CPU seconds come from ``/proc/<pid>/stat``,
summed over the process and every descendant (``weir worker`` runs its roles as
children).

    .venv/bin/python bench/score_throughput.py [--records 20000] [--reps 1]
"""

from __future__ import annotations

import argparse
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from _shared import (
    FEATURES,
    bench_settings,
    cpu_seconds,
    delete_groups,
    delete_models,
    delete_topics,
    end_offsets,
    machine_line,
    prefill,
    publish_model,
    tree_cpu_seconds,
)
from confluent_kafka import ConsumerGroupTopicPartitions, TopicPartition
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from connectors.kafka import EventProducer, admin, ensure_topics
from connectors.process import free_port
from connectors.signing import signed
from schemas import ModelVersionEvent, new_event
from schemas.settings import ScoringSettings, Settings, settings_env
from schemas.topics import Topic, topic_name
from streams.dev.localrun import Collector, start_worker
from streams.servers.deployers import serve

PREDICTION = "io.weir.prediction.v1"


# ----------------------------------------------------------------- helpers


def self_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def set_group_offsets(settings: Settings, group: str, offsets: dict[str, dict[int, int]]) -> None:
    """Commit ``offsets`` (topic → partition → offset) for an inactive or new group."""
    tps = [TopicPartition(t, p, o) for t, parts in offsets.items() for p, o in parts.items()]
    client = admin(settings)  # keep the handle alive until the futures resolve
    futures = client.alter_consumer_group_offsets([ConsumerGroupTopicPartitions(group, tps)])
    for fut in futures.values():
        fut.result(timeout=30)


class Tally:
    """Incremental view of a Collector: distinct record ids predicted, and when."""

    def __init__(self, out: Collector, model: str, n: int, on_progress: Any = None) -> None:
        self.out, self.model, self.n = out, model, n
        self.index = 0
        self.ids: set[str] = set()
        self.predictions = 0
        self.first_at: float | None = None
        self.mark10_at: float | None = None
        self.done_at: float | None = None
        self.on_progress = on_progress
        self.shown = 0
        self.step = max(1, n // 100)  # redraw the progress bar every 1 %

    def __call__(self) -> bool:
        messages, arrived = self.out.messages, self.out.arrived
        while self.index < len(messages):
            event, now = messages[self.index].event, arrived[self.index]  # when it was read
            self.index += 1
            if event is None or event.type != PREDICTION or event.data.model != self.model:
                continue
            self.predictions += 1
            self.ids.add(event.data.record_id)
            if self.first_at is None:
                self.first_at = now
            if self.mark10_at is None and len(self.ids) >= self.n // 10:
                self.mark10_at = now
            if self.done_at is None and len(self.ids) >= self.n:
                self.done_at = now
        if self.on_progress is not None and len(self.ids) >= self.shown + self.step:
            self.shown = len(self.ids)
            self.on_progress(self.shown)
        return len(self.ids) >= self.n


@dataclass
class RunResult:
    system: str
    rep: int
    records: int
    wall_s: float
    steady_rate: float
    cpu_s: float | None
    server_cpu_s: float | None
    reader_cpu_s: float
    duplicates: int

    @property
    def rate(self) -> float:
        return self.records / self.wall_s

    @property
    def cpu_per_10k(self) -> float | None:
        if self.cpu_s is None or self.server_cpu_s is None:
            return None
        return (self.cpu_s + self.server_cpu_s) * 10_000 / self.records


# ------------------------------------------------------------- the naive loop


def naive_loop(args: argparse.Namespace) -> None:
    """The baseline process: consume, one POST per record, produce, commit."""
    import httpx
    from confluent_kafka import Consumer, KafkaError, KafkaException, Producer

    from schemas import Lineage, Origin, Prediction, from_kafka, to_kafka

    settings = Settings()
    k = settings.kafka
    records_t, predictions_t = topic_name(k, Topic.RECORDS), topic_name(k, Topic.PREDICTIONS)
    model, version, base_url = args.child_model, args.child_version, args.child_url
    sync = args.baseline_commit == "sync"
    consumer = Consumer(
        {
            "bootstrap.servers": k.bootstrap_servers,
            "group.id": args.child_group,
            "auto.offset.reset": "earliest",
            "enable.auto.commit": False,
            "log_level": 3,
        }
    )
    producer = Producer(
        {
            "bootstrap.servers": k.bootstrap_servers,
            "acks": "all",
            "enable.idempotence": True,
            "linger.ms": 0 if sync else 5,
            "log_level": 3,
        }
    )
    consumer.subscribe([records_t])
    target = f"{base_url}/v1/models/{model}:predict"
    lineage = Lineage(modelname=model, modelversion=version)
    done = 0
    with httpx.Client(timeout=10.0) as http:
        while done < args.records:
            msg = consumer.poll(1.0)
            if msg is None:
                continue
            err = msg.error()
            if err is not None:
                if err.code() == KafkaError._PARTITION_EOF:
                    continue
                raise RuntimeError(str(err))
            raw_headers = msg.headers() or []
            event = from_kafka(
                msg.value(),
                msg.key(),
                list(raw_headers),
                max_bytes=settings.events.max_bytes,
                origin=Origin(records_t, msg.partition() or 0, msg.offset() or 0),
            )
            row = [event.data.features[f] for f in FEATURES]
            started = time.perf_counter()
            resp = http.post(target, json={"instances": [row]})
            resp.raise_for_status()
            body = resp.json()
            probabilities = body.get("probabilities")
            prediction = Prediction(
                record_id=event.data.id,
                model=model,
                version=version,
                url=base_url,
                output=body["predictions"][0],
                scores=probabilities[0] if probabilities else None,
                latency_ms=(time.perf_counter() - started) * 1000,
            )
            rec = to_kafka(
                new_event(prediction, source="naive-baseline", lineage=lineage),
                mode=settings.events.mode,
            )
            producer.produce(predictions_t, value=rec.value, key=rec.key, headers=list(rec.headers))
            if sync:
                producer.flush(30)
                consumer.commit(message=msg, asynchronous=False)
            else:
                producer.poll(0)
                consumer.commit(message=msg, asynchronous=True)
            done += 1
    producer.flush(30)
    try:
        consumer.commit(asynchronous=False)
    except KafkaException as exc:  # _NO_OFFSET: every offset was committed already
        if exc.args[0].code() != KafkaError._NO_OFFSET:
            raise
    print(f"naive loop: {done} records", flush=True)
    sys.stdin.read()  # stay alive until the parent has read our CPU time
    consumer.close()


# ---------------------------------------------------------------- the runs


class Bench:
    def __init__(self, args: argparse.Namespace, console: Console) -> None:
        self.args = args
        self.console = console
        uid = uuid.uuid4().hex[:8]
        self.prefix = f"bench-{uid}"
        self.model = f"bench{uid}"
        self.state_dir = Path(tempfile.mkdtemp(prefix="weir-bench-tput-"))
        self.settings = bench_settings(
            prefix=self.prefix,
            model=self.model,
            state_dir=self.state_dir,
            batch_size=args.batch_size,
            batch_wait=args.batch_wait,
            partitions=args.partitions,
        )
        k = self.settings.kafka
        self.records_t = topic_name(k, Topic.RECORDS)
        self.predictions_t = topic_name(k, Topic.PREDICTIONS)
        self.labels_t = topic_name(k, Topic.LABELS)
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.groups: list[str] = []
        self.server: Any = None

    def log(self, message: str) -> None:
        self.console.log(message)

    def setup(self) -> None:
        a = self.args
        t = time.monotonic()
        ensure_topics(self.settings)
        publish_model(self.settings, self.model)
        self.log(f"topics {self.prefix}.* created, model {self.model} v1 published")
        self.server = serve(self.settings, self.model, "1", self.port)
        self.log(f"model server ready at {self.url} (pid {self.server.pid()})")
        change = ModelVersionEvent(
            action="activate",
            model=self.model,
            version="1",
            url=self.url,
            protocol="v1",
            features=FEATURES,
        )
        producer = EventProducer(self.settings)
        producer.send(
            topic_name(self.settings.kafka, Topic.MODELS),
            signed(self.settings, new_event(change, source="b")),
        )
        prefill(self.settings, self.records_t, a.records)
        took = time.monotonic() - t
        self.log(f"{a.records} records pre-filled in {self.records_t}; setup {took:.1f}s")

    def _collector(self, tag: str) -> Collector:
        group = f"{self.prefix}-collect-{tag}"
        self.groups.append(group)
        # start at the current end: earlier runs' predictions are not this run's
        set_group_offsets(self.settings, group, {self.predictions_t: self.hw(self.predictions_t)})
        out = Collector(self.settings, [self.predictions_t], group=group)
        out.poll_for(2.0)  # join the group before the clock starts
        return out

    def hw(self, topic: str) -> dict[int, int]:
        return end_offsets(self.settings, topic)

    def _measure(
        self, system: str, rep: int, out: Collector, start: Any, pid_of: Any, log_hint: Any
    ) -> RunResult:
        n = self.args.records
        with Progress(
            TextColumn(f"[bold]{system}[/] rep {rep}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            console=self.console,
        ) as progress:
            task = progress.add_task(system, total=n)
            tally = Tally(out, self.model, n, lambda done: progress.update(task, completed=done))
            server_cpu0 = cpu_seconds(self.server.pid())
            reader_cpu0 = self_cpu()
            t0 = time.monotonic()
            start()

            def done() -> bool:
                if tally():
                    return True
                if pid_of() is None:  # the process died: fail now, not at the deadline
                    raise RuntimeError(f"the {system} process exited early; see {log_hint()}")
                return False

            out.until(done, deadline_s=self.args.deadline, what=f"{n} predictions from {system}")
            assert tally.done_at is not None and tally.mark10_at is not None
            cpu = tree_cpu_seconds(pid_of())
            server_cpu = cpu_seconds(self.server.pid())
            reader_cpu = self_cpu() - reader_cpu0
        wall = tally.done_at - t0
        steady = (n - n // 10) / max(tally.done_at - tally.mark10_at, 1e-9)
        return RunResult(
            system=system,
            rep=rep,
            records=n,
            wall_s=wall,
            steady_rate=steady,
            cpu_s=cpu,
            server_cpu_s=None
            if server_cpu is None or server_cpu0 is None
            else server_cpu - server_cpu0,
            reader_cpu_s=reader_cpu,
            duplicates=tally.predictions - len(tally.ids),
        )

    def run_weir(self, rep: int) -> RunResult:
        group = f"{self.prefix}-scoring-{self.model}"  # the Faust app id is the group
        self.groups.append(group)
        # a fresh start on the records every repetition; earlier predictions are skipped
        set_group_offsets(
            self.settings,
            group,
            {
                self.records_t: {p: 0 for p in self.hw(self.records_t)},
                self.predictions_t: self.hw(self.predictions_t),
                self.labels_t: self.hw(self.labels_t),
            },
        )
        out = self._collector(f"weir-{rep}")
        worker: Any = None

        def start() -> None:
            nonlocal worker
            worker = start_worker(self.settings, f"{self.prefix}-{rep}")

        try:
            return self._measure(
                "weir", rep, out, start, lambda: worker.pid(), lambda: worker.log_file
            )
        finally:
            out.close()
            if worker is not None:
                stopped = worker.stop()
                self.log(f"weir worker stopped (pid {stopped}); log {worker.log_file}")

    def run_naive(self, rep: int) -> RunResult:
        group = f"{self.prefix}-naive-{rep}"
        self.groups.append(group)
        out = self._collector(f"naive-{rep}")
        log_file = self.state_dir / f"naive-{rep}.log"
        proc: subprocess.Popen[bytes] | None = None

        def start() -> None:
            nonlocal proc
            argv = [
                sys.executable,
                str(Path(__file__).resolve()),
                "--records",
                str(self.args.records),
                "--baseline-commit",
                self.args.baseline_commit,
                "--child-group",
                group,
                "--child-url",
                self.url,
                "--child-model",
                self.model,
                "--child-version",
                "1",
            ]
            with log_file.open("wb") as sink:
                proc = subprocess.Popen(
                    argv,
                    stdin=subprocess.PIPE,
                    stdout=sink,
                    stderr=subprocess.STDOUT,
                    env=settings_env(self.settings),
                )

        try:
            return self._measure(
                "naive",
                rep,
                out,
                start,
                lambda: proc.pid if proc is not None and proc.poll() is None else None,
                lambda: log_file,
            )
        finally:
            out.close()
            if proc is not None:
                assert proc.stdin is not None
                proc.stdin.close()
                try:
                    proc.wait(timeout=15)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait(timeout=10)
                self.log(f"naive loop stopped (pid {proc.pid}, exit {proc.returncode})")
                if proc.returncode:
                    self.log(log_file.read_text(errors="replace")[-2000:])

    def cleanup(self, ok: bool) -> None:
        if self.server is not None:
            pid = self.server.stop()
            self.log(f"model server stopped (pid {pid})")
        if self.args.keep_topics:
            self.log(f"kept topics {self.prefix}.* and model {self.model}")
        else:
            delete_groups(self.settings, sorted(set(self.groups)))
            delete_topics(self.settings, self.prefix)
            delete_models(self.settings, self.model)
            self.log(f"deleted topics {self.prefix}.*, their groups and model {self.model}")
        if ok and not self.args.keep_logs:
            shutil.rmtree(self.state_dir, ignore_errors=True)
        else:
            self.log(f"logs kept in {self.state_dir}")


def report(console: Console, results: list[RunResult], args: argparse.Namespace) -> None:
    def num(v: float | None, fmt: str = ".1f") -> str:
        return "-" if v is None else format(v, fmt)

    table = Table(
        "system",
        "rep",
        "records",
        "wall s",
        "rec/s",
        "steady rec/s",
        "proc CPU s",
        "server CPU s",
        "CPU s / 10k",
        "reader CPU s",
        "dup",
        title=f"score → predict, {args.records} records, batch {args.batch_size} "
        f"/ {args.batch_wait * 1000:.0f} ms (weir), baseline commit {args.baseline_commit}",
    )
    for r in results:
        table.add_row(
            r.system,
            str(r.rep),
            str(r.records),
            num(r.wall_s, ".2f"),
            num(r.rate, ".0f"),
            num(r.steady_rate, ".0f"),
            num(r.cpu_s),
            num(r.server_cpu_s),
            num(r.cpu_per_10k),
            num(r.reader_cpu_s),
            str(r.duplicates),
        )
    console.print(table)
    summary = Table("metric", "weir (median)", "naive (median)", "weir / naive", title="summary")
    by: dict[str, list[RunResult]] = {"weir": [], "naive": []}
    for r in results:
        by[r.system].append(r)
    for label, get, fmt in (
        ("records/s, total", lambda r: r.rate, ".0f"),
        ("records/s, steady (10%→100%)", lambda r: r.steady_rate, ".0f"),
        ("wall s", lambda r: r.wall_s, ".1f"),
        ("CPU s / 10k records (process + model server)", lambda r: r.cpu_per_10k, ".1f"),
    ):
        w = [v for v in map(get, by["weir"]) if v is not None]
        n = [v for v in map(get, by["naive"]) if v is not None]
        if not w or not n:
            continue
        mw, mn = statistics.median(w), statistics.median(n)

        def cell(values: list[float], median: float, fmt: str) -> str:
            spread = f" ({min(values):{fmt}}-{max(values):{fmt}})" if len(values) > 1 else ""
            return f"{median:{fmt}}{spread}"

        summary.add_row(label, cell(w, mw, fmt), cell(n, mn, fmt), f"{mw / mn:.2f}x")
    console.print(summary)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=20_000, help="records per run")
    parser.add_argument("--reps", type=int, default=1, help="repetitions of each system")
    defaults = ScoringSettings()  # what a user gets
    parser.add_argument(
        "--batch-size", type=int, default=defaults.batch_size, help="weir micro-batch size"
    )
    parser.add_argument(
        "--batch-wait", type=float, default=defaults.batch_wait_s, help="weir batch wait, s"
    )
    parser.add_argument("--partitions", type=int, default=4, help="partitions of data topics")
    parser.add_argument(
        "--baseline-commit",
        choices=("async", "sync"),
        default="async",
        help="naive loop: async commit per record, or flush + sync commit per record",
    )
    parser.add_argument("--deadline", type=float, default=240.0, help="bound per run, s")
    parser.add_argument("--keep-topics", action="store_true", help="keep topics and model")
    parser.add_argument("--keep-logs", action="store_true", help="keep process logs")
    for hidden in ("--child-group", "--child-url", "--child-model", "--child-version"):
        parser.add_argument(hidden, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child_group:
        naive_loop(args)
        return
    console = Console(width=None if sys.stdout.isatty() else 132)
    console.rule("weir bench: score throughput")
    bench = Bench(args, console)
    results: list[RunResult] = []
    ok = False
    try:
        bench.setup()
        for rep in range(1, args.reps + 1):
            order = ("weir", "naive") if rep % 2 else ("naive", "weir")
            for system in order:
                run = bench.run_weir if system == "weir" else bench.run_naive
                result = run(rep)
                results.append(result)
                bench.log(
                    f"{system} rep {rep}: {result.records} in {result.wall_s:.2f}s "
                    f"= {result.rate:.0f} rec/s (steady {result.steady_rate:.0f})"
                )
        ok = True
    finally:
        bench.cleanup(ok)
    report(console, results, args)
    console.print(machine_line(bench.settings))


if __name__ == "__main__":
    main()

"""The closed loop, run end to end on the local stack (the demo and the end-to-end test).

Version 1 is trained by the Kubeflow pipeline on archived history and served
by a kserve.ModelServer; a worker scores a seeded stream whose concept changes
abruptly; labels follow their records; the worker's performance monitor
alerts, its retraining agent runs the pipeline on the newest archived rows,
deploys version 2 and activates it on the control topic; predictions switch to
version 2 and accuracy recovers. Nothing here steers the loop after start: it
only produces the stream and watches the topics.
"""

from __future__ import annotations

import bisect
import itertools
import time
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
import numpy as np
from confluent_kafka.admin import AdminClient
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from connectors.kafka import EventProducer, admin, delete_topics, ensure_topics
from connectors.process import free_port, wait_until
from connectors.signing import signed
from schemas import InputRecord, Label, ServiceError, StackError, new_event
from schemas.events import utc_now
from schemas.settings import Settings
from schemas.topics import Topic, topic_name
from streams.bootstrap import as_history, bootstrap_model
from streams.context import role_group
from streams.dev.demo_report import Timeline, accuracy_between, plot, version_name
from streams.dev.localrun import Collector, start_worker, stop_model_servers
from streams.lag import group_lag
from streams.servers.deployers import LocalDeployer
from streams.synthetic import drifting_stream

FINISHED = frozenset({"succeeded", "not-promoted", "failed"})  # a run's verdicts


@dataclass(frozen=True)
class LoopConfig:
    min_records: int = 6000  # stream at least this many records ...
    max_records: int = 20000  # ... and at most this many,
    after_swap: int = 1500  # stopping this many records after the first new-version prediction
    drift_at: int = 3000
    rate: float = 300.0  # records per second produced
    seed: int = 42
    history: int = 2000  # archived rows of the old concept that train version 1
    label_lag: int = 25  # a record's label is produced this many records later
    deadline_s: float = 300.0  # for the last predictions after the stream ends
    insight_s: float = 300.0  # then for the insight roles to catch up, when no run was asked for
    verdict_s: float = 300.0  # then for a retraining run still going to end (the report's verdict)
    ready_timeout_s: float = 180.0  # for every role to answer /readyz before streaming
    out_dir: Path = Path("out")


@dataclass
class LoopReport:
    model: str
    v1: str
    timeline: Timeline
    accuracy: dict[str, float | None] = field(default_factory=dict)
    predictions: int = 0
    records: int = 0
    dead_letters: int = 0
    runs: list[tuple[str, str, str]] = field(default_factory=list)  # (run id, status, reason)
    promoted: list[str] = field(default_factory=list)  # versions the runs put live, in order
    alerts: list[tuple[str, str]] = field(default_factory=list)  # (type, alert id)
    plot: Path | None = None
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return self.timeline.new_version is not None and self.predictions == self.records


def loop_settings(settings: Settings, stamp: str) -> Settings:
    """The demo's settings: its own topics and model, a responsive worker, and the embedded
    online learner on (unless WEIR_LEARNER__ENABLED says otherwise)."""
    learner = settings.learner
    enabled = learner.enabled if "enabled" in learner.model_fields_set else True
    return settings.model_copy(
        update={
            "kafka": settings.kafka.model_copy(update={"topic_prefix": f"demo-{stamp}"}),
            "scoring": settings.scoring.model_copy(
                update={"model": f"sea-{stamp}", "worker_id": f"demo-{stamp}"}
            ),
            "retraining": settings.retraining.model_copy(
                update={"window_rows": 1500, "min_gain": 0.02}
            ),
            "live": settings.live.model_copy(update={"port": free_port()}),
            "learner": learner.model_copy(update={"enabled": enabled}),
        }
    )


def run_loop(
    base: Settings, cfg: LoopConfig, *, console: Console, keep_topics: bool = False
) -> LoopReport:
    """Run the closed loop on topics of its own (``demo-<stamp>.*``), deleted at the end
    unless ``keep_topics``: a broker that keeps every run's partitions spends its heap
    on them. The model's versions stay in the registry (the report names them)."""
    started = time.monotonic()
    stamp = utc_now().strftime("%m%d%H%M%S")
    s = loop_settings(base, stamp)
    model = s.scoring.model
    ensure_topics(s)
    rows = list(
        drifting_stream(cfg.history + cfg.max_records, cfg.history + cfg.drift_at, seed=cfg.seed)
    )
    history, live = rows[: cfg.history], rows[cfg.history :]
    history_rows = as_history(history, id_prefix="h")
    producer = EventProducer(s)
    worker = None
    collector: Collector | None = None
    report = LoopReport(model=model, v1="?", timeline=Timeline(drift_at=cfg.drift_at))
    try:
        # version 1: the pipeline trains it on archived history of the old concept
        first, _ = bootstrap_model(
            s, model, history_rows, LocalDeployer(s), run_id=f"bootstrap-{stamp}", console=console
        )
        v1 = report.v1 = first.version
        console.print(
            f"version {v1} of {model} registered at {first.storage_uri} ({first.metrics}), "
            f"served at {first.url}"
        )
        EventProducer(s.as_control()).send(
            topic_name(s.kafka, Topic.MODELS), signed(s, new_event(first, source="demo"))
        )
        worker = start_worker(s, s.scoring.worker_id)
        console.print(
            f"worker started; live view at [bold]http://127.0.0.1:{s.live.port}/[/] "
            f"(metrics at /metrics)"
        )
        with console.status("waiting for every role to be ready (/readyz)…"):
            waited = wait_ready(s.live.port, cfg.ready_timeout_s)
        console.print(f"every role ready after {waited:.1f}s; streaming")
        collector = Collector(
            s,
            [
                topic_name(s.kafka, t)
                for t in (
                    Topic.PREDICTIONS,
                    Topic.ALERTS,
                    Topic.PIPELINE_RUNS,
                    Topic.DEAD_LETTER,
                    Topic.MODELS,  # the learner's take-over
                )
            ],
            group=f"demo-{stamp}",
        )
        produced_at = _stream(s, cfg, live, v1, stamp, producer, collector, console)
        live = live[: len(produced_at)]
        report.records = len(live)
        predicted = lambda: len(_predictions(collector, model))  # noqa: E731
        with console.status("waiting for the last predictions…"):
            collector.until(
                lambda: predicted() >= len(live),
                deadline_s=cfg.deadline_s,
                what="every record to be scored",
            )
        if s.retraining.enabled:
            _await_insight(s, collector, cfg, console)
            _await_verdict(collector, cfg, console)
        _fill_report(report, collector, live, cfg)
    finally:
        if collector is not None:
            collector.close()
        if worker is not None:
            worker.stop()
        stop_model_servers(s)
        if not keep_topics:
            _delete_run_topics(s, console)
    report.seconds = time.monotonic() - started
    return report


def _delete_run_topics(s: Settings, console: Console) -> None:
    """The run's topics go; when the broker cannot be asked, a warning says so instead of
    an error that would hide the run's own (a broker that went away is often why)."""
    prefix = f"{s.kafka.topic_prefix}."
    try:
        gone = delete_topics(s, prefix)
    except ServiceError as err:
        console.print(f"[yellow]the run's topics ({prefix}*) were not deleted: {err}[/]")
        return
    console.print(f"deleted the run's {len(gone)} topics ({prefix}*)")


def _served_by(event: Any, model: str) -> bool:
    """Whether a prediction event was served by ``model`` (a shadow's are mirrored, never
    served)."""
    return bool(event.data.model == model and not event.data.shadow)


def _predictions(collector: Collector, model: str) -> list[Any]:
    """The served predictions of ``model``."""
    return [e for e in collector.events("io.weir.prediction.v1") if _served_by(e, model)]


class _Served:
    """The served predictions of one model as the stream goes: how many, which version
    served last, and the versions that served: each prediction looked at once (the
    stream asks every 100 records; scanning every prediction each time was quadratic)."""

    def __init__(self, collector: Collector, model: str) -> None:
        self._collector, self._model = collector, model
        self._seen = 0  # predictions of any model looked at so far
        self.count = 0
        self.last = "-"
        self.versions: set[str] = set()

    def update(self) -> set[str]:
        """Take the predictions read since the last call; returns the versions that served
        for the first time among them."""
        new = self._collector.events_since("io.weir.prediction.v1", self._seen)
        self._seen += len(new)
        found = set()
        for e in new:
            if _served_by(e, self._model):
                self.count += 1
                self.last = e.data.version
                if e.data.version not in self.versions:
                    found.add(e.data.version)
                    self.versions.add(e.data.version)
        return found


def _stream(
    s: Settings,
    cfg: LoopConfig,
    live: list[Any],
    v1: str,
    stamp: str,
    producer: EventProducer,
    collector: Collector,
    console: Console,
) -> list[datetime]:
    """Produce records (and their labels, ``label_lag`` later) at ``cfg.rate``; show progress.

    Streams at least ``min_records``; then goes on until ``after_swap`` records
    have followed the first prediction of the latest new version, a retraining run has
    been requested (when runs are on) and none still waits for its rows (or
    ``max_records``): the online learner may serve long before the pipeline's run ends,
    and the run's verdict belongs in the report. On a machine short of CPU the insight
    roles lag (scoring comes first), and the alert that requests the run may come well
    after the learner took over; a run requested when the stream has ended would wait
    for rows that never come.
    """
    records_t, labels_t = topic_name(s.kafka, Topic.RECORDS), topic_name(s.kafka, Topic.LABELS)
    produced_at: list[datetime] = []
    columns = (
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[info]}"),
        TimeElapsedColumn(),
    )
    start = time.monotonic()
    swapped_at: int | None = None  # when the latest new version began to serve
    served = _Served(collector, s.scoring.model)
    served.versions.add(v1)
    with Progress(*columns, console=console) as progress:
        task = progress.add_task("streaming", total=cfg.min_records, info="")
        for i, row in enumerate(live):
            if _enough(cfg, i, swapped_at, collector, runs=s.retraining.enabled):
                break
            producer.produce(
                records_t,
                new_event(InputRecord(id=f"{stamp}-{i}", features=row.features), source="demo"),
            )
            produced_at.append(utc_now())
            if i >= cfg.label_lag:
                j = i - cfg.label_lag
                producer.produce(
                    labels_t,
                    new_event(Label(record_id=f"{stamp}-{j}", label=live[j].label), source="demo"),
                )
            if i % 100 == 99:
                producer.flush()
                collector.poll_for(0.01)
                if served.update():  # a version that had not served yet: the latest swap
                    swapped_at = i
                total = max(cfg.min_records, swapped_at + cfg.after_swap if swapped_at else i + 500)
                progress.update(
                    task,
                    completed=i + 1,
                    total=min(total, len(live)),
                    info=_status_line(collector, served, cfg, i),
                )
                ahead = (i + 1) / cfg.rate - (time.monotonic() - start)
                if ahead > 0:
                    time.sleep(ahead)  # pacing the load generator, not waiting on an outcome
        n = len(produced_at)
        for j in range(max(0, n - cfg.label_lag), n):
            producer.produce(
                labels_t,
                new_event(Label(record_id=f"{stamp}-{j}", label=live[j].label), source="demo"),
            )
        producer.flush()
        served.update()
        progress.update(task, completed=n, total=n, info=_status_line(collector, served, cfg, n))
    return produced_at


READY_POLL_S = 0.5


def wait_ready(port: int, timeout_s: float) -> float:
    """Wait until the worker's merged /readyz answers 200 (every role caught up, its state
    restored: the learner warm); seconds waited. The stream starts after, so the roles
    that start slowest (the learner imports river and learns the archive) see it from the
    first record."""
    why = ["no answer"]

    def ready() -> bool:
        try:
            answer = httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=2.0)
        except httpx.HTTPError as err:
            why[0] = type(err).__name__
            return False
        why[0] = answer.text.strip()
        return answer.status_code == 200

    try:
        return wait_until(ready, timeout_s=timeout_s, what="for /readyz", interval_s=READY_POLL_S)
    except StackError as err:
        raise TimeoutError(f"the worker was not ready after {timeout_s:.0f}s: {why[0]}") from err


# what the feedback and performance roles read, and the retrainer that answers their alerts
INSIGHT_READS = (
    ("feedback", (Topic.RECORDS, Topic.PREDICTIONS, Topic.LABELS)),
    ("performance", (Topic.OUTCOMES,)),
    ("retrainer", (Topic.ALERTS,)),
)
SENT_S = 15.0  # for what those roles sent last to be read, once they have read everything


def insight_behind(s: Settings, client: AdminClient) -> int:
    """Records the feedback, performance and retraining roles have still to read (their
    consumer groups' lag; a group that has committed nothing counts from the start)."""
    return sum(
        sum(
            group_lag(
                client,
                role_group(s, role),
                topic_name(s.kafka, topic),
                address=s.kafka.bootstrap_servers,
            ).values()
        )
        for role, topics in INSIGHT_READS
        for topic in topics
    )


def _await_insight(s: Settings, collector: Collector, cfg: LoopConfig, console: Console) -> None:
    """Once every record is scored, a run not asked for yet may still be: on a busy machine
    the insight roles run far behind scoring (it comes first), and the alert that starts
    the run can come minutes after the last prediction. Wait until a run is asked for, or
    until those roles have read everything and what they sent last had time to arrive
    (``insight_s`` at most): a stream whose drift raised no alert is reported as such, not
    cut short."""

    def asked() -> bool:
        return bool(_runs(collector).requested)

    if asked():
        return
    client = admin(s)

    def settled() -> bool:
        try:
            return asked() or insight_behind(s, client) == 0
        except ServiceError:  # the broker did not answer this time: ask again
            return False

    with console.status("waiting for the insight roles to catch up (the alert, the run)…"):
        if not collector.wait(settled, deadline_s=cfg.insight_s):
            console.print(
                f"[yellow]the insight roles were still behind {cfg.insight_s:.0f}s after the "
                "stream was scored[/]"
            )
            return
        collector.wait(asked, deadline_s=SENT_S)


def _await_verdict(collector: Collector, cfg: LoopConfig, console: Console) -> None:
    """A run still going when the last record is scored is waited for (``verdict_s`` at
    most): on a loaded machine the stream can end before the run does, and the report is
    about its verdict. A run without one by then is said, and the report shows it going."""
    if not _run_going(collector):
        return
    with console.status("waiting for the retraining run's verdict…"):
        ended = collector.wait(lambda: not _run_going(collector), deadline_s=cfg.verdict_s)
    if not ended:
        console.print(
            f"[yellow]the retraining run had no verdict {cfg.verdict_s:.0f}s after the "
            "stream was scored[/]"
        )


def _enough(
    cfg: LoopConfig, i: int, swapped_at: int | None, collector: Collector, *, runs: bool
) -> bool:
    """Whether the stream has shown the loop (:func:`_stream`) by record ``i``; ``runs``:
    whether retraining runs are on (WEIR_RETRAINING__ENABLED), so one is waited for."""
    if i < cfg.min_records or swapped_at is None or i < swapped_at + cfg.after_swap:
        return False
    if not runs:
        return True
    state = _runs(collector)
    return bool(state.requested) and not state.gathering


@dataclass(frozen=True)
class _Runs:
    """The retraining runs' state, by run id, from their events."""

    requested: frozenset[str]  # every run asked for
    gathering: frozenset[str]  # asked for, not started: waiting for rows after the alert
    going: frozenset[str]  # asked for, no verdict yet


def _runs(collector: Collector) -> _Runs:
    statuses: dict[str, set[str]] = {}
    for e in collector.events("io.weir.pipeline.run.v1"):
        statuses.setdefault(e.data.run_id, set()).add(e.data.status)
    requested = frozenset(r for r, seen in statuses.items() if "requested" in seen)
    going = frozenset(r for r in requested if not statuses[r] & FINISHED)
    return _Runs(requested, frozenset(r for r in going if "started" not in statuses[r]), going)


def _run_going(collector: Collector) -> bool:
    """A retraining run was asked for and has no verdict yet."""
    return bool(_runs(collector).going)


def _status_line(collector: Collector, served: _Served, cfg: LoopConfig, i: int) -> str:
    alerts = collector.count("io.weir.alert.")
    # the newest run's status: an alert answered without a run ("not-started") is no run
    runs = [
        e for e in collector.events("io.weir.pipeline.run.v1") if e.data.status != "not-started"
    ]
    drift = "drifted" if i >= cfg.drift_at else "stable"
    return (
        f"{drift} | scored {served.count} | serving {version_name(served.last)} | "
        f"alerts {alerts} | run {runs[-1].data.status if runs else '-'}"
    )


class _Progress:
    """Maps a moment to how far scoring had got: the highest record index predicted by then."""

    def __init__(self, predictions: list[tuple[datetime, int]]) -> None:
        ordered = sorted(predictions)
        self._times = [t for t, _ in ordered]
        self._reach = list(itertools.accumulate((i for _, i in ordered), max))

    def at(self, t: datetime | None) -> int | None:
        if t is None or not self._times:
            return None
        pos = bisect.bisect_right(self._times, t)
        return self._reach[pos - 1] if pos else 0


def _fill_report(
    report: LoopReport,
    collector: Collector,
    live: list[Any],
    cfg: LoopConfig,
) -> None:
    model, tl = report.model, report.timeline
    preds = _predictions(collector, model)
    by_index: dict[int, Any] = {}
    for p in preds:
        by_index.setdefault(int(p.data.record_id.rsplit("-", 1)[1]), p.data)
    report.predictions = len(by_index)
    reach = _Progress([(p.time, int(p.data.record_id.rsplit("-", 1)[1])) for p in preds])
    report.dead_letters = len(collector.events("io.weir.deadletter.v1"))
    index = np.array(sorted(by_index))
    correct = np.array([by_index[i].output == live[i].label for i in index])
    versions = [by_index[i].version for i in index]
    alerts = [
        m.event
        for m in collector.messages
        if m.event is not None and m.event.type.startswith("io.weir.alert.")
    ]
    report.alerts = [(e.type.split(".")[-2], e.data.alert_id) for e in alerts]
    runs = collector.events("io.weir.pipeline.run.v1")
    report.runs = [(e.data.run_id, e.data.status, e.data.reason or "") for e in runs]
    report.promoted = [
        e.data.produced_version
        for e in runs
        if e.data.status == "succeeded" and e.data.produced_version is not None
    ]
    started = next((e for e in runs if e.data.status == "started"), None)
    done = next((e for e in runs if e.data.status in FINISHED), None)
    if started is not None:
        tl.run_id = started.data.run_id
        tl.run_started_at = reach.at(started.time)
        trigger = next((e for e in alerts if e.data.alert_id == started.data.alert_id), None)
        if trigger is not None:
            tl.alert = f"{trigger.type} {trigger.data.alert_id}"
            tl.alert_at = reach.at(trigger.time)
    if done is not None:
        tl.run_finished_at = reach.at(done.time)
    take = next(
        (
            e
            for e in collector.events("io.weir.model.version.v1")
            if e.data.model == model
            and e.data.action == "activate"
            and e.data.protocol == "embedded"
        ),
        None,
    )
    if take is not None:
        tl.take_over_at = reach.at(take.time)
        m = take.data.metrics or {}
        if "pairs" in m:
            since = " since its performance alert" if m.get("after_alert") else ""
            tl.take_over = (
                f"{version_name(take.data.version)} beat the served version on the same "
                f"{m['pairs']:.0f} records{since}: {m['learner_accuracy']:.1%} vs "
                f"{m['served_accuracy']:.1%} (McNemar p {m['mcnemar_p']:.2g})"
            )
    for i in index:
        tl.served_from.setdefault(by_index[i].version, int(i))
    new = sorted(i for i in by_index if by_index[i].version != report.v1)
    if new:
        tl.swap_at = new[0]
        tl.new_version = by_index[new[0]].version
    report.accuracy = {
        f"{version_name(report.v1)} before the drift": accuracy_between(correct, 0, cfg.drift_at),
        f"{version_name(report.v1)} after the drift": accuracy_between(
            correct, cfg.drift_at, tl.swap_at if tl.swap_at is not None else None
        ),
    }
    if tl.swap_at is not None:
        report.accuracy[f"{version_name(tl.new_version)} after the swap"] = accuracy_between(
            correct, tl.swap_at, None
        )
    for version in tl.served_from:
        served = np.array([v == version for v in versions])
        if version not in (report.v1, tl.new_version) and served.any():
            mean = float(correct[served].mean())
            report.accuracy[f"{version_name(version)} while it served"] = mean
    report.plot = plot(cfg.out_dir / "weir-demo.png", index, correct, versions, tl)


def _kind(version: str | None) -> str:
    """What serves under ``version``: the embedded online learner, or a pipeline version."""
    if version is None:
        return ""
    return " (embedded online learner)" if not version.isdigit() else " (Kubeflow pipeline)"


def print_report(report: LoopReport, console: Console) -> None:
    tl = report.timeline
    rows: list[tuple[str, int | None, str]] = [
        ("concept drift (known)", tl.drift_at, "SEA variant 0 → 3"),
        ("alert that started the run", tl.alert_at, tl.alert or "none"),
        ("retraining run started", tl.run_started_at, tl.run_id or "none"),
        (
            "run finished",
            tl.run_finished_at,
            "; ".join(
                f"{status}: {reason}"
                for run_id, status, reason in report.runs
                if run_id == tl.run_id and status not in ("requested", "started")
            )
            or "-",
        ),
        (
            "first record scored by the new version",
            tl.swap_at,
            (version_name(tl.new_version) + _kind(tl.new_version)) if tl.new_version else "no swap",
        ),
    ]
    if tl.take_over_at is not None:
        rows.append(
            (
                "the online learner took over",
                tl.take_over_at,
                tl.take_over or "its activate went out (scoring had reached this record)",
            )
        )
    for version, first in tl.served_from.items():
        if version not in (report.v1, tl.new_version):
            rows.append(
                (f"first record scored by {version_name(version)}", first, _kind(version).strip())
            )
    table = Table("moment", "record", "detail", title=f"the loop for model {report.model}")
    # in the order they happened; what did not happen last
    for moment, when, detail in sorted(rows, key=lambda r: (r[1] is None, r[1] or 0)):
        table.add_row(moment, "-" if when is None else str(when), detail)
    unstarted = Counter(reason for _id, status, reason in report.runs if status == "not-started")
    if unstarted:
        table.add_row(
            "alerts that started no run",
            "-",
            "; ".join(f"{n} alerts: {reason}" for reason, n in unstarted.items()),
        )
    console.print(table)
    acc = Table("accuracy", "value", title="accuracy against the labels")
    for name, value in report.accuracy.items():
        acc.add_row(name, "-" if value is None else f"{value:.3f}")
    console.print(acc)
    console.print(
        f"{report.predictions}/{report.records} records scored, "
        f"{report.dead_letters} dead letters, {len(report.alerts)} alerts, "
        f"{report.seconds:.0f}s; plot: {report.plot}"
    )

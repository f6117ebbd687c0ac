"""The worker's roles as separate processes, on real parts: what the split must guarantee.

* MinIO away for 20 s (paused with SIGSTOP, or stopped and started again
  through the Stack API) while records and labels flow: scoring never pauses,
  every record is scored, and the training-data archive catches up afterwards.
* Two scoring workers on one model: the performance role raises one alert for
  the one real concept drift, over both workers' predictions.
* ``weir worker`` (the supervisor) with all five roles: each role in turn is
  killed with SIGKILL mid-stream; the supervisor starts it again, nothing
  scored is lost, and the role's work resumes (from its checkpoint where it
  keeps one), and its live view answers: in the supervisor's merged
  ``/status.json`` and ready on its ``/readyz``.

Real Kafka and MinIO (the session's stack), real kserve.ModelServer processes
on loopback, every test on topics of its own. Waits are bounded and wait on
conditions; the one bound on wall-clock time is the largest gap between
predictions while MinIO is away (explained where it is asserted).
"""

from __future__ import annotations

import contextlib
import itertools
import os
import signal
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
from rich.console import Console

from connectors.archive import prefix as archive_prefix
from connectors.kafka import EventProducer
from connectors.minio_store import ObjectStore
from connectors.process import (
    ServiceProcess,
    autogroup_niceness,
    free_port,
    is_running,
    proc_state,
    thread_ids,
    wait_until,
)
from connectors.signing import signed
from schemas import InputRecord, Label, ModelVersionEvent, PerformanceAlert, new_event
from schemas.events import utc_now
from schemas.settings import ScoringSettings, Settings, StackSettings
from schemas.topics import Topic, topic_name
from schemas.training import TrainingRow
from streams.bootstrap import as_history, bootstrap_model
from streams.dev.localrun import Collector, start_worker, stop_model_servers
from streams.dev.stack import Stack
from streams.dev.stack import minio as minio_stack
from streams.servers.deployers import LocalDeployer
from streams.synthetic import drifting_stream
from tests.helpers import end_offsets, group_lag, http_get, own_topics, role_pids, start_roles
from tests.integration.flip_models import FEATURES, expected_output, publish_flip_models
from tests.samples import performance_alert

pytestmark = pytest.mark.integration

PREDICTION = "io.weir.prediction.v1"
OUTCOME = "io.weir.outcome.v1"
PERFORMANCE_ALERT = "io.weir.alert.performance.v1"
ROLES = ("scoring", "monitor", "feedback", "performance", "retrainer")
CHECKPOINTED = {"monitor": "detectors", "feedback": "join", "performance": "errors"}
CHECKPOINTED["retrainer"] = "policy"

# Generous bounds for a busy 2-core machine that other test runs share.
# A role's start is mostly imports: the retrainer (kfp) took 27 s to reach Faust's
# start on a loaded run; five roles starting at once share the two cores.
START_S = 180  # role processes importing Faust/river/kfp/kserve and joining their groups
DRAIN_S = 120  # the last predictions / outcomes / archive rows after the stream stops
RESTART_S = 120  # supervisor backoff (1 s) + one role's start + its group's rebalance


# ---------------------------------------------------------------------------- helpers


def role_settings(settings: Settings, tmp: Path, model: str, *, live_port: int = 0) -> Settings:
    """Settings of a test's workers: its model, short checkpoints, model servers under ``tmp``.

    The retrainer may start a run on a false drift alarm; with ``collect_rows``
    out of reach the run waits for rows for an hour and never trains, so
    nothing swaps the model during a test. (``WEIR_RETRAINING__ENABLED=false``
    would be the natural switch, but no code reads ``RetrainingSettings.enabled``.)
    """
    return settings.model_copy(
        update={
            "scoring": ScoringSettings(
                model=model, worker_id=f"w-{model}", batch_size=50, batch_wait_s=0.05
            ),
            "monitor": settings.monitor.model_copy(
                update={"checkpoint_interval_s": 1.0, "archive_interval_s": 1.0}
            ),
            "retraining": settings.retraining.model_copy(
                update={"collect_rows": 10**9, "collect_timeout_s": 3600.0}
            ),
            "stack": StackSettings(cache_dir=settings.stack.cache_dir, state_dir=tmp),
            "live": settings.live.model_copy(update={"port": live_port}),
        }
    )


def with_source(settings: Settings, source: str) -> Settings:
    """The CloudEvents ``source`` a worker stamps on what it emits: tells who scored what."""
    return settings.model_copy(
        update={"events": settings.events.model_copy(update={"source": source})}
    )


def activate(settings: Settings, change: ModelVersionEvent) -> None:
    EventProducer(settings).send(
        topic_name(settings.kafka, Topic.MODELS), signed(settings, new_event(change, source="test"))
    )


def serve_flip_v1(settings: Settings, model: str) -> None:
    """Version 1 of the flip models (output 1 iff a > 0) served and activated."""
    publish_flip_models(settings, model)
    url = LocalDeployer(settings).deploy(model, "1")
    activate(
        settings,
        ModelVersionEvent(
            action="activate", model=model, version="1", url=url, protocol="v1", features=FEATURES
        ),
    )


def flip_row(tag: str, i: int) -> tuple[str, dict[str, float], int]:
    a = ((i * 7919) % 2001 - 1000) / 100.0 or 0.5
    return f"{tag}-{i}", {"a": a, "b": 1.0}, expected_output("1", a)


Row = tuple[str, dict[str, float], int]  # record id, features, label


class PacedStream:
    """Records at a steady rate, each record's label ``label_lag`` records later, in a thread.

    Runs until ``stop()`` (or ``limit`` records), then sends the labels still
    owed. ``count`` is how many records are in Kafka (flushed) so far.
    """

    def __init__(
        self,
        settings: Settings,
        row: Callable[[int], Row],
        *,
        rate: float,
        label_lag: int = 20,
        limit: int | None = None,
        chunk: int = 10,
    ) -> None:
        self._settings, self._row, self._rate = settings, row, rate
        self._lag, self._limit, self._chunk = label_lag, limit, chunk
        self.rows: list[Row] = []
        self.count = 0
        self.errors: list[BaseException] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="paced-stream", daemon=True)

    def start(self) -> PacedStream:
        self._thread.start()
        return self

    def stop(self, timeout_s: float = 60.0) -> None:
        """Stop producing and send the labels still owed (idempotent; check ``errors``)."""
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout_s)

    @property
    def running(self) -> bool:
        return self._thread.is_alive()

    @property
    def labelled(self) -> set[str]:
        return {rid for rid, _, _ in self.rows}

    def _run(self) -> None:
        k = self._settings.kafka
        records_t, labels_t = topic_name(k, Topic.RECORDS), topic_name(k, Topic.LABELS)
        producer = EventProducer(self._settings)

        def label(j: int) -> None:
            rid, _, y = self.rows[j]
            producer.produce(labels_t, new_event(Label(record_id=rid, label=y), source="t"))

        try:
            start, i = time.monotonic(), 0
            while not self._stop.is_set() and (self._limit is None or i < self._limit):
                rid, features, y = self._row(i)
                self.rows.append((rid, features, y))
                producer.produce(
                    records_t, new_event(InputRecord(id=rid, features=features), source="t")
                )
                if i >= self._lag:
                    label(i - self._lag)
                i += 1
                if i % self._chunk == 0:
                    producer.flush()
                    self.count = i
                    ahead = start + i / self._rate - time.monotonic()
                    if ahead > 0:
                        time.sleep(ahead)  # pacing the load generator, not waiting on an outcome
            for j in range(max(0, i - self._lag), i):
                label(j)
            producer.flush()
            self.count = i
        except BaseException as exc:
            self.errors.append(exc)


class Seen:
    """Incremental per-record counts over a Collector (conditions run after every message)."""

    def __init__(self, out: Collector, type_: str, tag: str, model: str) -> None:
        self.out, self.type, self.tag, self.model = out, type_, tag, model
        self.counts: Counter[str] = Counter()
        self.events: list[Any] = []
        self._cursor = 0

    def __call__(self) -> Counter[str]:
        for m in self.out.messages[self._cursor :]:
            e = m.event
            if (
                e is not None
                and e.type == self.type
                and e.data.model == self.model
                and e.data.record_id.startswith(self.tag)
            ):
                self.counts[e.data.record_id] += 1
                self.events.append(e)
        self._cursor = len(self.out.messages)
        return self.counts


def largest_gap_s(times: list[datetime], start: datetime, end: datetime) -> float:
    """The longest stretch of [start, end] with no time in ``times`` (its ends count as edges)."""
    inside = sorted(t for t in times if start <= t <= end)
    edges = [start, *inside, end]
    return max((b - a).total_seconds() for a, b in itertools.pairwise(edges))


def archived_rows(settings: Settings, model: str, seen: dict[str, list[TrainingRow]]) -> set[str]:
    """Record ids of every training row archived for ``model`` (objects read once, cached)."""
    store = ObjectStore(settings.minio)
    bucket = settings.minio.data_bucket
    for key in store.list_keys(bucket, archive_prefix(model)):
        if key not in seen:
            body = store.get_bytes(bucket, key).decode()
            seen[key] = [TrainingRow.model_validate_json(x) for x in body.splitlines() if x]
    return {row.record_id for rows in seen.values() for row in rows}


def log_count(proc: ServiceProcess, text: str) -> int:
    try:
        return proc.log_file.read_text(errors="replace").count(text)
    except OSError:
        return 0


def caught_up(settings: Settings, group: str, *logical: Topic) -> bool:
    """True when ``group`` has committed to the end of every partition of these topics."""
    for t in logical:
        lag = group_lag(settings, group, topic_name(settings.kafka, t))
        if any(lag.values()):
            return False
    return True


# ------------------------------------------------------------- 1. MinIO away for 20 s

OUTAGE_S = 20
MINIO_RATE = 100  # records/s, labels following
# Scoring never touches MinIO, so predictions must keep coming while it is away.
# Records arrive every 10 ms and a micro-batch waits at most 0.05 s, so in a
# healthy run predictions are ~0.1 s apart; a 2-core machine shared with other
# test runs can stall a process for a second or two (scheduling, GC, a
# rebalance-free but slow broker ack). A scorer that waited on MinIO would stop
# for the whole outage (20 s) or at least one storage timeout (10 s) — so 5 s
# separates "never paused" from "paused by MinIO" with room on both sides.
MAX_GAP_S = 5.0


@contextlib.contextmanager
def minio_away(live: Settings, how: str) -> Iterator[None]:
    """MinIO unavailable inside the block: SIGSTOPped, or stopped; back (same server) after."""
    proc = minio_stack.process(live)
    pid = proc.pid()
    assert pid is not None, "the shared stack's MinIO is not running"
    if how == "paused":
        os.kill(pid, signal.SIGSTOP)
        try:
            # a signal is delivered, not obeyed at once: a thread running on the other core
            # may still answer a request (a CI run's health check got one). Stopped is when
            # every thread says so.
            wait_until(
                lambda: all(proc_state(pid, tid) in ("T", "t", None) for tid in thread_ids(pid)),
                timeout_s=10,
                what="every MinIO thread stopped",
            )
            yield
        finally:
            os.kill(pid, signal.SIGCONT)
        return
    argv = Path(f"/proc/{pid}/cmdline").read_bytes()
    stack = Stack(live)
    stack.down(only=("minio",))
    try:
        assert not is_running(pid)
        yield
    finally:
        # `up` starts exactly what the stack started before: the same binary, data
        # directory, address and credentials (streams/dev/stack/minio.py), and waits
        # until it answers.
        stack.up()
    new = proc.pid()
    assert new is not None and Path(f"/proc/{new}/cmdline").read_bytes() == argv, (
        "MinIO came back as the same server on the same data"
    )


@pytest.mark.parametrize("how", ["paused", "stopped"])
def test_minio_away_scoring_never_pauses_archive_catches_up(
    live_stack: Settings, unique: str, tmp_path, how: str, capsys
):
    model = f"mio{unique}"
    with own_topics(live_stack, f"{live_stack.kafka.topic_prefix}-mio{unique}") as topics:
        settings = role_settings(topics, tmp_path, model)
        k = settings.kafka
        serve_flip_v1(settings, model)
        worker = start_roles(settings, f"mio-{unique}", ("scoring", "feedback"))
        out = Collector(
            settings,
            [topic_name(k, t) for t in (Topic.PREDICTIONS, Topic.OUTCOMES, Topic.DEAD_LETTER)],
            group=f"check-{unique}",
        )
        predicted = Seen(out, PREDICTION, unique, model)
        joined = Seen(out, OUTCOME, unique, model)
        stream = PacedStream(settings, lambda i: flip_row(unique, i), rate=MINIO_RATE)
        seen_objects: dict[str, list[TrainingRow]] = {}
        try:
            out.until(
                lambda: "control caught up" in worker.log_file.read_text(errors="replace"),
                deadline_s=START_S,
                what="the scoring role to be ready",
            )
            stream.start()
            # bad labels: the feedback role, their only reader, dead-letters them
            labels_t = topic_name(k, Topic.LABELS)
            bad = EventProducer(settings)
            bad.produce_raw(labels_t, b"{not a label", key=f"bad-{unique}".encode())
            wrong = InputRecord(id=f"x-{unique}", features={"a": 1.0})
            bad.send(labels_t, new_event(wrong, source="t"))
            out.until(
                lambda: len(predicted()) >= 300 and len(joined()) >= 100,
                deadline_s=START_S,
                what="predictions and outcomes before the outage",
            )
            with minio_away(live_stack, how):
                away_from = utc_now()
                assert not minio_stack.ready(live_stack), "MinIO does not answer"
                out.poll_for(OUTAGE_S)  # reading predictions for the whole outage
                away_to = utc_now()
                produced_in_outage = stream.count
            out.until(
                lambda: len(predicted()) >= produced_in_outage + 200,
                deadline_s=DRAIN_S,
                what="predictions after the outage",
            )
            stream.stop()
            assert not stream.errors, stream.errors
            out.until(
                lambda: set(predicted()) >= stream.labelled and set(joined()) >= stream.labelled,
                deadline_s=DRAIN_S,
                what=f"a prediction and an outcome for each of {len(stream.rows)} records",
            )
            archived: set[str] = set()

            def complete() -> bool:
                archived.update(archived_rows(settings, model, seen_objects))
                return archived >= stream.labelled

            wait_until(complete, timeout_s=DRAIN_S, what="the archive to catch up", interval_s=2)
            log = worker.log_file.read_text(errors="replace")
        finally:
            stream.stop()
            out.close()
            worker.stop()
            stop_model_servers(settings)

    gap = largest_gap_s([e.time for e in predicted.events], away_from, away_to)
    outcome_gap = largest_gap_s([e.time for e in joined.events], away_from, away_to)
    labelled = stream.labelled
    assert stream.count > produced_in_outage > 0
    assert len(stream.rows) == stream.count
    # scoring never paused, and neither did the join that feeds the archive
    assert gap < MAX_GAP_S, f"no prediction for {gap:.1f}s while MinIO was {how}"
    assert outcome_gap < MAX_GAP_S, f"no outcome for {outcome_gap:.1f}s while MinIO was {how}"
    # nothing lost: a prediction per record, a training row per labelled record
    assert set(predicted.counts) == labelled
    letters = sorted(
        (e.data.source_topic, e.data.error_class) for e in out.events("io.weir.deadletter.v1")
    )
    labels_t = topic_name(settings.kafka, Topic.LABELS)
    assert letters == [(labels_t, "MalformedEvent"), (labels_t, "WrongTopic")]
    assert archived >= labelled, f"{len(labelled - archived)} labelled records not archived"
    if how == "stopped":  # a refused connection fails fast: the writer saw the outage
        assert "archive paused" in log and "archive resumed after an outage" in log
    with capsys.disabled():
        print(
            f"\n[minio {how}] {len(labelled)} records, largest prediction gap during the "
            f"outage {gap:.2f}s (outcomes {outcome_gap:.2f}s), "
            f"{len(seen_objects)} archive objects"
        )


# ------------------------------------------------ 2. two scoring workers, one drift

HISTORY = 2000  # archived rows of the old concept that train version 1
DRIFT_AT = 2000  # live record index where the concept changes (SEA variant 0 → 3)
LIVE = 3500  # live records: 2000 before the drift, 1500 after
DRIFT_RATE = 250  # records/s


def test_two_scoring_workers_one_performance_alert_per_drift(
    live_stack: Settings, unique: str, tmp_path, capsys
):
    model = f"two{unique}"
    with own_topics(live_stack, f"{live_stack.kafka.topic_prefix}-two{unique}") as topics:
        base = role_settings(topics, tmp_path, model)
        k = base.kafka
        rows = list(drifting_stream(HISTORY + LIVE, HISTORY + DRIFT_AT, seed=7))
        history, live = rows[:HISTORY], rows[HISTORY:]
        first, _ = bootstrap_model(
            base,
            model,
            as_history(history, id_prefix="h"),
            LocalDeployer(base),
            run_id=f"bootstrap-{unique}",
            console=Console(quiet=True),
        )
        v1 = first.version
        activate(base, first)
        sources = {w: f"weir-{w}-{unique}" for w in ("a", "b")}
        perf_port = free_port()
        procs: dict[str, ServiceProcess] = {}
        out = Collector(
            base,
            [
                topic_name(k, t)
                for t in (Topic.PREDICTIONS, Topic.OUTCOMES, Topic.ALERTS, Topic.DEAD_LETTER)
            ],
            group=f"check-{unique}",
        )
        predicted = Seen(out, PREDICTION, unique, model)
        joined = Seen(out, OUTCOME, unique, model)
        stream = PacedStream(
            base,
            lambda i: (f"{unique}-{i}", live[i].features, live[i].label),
            rate=DRIFT_RATE,
            label_lag=25,
            limit=LIVE,
        )
        perf_status: dict[str, Any] = {}
        try:
            for w, source in sources.items():
                procs[w] = start_roles(
                    with_source(base, source), f"{w}-{unique}", ("scoring",), name=f"scoring-{w}"
                )
            procs["feedback"] = start_roles(base, f"fb-{unique}", ("feedback",), name="feedback")
            procs["performance"] = start_roles(
                base.model_copy(update={"live": base.live.model_copy(update={"port": perf_port})}),
                f"perf-{unique}",
                ("performance",),
                name="performance",
            )
            out.until(
                lambda: all(
                    "control caught up" in procs[w].log_file.read_text(errors="replace")
                    for w in sources
                ),
                deadline_s=START_S,
                what="both scoring workers to be ready",
            )
            stream.start()
            out.until(
                lambda: (
                    not stream.running
                    and set(predicted()) >= stream.labelled
                    and set(joined()) >= stream.labelled
                ),
                deadline_s=DRAIN_S + LIVE / DRIFT_RATE,
                what=f"a prediction and an outcome for each of {LIVE} records",
            )
            stream.stop()
            assert not stream.errors, stream.errors

            def performance_done() -> bool:
                r = http_get(f"http://127.0.0.1:{perf_port}/status.json")
                if r is None or r.status_code != 200:
                    return False
                perf_status.update(r.json())
                seen = {a["version"]: a["outcomes"] for a in perf_status["accuracy"]}
                return seen.get(v1, 0) >= len(joined.events)

            wait_until(
                lambda: (joined(), performance_done())[1],
                timeout_s=DRAIN_S,
                what="the performance role to take in every outcome",
                interval_s=0.5,
            )
            out.poll_for(3.0)  # an alert sent right after the last outcome would show here
            joined()
            assert performance_done(), "read the performance role's count once more"
        finally:
            stream.stop()
            out.close()
            for proc in procs.values():
                proc.stop()
            stop_model_servers(base)

    by_worker = {
        w: {e.data.record_id for e in predicted.events if e.source == s} for w, s in sources.items()
    }
    ids = {f"{unique}-{i}" for i in range(LIVE)}
    alerts = [e for e in out.events(PERFORMANCE_ALERT) if e.data.model == model]
    first_after_drift = min(
        e.time for e in joined.events if int(e.data.record_id.rsplit("-", 1)[1]) >= DRIFT_AT
    )
    accuracy = {a["version"]: a for a in perf_status["accuracy"]}

    # both workers scored, between them every record
    assert set(predicted.counts) == ids
    assert by_worker["a"] | by_worker["b"] == ids
    for w, scored in by_worker.items():
        assert len(scored) >= LIVE // 10, f"worker {w} scored only {len(scored)} records"
    assert all(e.data.version == v1 for e in predicted.events)
    assert out.events("io.weir.deadletter.v1") == []
    # the performance role's detector saw every outcome, whoever scored the record
    assert set(joined.counts) == ids
    assert accuracy[v1]["outcomes"] == len(joined.events)
    # one real drift, one drift alert, and only once outcomes of the new concept came in;
    # with no retrainer here v1 stays degraded, so any later alert is the watch's re-alert
    shown = [(a.time.isoformat(), a.data.value, a.data.detector) for a in alerts]
    drift_alerts = [a for a in alerts if a.data.baseline is None]
    assert len(drift_alerts) == 1, shown
    alert = drift_alerts[0]
    assert isinstance(alert.data, PerformanceAlert) and alert.data.version == v1
    assert alert.time >= first_after_drift, "the alert came before any post-drift outcome"
    # and says when the label of the outcome that tipped it was given: a post-drift one's
    labelled = {
        e.data.labelled_at
        for e in joined.events
        if int(e.data.record_id.rsplit("-", 1)[1]) >= DRIFT_AT
    }
    assert alert.data.evidence_until in labelled and alert.data.evidence_until <= alert.time
    for again in alerts:
        if again is not alert:
            assert again.time > alert.time and "still degraded" in again.data.detector, shown
            assert again.data.value < (again.data.baseline or 0) - 0.05, shown
    with capsys.disabled():
        print(
            f"\n[two scorers] a scored {len(by_worker['a'])}, b {len(by_worker['b'])}; "
            f"{len(joined.events)} outcomes; alert at accuracy {alert.data.value:.3f} "
            f"({(alert.time - first_after_drift).total_seconds():.1f}s after the first "
            f"post-drift outcome)"
        )


# ------------------------------------------------- 3. kill -9 each role mid-stream

KILL_RATE = 100  # records/s
BEFORE_KILL = 300  # predictions of a case before its role is killed
AFTER_RESTART = 500  # records produced after the restart before the stream stops
# The performance role checkpoints every second and Faust commits every second:
# a restarted role's detector misses (or counts twice) at most the outcomes of
# those two intervals plus a save's round trip on a busy machine, at KILL_RATE
# outcomes/s. Generous: 5 s worth.
CHECKPOINT_SLACK = 5 * KILL_RATE


@dataclass
class Supervised:
    settings: Settings
    model: str
    proc: ServiceProcess
    live_port: int

    @property
    def pid(self) -> int:
        pid = self.proc.pid()
        assert pid is not None, self.proc.log_tail()
        return pid

    def get(self, path: str) -> Any:
        return http_get(f"http://127.0.0.1:{self.live_port}{path}")

    def status(self) -> dict[str, Any]:
        """The merged /status.json (empty while it does not answer)."""
        r = self.get("/status.json")
        return r.json() if r is not None and r.status_code == 200 else {}

    def not_ready(self) -> set[str] | None:
        """Roles the supervisor's /readyz names as not ready (None: it does not answer)."""
        r = self.get("/readyz")
        if r is None:
            return None
        if r.status_code == 200:
            return set()
        return {x.strip() for x in r.text.partition(":")[2].split(",") if x.strip()}

    def ready(self, *roles: str) -> bool:
        """Every role named answers 200 on its /readyz (as the supervisor gathers them)."""
        missing = self.not_ready()
        return missing is not None and not set(roles) & missing

    def outcomes_seen(self) -> int:
        """Outcomes of version 1 the performance role's detector has counted."""
        return sum(a["outcomes"] for a in self.status().get("accuracy", []) if a["version"] == "1")


@pytest.fixture(scope="module")
def supervised(live_stack: Settings, tmp_path_factory) -> Iterator[Supervised]:
    """``weir worker`` (all five roles under the supervisor) scoring flip model v1."""
    tag = os.urandom(4).hex()
    model = f"sup{tag}"
    tmp = tmp_path_factory.mktemp("supervised")
    with own_topics(live_stack, f"{live_stack.kafka.topic_prefix}-sup{tag}") as topics:
        settings = role_settings(topics, tmp, model, live_port=free_port())
        serve_flip_v1(settings, model)
        proc = start_worker(settings, f"sup-{tag}")
        sup = Supervised(settings, model, proc, settings.live.port)
        try:
            wait_until(
                lambda: (
                    set(role_pids(sup.pid)) == set(ROLES)
                    and set(sup.status().get("roles", [])) == set(ROLES)
                    and sup.ready(*ROLES)
                ),
                timeout_s=START_S,
                what="every role to start and be ready (the supervisor's /readyz 200)",
                interval_s=0.5,
            )
            yield sup
        finally:
            proc.stop()
            stop_model_servers(settings)


def alert_event(model: str, alert_id: str) -> Any:
    """A performance alert about ``model``: the retrainer's input."""
    return new_event(performance_alert(alert_id, model), source="test")


def thread_niceness(pid: int) -> set[int]:
    """The niceness of each thread of ``pid`` (Linux keeps one per thread)."""
    found = set()
    for tid in thread_ids(pid):
        with contextlib.suppress(OSError):  # a thread that has just ended
            found.add(os.getpriority(os.PRIO_PROCESS, tid))
    return found


def test_scoring_first_the_loop_next_the_monitor_last(supervised: Supervised):
    """On a machine short of CPU the monitor lags first: it runs at monitor_niceness once
    started (every thread, librdkafka's too), the loop's roles at insight_niceness, scoring
    at the supervisor's."""
    sup, scoring = supervised, supervised.settings.scoring
    mine = os.nice(0)
    pids = role_pids(sup.pid)
    wait_until(
        lambda: thread_niceness(role_pids(sup.pid)["monitor"]) == {scoring.monitor_niceness},
        timeout_s=START_S,
        what=f"every monitor thread at niceness {scoring.monitor_niceness}",
        interval_s=0.2,
    )
    assert thread_niceness(pids["scoring"]) == {mine}
    for role in ("feedback", "performance", "retrainer"):
        assert thread_niceness(pids[role]) == {min(19, mine + scoring.insight_niceness)}, role
    # where the supervisor sits in an autogroup, every insight role leads a session of its
    # own whose autogroup is niced as the role is: else their niceness counts only within
    # one session; in the root group (no autogroup) they stay in the supervisor's session
    assert os.getsid(pids["scoring"]) == os.getsid(sup.pid)
    group = autogroup_niceness(sup.pid)
    for role, pid in pids.items():
        if role == "scoring":
            assert autogroup_niceness(pid) == group
            continue
        assert (os.getsid(pid) == pid) == (group is not None), role
        if group is not None:  # the monitor's group follows its threads right after them
            wait_until(
                lambda pid=pid: autogroup_niceness(pid) == max(group, *thread_niceness(pid)),
                timeout_s=10,
                what=f"the {role} role's autogroup at its niceness",
                interval_s=0.1,
            )
    # and the roles that read in batches give way while scoring is behind
    for role, pid in pids.items():
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        assert (b"--scoring-first" in cmdline) == (role in ("monitor", "feedback", "learner")), role


@pytest.mark.parametrize("role", ROLES)
def test_role_killed_mid_stream_is_restarted_and_loses_nothing(
    supervised: Supervised, role: str, unique: str, capsys
):
    sup, settings, model = supervised, supervised.settings, supervised.model
    k = settings.kafka
    tag = f"{role}{unique}"
    restored_line = (
        f"{role}/{model}/{CHECKPOINTED[role]} restored from its checkpoint"
        if role in CHECKPOINTED
        else None
    )
    exited_line = f"role {role} exited with -9"
    out = Collector(
        settings,
        [topic_name(k, t) for t in (Topic.PREDICTIONS, Topic.OUTCOMES, Topic.DEAD_LETTER)],
        group=f"check-{unique}",
    )
    predicted = Seen(out, PREDICTION, tag, model)
    joined = Seen(out, OUTCOME, tag, model)
    stream = PacedStream(settings, lambda i: flip_row(tag, i), rate=KILL_RATE)
    alerts_t = topic_name(k, Topic.ALERTS)
    old = role_pids(sup.pid)[role]
    exits_before = log_count(sup.proc, exited_line)
    restores_before = log_count(sup.proc, restored_line) if restored_line else 0
    handled = f"alert-{unique}-before"  # retrainer: handled before the kill ...
    fresh = f"alert-{unique}-after"  # ... and a new one after the restart
    seen_before_kill = total_outcomes = seen_after = 0
    try:
        stream.start()
        out.until(
            lambda: len(predicted()) >= BEFORE_KILL,
            deadline_s=START_S,
            what=f"{BEFORE_KILL} predictions before the kill",
        )
        if role == "performance":  # enough state that a restart from zero would show
            out.until(
                lambda: sup.outcomes_seen() >= 2 * CHECKPOINT_SLACK,
                deadline_s=START_S,
                what=f"the performance role to count {2 * CHECKPOINT_SLACK} outcomes",
            )
        if role == "retrainer":  # an alert it handled, then at least two checkpoints
            EventProducer(settings).send(alerts_t, alert_event(model, handled))
            out.until(
                lambda: log_count(sup.proc, f"alert {handled} (") >= 1,
                deadline_s=START_S,
                what="the retrainer to handle an alert",
            )
            mark = len(predicted())
            out.until(
                lambda: len(predicted()) >= mark + 3 * KILL_RATE,
                deadline_s=START_S,
                what="three more seconds of stream (a checkpoint every second)",
            )
        seen_before_kill = sup.outcomes_seen()
        assert stream.running, "the role is killed mid-stream"
        os.kill(old, signal.SIGKILL)

        pids: dict[str, int] = {}

        def restarted() -> bool:
            pids.update(role_pids(sup.pid))
            return pids.get(role, old) != old and role in sup.status().get("roles", [])

        out.until(restarted, deadline_s=RESTART_S, what=f"the supervisor to restart {role}")
        restarted_at = stream.count  # records from here on came after the new process began
        out.until(  # routes caught up (scoring, retrainer) or state restored (the others)
            lambda: sup.ready(*ROLES), deadline_s=RESTART_S, what=f"the new {role} to be ready"
        )
        if restored_line:
            out.until(
                lambda: log_count(sup.proc, restored_line) > restores_before,
                deadline_s=RESTART_S,
                what=f"the new {role} to restore its checkpoint",
            )
        if role == "retrainer":
            EventProducer(settings).send(alerts_t, alert_event(model, handled))
            EventProducer(settings).send(alerts_t, alert_event(model, fresh))
            out.until(
                lambda: (
                    log_count(sup.proc, f"alert {fresh} (") >= 1
                    and log_count(sup.proc, f"alert {handled} (") >= 2
                ),
                deadline_s=RESTART_S,
                what="the new retrainer to handle both alerts",
            )
        out.until(
            lambda: stream.count >= restarted_at + AFTER_RESTART,
            deadline_s=DRAIN_S,
            what=f"{AFTER_RESTART} records after the restart",
        )
        stream.stop()
        assert not stream.errors, stream.errors
        after_restart = {rid for rid, _, _ in stream.rows[restarted_at:]}
        out.until(
            lambda: (
                set(predicted()) >= stream.labelled
                and (role != "feedback" or set(joined()) >= after_restart)
            ),
            deadline_s=DRAIN_S,
            what=f"a prediction for each of {len(stream.rows)} records"
            + (" and an outcome for each after the restart" if role == "feedback" else ""),
        )
        if role == "monitor":
            wait_until(
                lambda: caught_up(
                    settings, f"{k.topic_prefix}-monitor-{model}", Topic.RECORDS, Topic.PREDICTIONS
                ),
                timeout_s=DRAIN_S,
                what="the new monitor to consume to the end of records and predictions",
                interval_s=1.0,
            )
        if role == "performance":
            # once feedback wrote every outcome and performance read them all, the
            # detector's count is final; the outcomes topic holds this module's alone
            wait_until(
                lambda: (
                    caught_up(
                        settings,
                        f"{k.topic_prefix}-feedback-{model}",
                        Topic.RECORDS,
                        Topic.PREDICTIONS,
                        Topic.LABELS,
                    )
                    and caught_up(settings, f"{k.topic_prefix}-performance-{model}", Topic.OUTCOMES)
                ),
                timeout_s=DRAIN_S,
                what="feedback and the new performance role to consume to the end",
                interval_s=1.0,
            )
            total_outcomes = sum(end_offsets(settings, topic_name(k, Topic.OUTCOMES)).values())
            seen_after = sup.outcomes_seen()
        log = sup.proc.log_file.read_text(errors="replace")
    finally:
        stream.stop()
        out.close()

    # the supervisor restarted exactly that role, once
    after = role_pids(sup.pid)
    assert set(after) == set(ROLES) and after[role] != old and not is_running(old)
    assert log.count(exited_line) == exits_before + 1
    # nothing scored is lost: every record has a prediction (at least one), a right one
    assert set(predicted.counts) == stream.labelled, (
        f"records without a prediction: {sorted(stream.labelled - set(predicted.counts))[:10]}"
    )
    assert all(
        e.data.output == expected_output("1", feature_a(stream, e)) for e in predicted.events
    )
    assert out.events("io.weir.deadletter.v1") == []
    dupes = sum(n - 1 for n in predicted.counts.values())
    joined()
    if role == "scoring":
        # the new scorer resumed at the old one's last commit (every second): only
        # records of the last few seconds before the kill are scored twice
        assert dupes <= 3 * KILL_RATE + settings.scoring.batch_size * k.record_partitions
    else:
        assert dupes == 0, "scoring was not touched by this kill"
    if role == "feedback":
        # outcomes kept coming, for every record after the restart (checked above)
        assert after_restart <= set(joined.counts)
    if role == "performance":
        assert seen_after >= seen_before_kill, "the detector went back to zero"
        assert abs(seen_after - total_outcomes) <= CHECKPOINT_SLACK, (
            f"the restarted performance role counts {seen_after} of {total_outcomes} "
            "outcomes: it did not resume from its checkpoint"
        )
    if role == "retrainer":
        assert (
            f"alert {handled} ({PERFORMANCE_ALERT}) for {model}: alert {handled} already handled"
            in log
        ), "the restarted retrainer forgot the alerts it handled (checkpoint)"
        assert f"alert {fresh} ({PERFORMANCE_ALERT}) for {model}: " in log
    with capsys.disabled():
        print(
            f"\n[kill {role}] pid {old} -> {after[role]}; {len(stream.rows)} records, "
            f"{dupes} scored twice, {len(joined.counts)} outcomes"
            + (
                f"; performance counts {seen_after} of {total_outcomes} outcomes"
                if role == "performance"
                else ""
            )
        )


def feature_a(stream: PacedStream, event: Any) -> float:
    """Feature ``a`` of the record a prediction is for."""
    index = int(event.data.record_id.rsplit("-", 1)[1])
    return stream.rows[index][1]["a"]

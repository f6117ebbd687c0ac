"""The facts a closed compose loop must show, checked the same way wherever it ran.

Shared by the rehearsal (tests/integration/test_compose_rehearsal.py: the
compose file's commands as local processes) and the real thing
(tests/integration/test_compose_docker.py: `docker compose up` on images built
here). Each caller says where the services answer (URLs from its host) and
what the model host hands out; the facts are the same.
"""

from __future__ import annotations

import itertools
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass

import httpx
from prometheus_client.parser import text_string_to_metric_families

from connectors.kafka import admin
from schemas.settings import Settings
from schemas.topics import Topic, topic_name
from streams.context import ROLES
from streams.dev.localrun import Collector
from tests.compose_file import role_services, services
from tests.helpers import end_offsets

# what the checks read: predictions, route events and decisions, alerts, dead letters
# pipeline runs: an assertion on the versions served names the runs and their reasons
WATCHED = (Topic.PREDICTIONS, Topic.MODELS, Topic.ALERTS, Topic.DEAD_LETTER, Topic.PIPELINE_RUNS)


def collector(settings: Settings, group: str) -> Collector:
    return Collector(settings, [topic_name(settings.kafka, t) for t in WATCHED], group=group)


# The producer's stream is long (30 minutes): a test lets it run until version 2 has
# served this many records, then stops it (SIGTERM), so a slow retraining run on a loaded
# machine still goes live while records flow.
AFTER_SWAP = 1000
STREAM_S = 600  # at most, for version 2 to serve AFTER_SWAP records
SCORED_S = 300  # then at most, for every record sent to be scored


def produced(settings: Settings) -> int:
    """How many records the producer sent: the records topic's end offsets (its producer
    is idempotent and not transactional; the topics are the run's own)."""
    return sum(end_offsets(settings, topic_name(settings.kafka, Topic.RECORDS)).values())


class Tally:
    """What the collector has read so far, counted as it reads: the record ids scored and
    the predictions each version served (a shadow's are mirrored, never served). A wait's
    condition runs every quarter second; rescanning every message kept each time fell
    behind a 200 records/s stream under the CPU hog."""

    def __init__(self, collector: Collector) -> None:
        self.collector = collector
        self.read = 0
        self.ids: set[str] = set()
        self.served: Counter[str] = Counter()

    def update(self) -> Tally:
        messages = self.collector.messages
        for msg in itertools.islice(messages, self.read, None):
            e = msg.event
            if e is not None and e.type == "io.weir.prediction.v1":
                self.ids.add(e.data.record_id)
                if not e.data.shadow:
                    self.served[e.data.version] += 1
        self.read = len(messages)
        return self


def stream_until_swapped(
    collector: Collector,
    settings: Settings,
    *,
    check_running: Callable[[], bool],
    producer_exited: Callable[[], bool],
    stop_producer: Callable[[], None],
) -> None:
    """Let the producer stream until version 2 has served ``AFTER_SWAP`` records (or
    ``STREAM_S`` passed, or the producer ended by itself), stop it, then read until every
    record it sent is scored. ``check_running`` raises when a service crashed."""
    tally = Tally(collector)
    collector.wait(
        lambda: check_running() or producer_exited() or tally.update().served["2"] >= AFTER_SWAP,
        deadline_s=STREAM_S,
    )
    stop_producer()
    sent = produced(settings)
    collector.until(
        lambda: check_running() or len(tally.update().ids) >= sent,
        deadline_s=SCORED_S,
        what=f"every one of the {sent} records sent to be scored",
    )
    collector.poll_for(2.0)  # anything still in flight, e.g. a duplicate


def metric(text: str, name: str, **labels: str) -> float:
    return sum(
        sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items())
    )


@dataclass(frozen=True)
class Where:
    """Where one run's services answer, as seen from the test's host."""

    model_host: str  # the model host's API, e.g. http://127.0.0.1:8070
    retrainer: str  # the retrainer's live view
    scorers: dict[str, str]  # each scoring replica's worker id → its live view
    served_prefix: str  # how the model host's URLs start, e.g. http://model-host:


def timeline(collector: Collector) -> str:
    """The loop's milestones as they arrived, in seconds from the first message read: each
    served version's first and last prediction, the alerts, runs, routes and route
    decisions. Said when the loop did not close: was version 2 late, or never sent?"""
    start = collector.arrived[0] if collector.arrived else 0.0
    lines: list[tuple[float, str]] = []
    served: dict[str, list[float]] = {}
    alerts = 0
    for msg, at in zip(collector.messages, collector.arrived, strict=True):
        e, t = msg.event, at - start
        if e is None:
            continue
        if e.type == "io.weir.prediction.v1" and not e.data.shadow:
            served.setdefault(e.data.version, []).append(t)
        elif e.type.startswith("io.weir.alert."):
            alerts += 1
            if alerts == 1:
                lines.append((t, f"first alert {e.type} {e.data.alert_id}"))
        elif e.type == "io.weir.pipeline.run.v1":
            lines.append((t, f"run {e.data.run_id} {e.data.status}"))
        elif e.type == "io.weir.model.version.v1":
            lines.append((t, f"route {e.data.action} {e.data.version}"))
        elif e.type == "io.weir.model.route.v1":
            verdict = "accepted" if e.data.accepted else "refused"
            lines.append((t, f"{e.data.worker} {verdict} {e.data.action} {e.data.version}"))
    for version, times in served.items():
        lines.append((times[0], f"first prediction of version {version}"))
        lines.append((times[-1], f"last prediction of version {version} ({len(times)} in all)"))
    lines.append((0.0, f"{alerts} alerts in all"))
    return "\n".join(f"{t:7.1f}s  {what}" for t, what in sorted(lines))


def check_loop_closed(collector: Collector, s: Settings, where: Where) -> None:
    """Version 1 served, the drift retrained into version 2, both scoring replicas on it,
    every record scored once at least, nothing dead-lettered; the roles ran as services
    of their own, each in its own consumer group."""
    model = s.scoring.model
    tally = Tally(collector).update()
    assert len(tally.ids) == produced(s), "every record of the stream was scored"
    by_version = tally.served  # the served versions (a shadow's are mirrored, never served)
    runs = [
        (e.data.status, e.data.alert_id, e.data.reason)
        for e in collector.events("io.weir.pipeline.run.v1")
    ]
    why = f"{by_version}, runs {runs}, as they came:\n{timeline(collector)}"
    assert set(by_version) == {"1", "2"}, why
    assert collector.events("io.weir.deadletter.v1") == []

    # two scoring replicas, one of each other role, each in its own consumer group
    assert set(role_services()) == set(ROLES)
    assert len(where.scorers) == int(services()["scoring"]["deploy"]["replicas"]) >= 2
    client = admin(s)  # referenced until the answer is in: a freed client cancels it
    listed = client.list_consumer_groups(request_timeout=30).result()
    groups = {g.group_id for g in listed.valid}
    running = {n for n, service in role_services().items() if not service.get("profiles")}
    expected = {f"{s.kafka.topic_prefix}-{role}-{model}" for role in running}
    assert expected <= groups, sorted(groups)

    # version 1 from bootstrap, version 2 from the retrainer's run; both on the host
    routes = [e.data for e in collector.events("io.weir.model.version.v1")]
    activations = [a for a in routes if a.action == "activate"]
    assert [(a.action, a.version) for a in activations] == [("activate", "1"), ("activate", "2")]
    # each activate comes with the clear of the canary slot (an activate means all traffic)
    assert sorted(a.version for a in routes if a.action == "clear-canary") == ["1", "2"]
    assert activations[1].run_id and activations[1].alert_id, "lineage: alert → run → version"
    served = httpx.get(where.model_host + "/v1/deployments", timeout=10).json()
    assert {(d["version"], d["url"]) for d in served} == {(a.version, a.url) for a in activations}
    assert all(a.url.startswith(where.served_prefix) for a in activations), activations

    # the retrainer's live view counts the run that promoted version 2
    text = httpx.get(where.retrainer + "/metrics", timeout=10).text
    assert metric(text, "weir_retraining_runs_total", status="succeeded") >= 1

    # both scoring replicas took the swap and scored with version 2 (only scoring
    # emits route decisions)
    decisions = [e.data for e in collector.events("io.weir.model.route.v1")]
    accepted = {d.worker for d in decisions if d.version == "2" and d.accepted}
    assert accepted == set(where.scorers)
    for who, live in where.scorers.items():
        text = httpx.get(live + "/metrics", timeout=10).text
        v2 = metric(text, "weir_predictions_total", model=model, version="2")
        assert v2 > 0, f"{who} scored nothing with version 2"
        status = httpx.get(live + "/status.json", timeout=10).json()
        assert status["worker"] == who, status["worker"]
        active = {r["model"]: r["active"] for r in status["routes"]}
        assert active.get(model) == "2", f"{who} routes: {active}"
        assert status["predictions"].get("2", 0) > 0, f"{who}: {status['predictions']}"

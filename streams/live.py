"""What a worker shows of itself while it runs: metrics and the status page's state.

:class:`LiveView` is the one object on ``WorkerState`` that the live view
reads. The agents tell it what happened, after the fact and off nothing's
critical path:

* the scoring agent, after Kafka acknowledged a micro-batch's outputs:
  :meth:`LiveView.record_batch` (records, predictions per version, dead letters
  per error class, model-call latency, throughput);
* the control task, after each control message: :meth:`LiveView.record_routes`
  (active, canary and shadow version per model), and the route decisions and
  dead letters it emitted: :meth:`LiveView.record_event`;
* the monitor, feedback and retraining agents: the alerts, published versions
  and pipeline-run events they emitted (:meth:`LiveView.record_event`), and
  rolling accuracy per version (:meth:`LiveView.record_accuracy`);
* the lag sampler: :meth:`LiveView.record_lag`.

:meth:`LiveView.snapshot` is the status page's JSON (:class:`LiveStatus`).
Time is injected (``clock`` for throughput, ``now`` for timestamps), so the
view is unit-tested without a broker or a sleep.
"""

from __future__ import annotations

import time
from collections import Counter, deque
from collections.abc import Callable
from datetime import datetime
from typing import Any

from pydantic import BaseModel

from agents.canary import Contest
from agents.routing import RoutingTable, Speculation
from agents.scoring import BatchOutcome
from schemas import (
    CanaryVerdict,
    DeadLetter,
    DriftAlert,
    Event,
    ModelVersionEvent,
    OutlierAlert,
    PerformanceAlert,
    PipelineRunEvent,
    RouteDecision,
)
from schemas.events import Clock, utc_now
from schemas.settings import Settings
from streams.metrics import WorkerMetrics


class RouteView(BaseModel):
    model: str
    active: str | None
    canary: str | None
    canary_weight: float
    shadow: str | None
    speculative: str | None = None  # "<name>: <versions> (<decider>, <deadline> ms)"


class VersionAccuracy(BaseModel):
    version: str
    accuracy: float
    outcomes: int
    agreement: float | None = None  # a shadow: share of its answers equal to the served ones


class ContestView(BaseModel):
    """The canary contest the performance role is judging (agents.canary.Contest)."""

    canary: str
    active: str
    weight: float
    canary_outcomes: int
    canary_accuracy: float | None
    active_outcomes: int
    active_accuracy: float | None
    low: float | None  # interval of (canary - active) accuracy at the last look
    high: float | None
    looks: int
    standing: str  # gathering | undecided | step | promote | rollback


class Happening(BaseModel):
    """One alert, route decision, published version or pipeline-run event, for the page."""

    at: datetime
    kind: str  # drift | outlier | performance | route | publish | run
    model: str
    version: str | None
    summary: str
    ok: bool | None = None  # route accepted / run succeeded; None when it does not apply
    # the same happening again in a row (an online learner's snapshots every second or
    # faster): one entry, how many times and since when, so they do not push out the rest
    times: int = 1
    since: datetime | None = None

    def repeats(self, other: Happening) -> bool:
        return (self.kind, self.model, self.version, self.summary, self.ok) == (
            other.kind,
            other.model,
            other.version,
            other.summary,
            other.ok,
        )


class LiveStatus(BaseModel):
    worker: str
    model: str
    roles: list[str] = []  # the roles this view covers (several under `weir worker`)
    ready: bool
    uptime_s: float
    throughput_rps: float
    throughput_window_s: float
    records_consumed: int
    predictions: dict[str, int]  # by version
    dead_letters: int
    consumer_lag: int | None  # None until the first sample
    routes: list[RouteView]
    accuracy: list[VersionAccuracy]
    alerts: list[Happening]
    swaps: list[Happening]
    retraining_runs: dict[str, int]  # by status
    contest: ContestView | None = None  # the canary being judged (performance role)
    problems: list[str] = []  # why the role is not ready now (broker, model server)


def _summary(data: Any) -> tuple[str, str | None, str, bool | None]:
    """(kind, version, summary, ok) of an emitted payload worth showing; kind "" if none."""
    if isinstance(data, DriftAlert):
        return "drift", data.version, f"drift on {data.stream} ({data.detector})", None
    if isinstance(data, OutlierAlert):
        text = f"outlier {data.record_id}: score {data.score:.3f} > {data.threshold:.3f}"
        return "outlier", data.version, text, None
    if isinstance(data, PerformanceAlert):
        text = f"{data.metric} {data.value:.3f} over {data.window} ({data.detector})"
        return "performance", data.version, text, None
    if isinstance(data, CanaryVerdict):
        text = f"canary {data.verdict} at {data.weight:.0%}: {data.reason}"
        return "canary", data.version, text, data.verdict != "rollback"
    if isinstance(data, RouteDecision):
        verdict = "accepted" if data.accepted else "rejected"
        return "route", data.version, f"{data.action} {verdict}: {data.reason}", data.accepted
    if isinstance(data, ModelVersionEvent):
        run = f" from {data.run_id}" if data.run_id else ""
        return "publish", data.version, f"published {data.action}{run}", None
    if isinstance(data, PipelineRunEvent):
        text = f"{data.run_id} {data.status}" + (f": {data.reason}" if data.reason else "")
        ok = {"succeeded": True, "failed": False}.get(data.status)
        return "run", data.produced_version, text, ok
    return "", None, "", None


def _contest_view(contest: Contest | None) -> ContestView | None:
    if contest is None:
        return None
    return ContestView(
        canary=contest.canary,
        active=contest.active,
        weight=contest.weight,
        canary_outcomes=contest.canary_outcomes,
        canary_accuracy=contest.canary_accuracy,
        active_outcomes=contest.active_outcomes,
        active_accuracy=contest.active_accuracy,
        low=contest.low,
        high=contest.high,
        looks=contest.looks,
        standing=contest.standing,
    )


def _speculation_text(spec: Speculation | None) -> str | None:
    if spec is None:
        return None
    versions = ", ".join(m.version for m in spec.members)
    return f"{spec.name}: {versions} ({spec.decider}, {spec.deadline_s * 1000:.0f} ms)"


class LiveView:
    def __init__(
        self,
        settings: Settings,
        *,
        role: str = "scoring",
        clock: Callable[[], float] = time.monotonic,
        now: Clock = utc_now,
    ) -> None:
        self.metrics = WorkerMetrics()
        self.model = settings.scoring.model
        self.worker = settings.scoring.worker_id
        self.role = role
        self.window_s = settings.live.throughput_window_s
        self._clock = clock
        self._now = now
        self._started = clock()
        self._batches: deque[tuple[float, int]] = deque()
        self.records_consumed = 0
        self.predictions: Counter[str] = Counter()
        self.dead_letters = 0
        self.consumer_lag: int | None = None
        self.routes: list[RouteView] = []
        self.accuracy: dict[str, VersionAccuracy] = {}
        self.alerts: deque[Happening] = deque(maxlen=settings.live.recent)
        self.swaps: deque[Happening] = deque(maxlen=settings.live.recent)
        self.retraining_runs: Counter[str] = Counter()
        self._contest: Contest | None = None  # the judge's own, read at snapshot time
        self._route_series: set[tuple[str, str, str]] = set()  # (role, model, version)

    def record_batch(self, outcome: BatchOutcome, *, consumed: int, seconds: float) -> None:
        """One micro-batch whose outputs Kafka acknowledged; ``seconds`` it took to score."""
        m = self.metrics
        self.records_consumed += consumed
        self._batches.append((self._clock(), consumed))
        self._forget_old_batches()
        m.records_consumed.labels(self.model).inc(consumed)
        m.batch_seconds.labels(self.model).observe(seconds)
        for (model, version, latency_ms), count in outcome.calls.items():
            m.predictions.labels(model, version).inc(count)
            m.model_call_seconds.labels(model, version).observe(latency_ms / 1000)
            if model == self.model:
                self.predictions[version] += count
        for letter in outcome.dead_letters:
            self._dead_letter(letter.data)

    def _dead_letter(self, letter: DeadLetter) -> None:
        self.dead_letters += 1
        self.metrics.dead_letters.labels(letter.error_class).inc()

    def record_event(self, event: Event[Any]) -> None:
        """An event this worker emitted (alert, route decision, run, published version)."""
        data = event.data
        if isinstance(data, DeadLetter):
            self._dead_letter(data)
            return
        kind, version, summary, ok = _summary(data)
        if not kind:
            return
        seen = Happening(
            at=event.time or self._now(),
            kind=kind,
            model=getattr(data, "model", self.model),
            version=version,
            summary=summary,
            ok=ok,
        )
        if kind in ("drift", "outlier", "performance"):
            self.metrics.alerts.labels(event.type).inc()
            self.alerts.appendleft(seen)
            return
        if isinstance(data, PipelineRunEvent):
            self.metrics.retraining_runs.labels(data.status).inc()
            self.retraining_runs[data.status] += 1
        if self.swaps and seen.repeats(last := self.swaps[0]):
            seen = seen.model_copy(update={"times": last.times + 1, "since": last.since or last.at})
            self.swaps.popleft()
        self.swaps.appendleft(seen)

    def record_routes(self, routing: RoutingTable) -> None:
        """Mirror the routing table: 1 (or the canary weight) for current, 0 for earlier."""
        current: dict[tuple[str, str, str], float] = {}
        views = []
        for model, routes in sorted(routing.models.items()):
            if routes.active is not None:
                current[("active", model, routes.active.version)] = 1.0
            if routes.serving_canary is not None:
                current[("canary", model, routes.serving_canary.version)] = routes.canary_weight
            if routes.shadow is not None:
                current[("shadow", model, routes.shadow.version)] = 1.0
            views.append(
                RouteView(
                    model=model,
                    active=routes.active.version if routes.active else None,
                    canary=routes.serving_canary.version if routes.serving_canary else None,
                    canary_weight=routes.canary_weight if routes.serving_canary else 0.0,
                    shadow=routes.shadow.version if routes.shadow else None,
                    speculative=_speculation_text(routes.speculative),
                )
            )
        gauges = {
            "active": self.metrics.active_version,
            "canary": self.metrics.canary_weight,
            "shadow": self.metrics.shadow_version,
        }
        for series in self._route_series | set(current):
            role, model, version = series
            gauges[role].labels(model, version).set(current.get(series, 0.0))
        self._route_series |= set(current)
        self.routes = views

    def record_accuracy(
        self,
        version: str,
        accuracy: float | None,
        outcomes: int,
        *,
        agreement: float | None = None,
    ) -> None:
        """Rolling accuracy of one version of the worker's model (from ErrorRateMonitor); for
        a shadow also how often it answered as the served version did."""
        if accuracy is None:
            return
        self.accuracy[version] = VersionAccuracy(
            version=version, accuracy=accuracy, outcomes=outcomes, agreement=agreement
        )
        self.metrics.rolling_accuracy.labels(self.model, version).set(accuracy)

    def record_learner(self, *, learnt: int, light: int, shed: int) -> None:
        """Outcomes the online learner learnt whole, learnt with its light members only, and
        shed, since the last call."""
        for fate, count in (("learnt", learnt - light), ("light_only", light), ("shed", shed)):
            if count:
                self.metrics.learner_outcomes.labels(self.model, fate).inc(count)

    def record_contest(self, contest: Contest | None) -> None:
        """The canary contest the performance role's judge holds now (shown as it stands
        when the status is read; nothing is built per outcome)."""
        self._contest = contest

    def record_lag(self, topic: str, lag: dict[int, int]) -> None:
        """Per-partition lag of the scoring group on ``topic`` (end minus committed offset)."""
        for partition, records in lag.items():
            self.metrics.consumer_lag.labels(topic, str(partition)).set(records)
        self.consumer_lag = sum(lag.values())

    def _forget_old_batches(self) -> None:
        horizon = self._clock() - self.window_s
        while self._batches and self._batches[0][0] < horizon:
            self._batches.popleft()

    def throughput(self) -> float:
        """Records per second over the last ``live.throughput_window_s`` seconds."""
        self._forget_old_batches()
        return sum(n for _, n in self._batches) / self.window_s

    def snapshot(self, *, ready: bool) -> LiveStatus:
        return LiveStatus(
            worker=self.worker,
            model=self.model,
            roles=[self.role],
            ready=ready,
            uptime_s=round(self._clock() - self._started, 3),
            throughput_rps=round(self.throughput(), 3),
            throughput_window_s=self.window_s,
            records_consumed=self.records_consumed,
            predictions=dict(sorted(self.predictions.items())),
            dead_letters=self.dead_letters,
            consumer_lag=self.consumer_lag,
            routes=self.routes,
            accuracy=[self.accuracy[v] for v in sorted(self.accuracy)],
            alerts=list(self.alerts),
            swaps=list(self.swaps),
            retraining_runs=dict(sorted(self.retraining_runs.items())),
            contest=_contest_view(self._contest),
        )


def merge_status(parts: dict[str, LiveStatus], *, recent: int) -> LiveStatus:
    """One view of several role processes (``weir worker``): sums, unions, the scorer's lag."""
    views = list(parts.values())
    first = views[0]
    scoring = parts.get("scoring")

    def newest(items: list[Happening]) -> list[Happening]:
        return sorted(items, key=lambda h: h.at, reverse=True)[:recent]

    predictions: Counter[str] = Counter()
    runs: Counter[str] = Counter()
    for v in views:
        predictions.update(v.predictions)
        runs.update(v.retraining_runs)
    accuracy = {a.version: a for v in views for a in v.accuracy}
    return LiveStatus(
        worker=first.worker,
        model=first.model,
        roles=[r for v in views for r in v.roles],
        ready=all(v.ready for v in views),
        uptime_s=max(v.uptime_s for v in views),
        throughput_rps=sum(v.throughput_rps for v in views),
        throughput_window_s=first.throughput_window_s,
        records_consumed=sum(v.records_consumed for v in views),
        predictions=dict(sorted(predictions.items())),
        dead_letters=sum(v.dead_letters for v in views),
        consumer_lag=scoring.consumer_lag if scoring else None,
        routes=next((v.routes for v in views if v.routes), []),
        accuracy=[accuracy[k] for k in sorted(accuracy)],
        alerts=newest([a for v in views for a in v.alerts]),
        swaps=newest([s for v in views for s in v.swaps]),
        retraining_runs=dict(sorted(runs.items())),
        contest=next((v.contest for v in views if v.contest), None),
        problems=[f"{r}: {p}" for v in views for r in v.roles[:1] for p in v.problems],
    )

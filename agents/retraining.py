"""Turning alerts into retraining runs, and successful runs into live model versions.

:class:`RetrainPolicy` decides (pure, clock injected): an alert of a trigger
type (performance alerts; feature-drift alerts too with
``WEIR_RETRAINING__DRIFT_STARTS_RUNS``, otherwise they inform and are logged)
starts a run unless its id was seen before (dedupe), a run for the model
is already under way (at most one at a time), or the model is cooling down.
Waits are counted in the model's labelled outcomes, which a performance alert
carries (the performance role's count), from the alert that started the last
run: ``cooldown_outcomes`` after a run that put a new version live,
``retry_after_outcomes`` after one that did not, so the loop behaves the same
at 300 or 3,000 records/s. Alerts without a count fall back to ``cooldown_s`` /
``retry_after_s`` from the run's end. A run gathers ``collect_rows`` labelled
rows after its alert before training, twice as many for each run in a row that
promoted nothing (at most ``window_rows``): during a gradual drift the first
rows still mix both concepts. "After" is on the data's clock: rows labelled from
the alert's ``evidence_until`` on (the label time of the outcome that raised it),
so a performance role that runs minutes behind does not make the run wait for,
or train without, rows that were labelled while it caught up.

An alert that arrives while a run is under way is held (the newest one per model); if
that run promotes nothing, the held alert starts the next run as soon as it ends, so a
false alarm just before a real drift cannot hide the drift. If the run promoted a
version, the held alert was about the version it replaced and is dropped.
:class:`Retrainer` carries a run out: it emits ``requested``/``started`` pipeline-run
events, runs the Kubeflow pipeline off the event loop, and on success deploys a model
server for the new version, publishes an ``activate`` model-version event (the control
topic does the rest) and a ``succeeded`` event; otherwise a ``not-promoted`` or
``failed`` event with the reason. Lineage (alert id → run id → version) travels in the
payloads and the CloudEvents extensions.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Any

from agents.canary import routes_for
from agents.routing import RoutingTable
from connectors.deployers import Deployer
from schemas import (
    CanaryVerdict,
    Event,
    Lineage,
    ModelVersionEvent,
    PerformanceAlert,
    PipelineRunEvent,
    new_event,
)
from schemas.events import Clock, utc_now
from schemas.settings import Settings

log = logging.getLogger("weir.retraining")

PERFORMANCE = "io.weir.alert.performance.v1"
FEATURE_DRIFT = "io.weir.alert.drift.v1"
DEFAULT_TRIGGERS = (PERFORMANCE, FEATURE_DRIFT)
PIPELINE_NAME = "weir-retrain"
SEEN_KEPT = 10_000  # alert ids a checkpoint keeps for dedupe


@dataclass(frozen=True)
class RetrainDecision:
    start: bool
    reason: str
    held: bool = False
    answer: bool = False  # not started for a reason worth a "not-started" run event


@dataclass(frozen=True)
class _Marks:
    """Where a model's waits end, in its labelled outcomes (the performance role's count)."""

    start: int  # the count at the alert that started the last run
    cooldown: int  # a new alert may start a run from this count on
    retry: int  # a re-alert of a model still degraded, from this one


@dataclass
class RetrainPolicy:
    cooldown_s: float
    retry_after_s: float = 0.0
    monotonic: Callable[[], float] = time.monotonic
    triggers: Iterable[str] = DEFAULT_TRIGGERS
    cooldown_outcomes: int = 0
    retry_after_outcomes: int = 0
    _seen: set[str] = field(default_factory=set)
    _running: set[str] = field(default_factory=set)
    _not_before: dict[str, float] = field(default_factory=dict)
    _retry_from: dict[str, float] = field(default_factory=dict)  # the shorter wait's end
    _started_at: dict[str, int] = field(default_factory=dict)  # count at the run's alert
    _marks: dict[str, _Marks] = field(default_factory=dict)
    _misses: dict[str, int] = field(default_factory=dict)  # runs in a row that promoted nothing

    def consider(
        self,
        event_type: str,
        alert_id: str,
        model: str,
        *,
        persistent: bool = False,
        outcomes: int | None = None,
    ) -> RetrainDecision:
        """Whether this alert starts a run. A ``persistent`` alert (the model stayed degraded
        after a run promoted a version) waits only the retry wait, not the cooldown.

        An alert that carries ``outcomes`` (the model's labelled outcomes when it was
        raised) waits in outcomes, counted from the alert that started the last run:
        ``cooldown_outcomes`` after a run that promoted a version, ``retry_after_outcomes``
        after one that did not. Alerts without a count (feature drift), or after a run
        started by one, wait ``cooldown_s`` / ``retry_after_s`` from the run's end."""
        if event_type == FEATURE_DRIFT and event_type not in set(self.triggers):
            return RetrainDecision(
                False,
                "feature drift informs: a run starts when a performance alert confirms "
                "(WEIR_RETRAINING__DRIFT_STARTS_RUNS=true: at once)",
                answer=True,
            )
        if event_type not in set(self.triggers):
            return RetrainDecision(False, f"{event_type} does not trigger retraining")
        if alert_id in self._seen:
            return RetrainDecision(False, f"alert {alert_id} already handled")
        self._seen.add(alert_id)
        if model in self._running:
            return RetrainDecision(
                False,
                f"a run for {model} is under way; alert {alert_id} is held until it ends",
                held=True,
            )
        waiting = self._waiting(model, persistent, outcomes)
        if waiting:
            return RetrainDecision(False, f"{model} is cooling down for {waiting}", answer=True)
        self._begin(model, outcomes)
        return RetrainDecision(True, f"alert {alert_id} starts a run for {model}")

    def _waiting(self, model: str, persistent: bool, outcomes: int | None) -> str:
        """What is left of the model's wait ("" when none)."""
        marks = self._marks.get(model)
        if marks is not None and outcomes is not None and outcomes < marks.start:
            # the count started again (the performance role's state was lost): a mark of the
            # old count would hold runs back for long; the wait in seconds decides instead
            del self._marks[model]
            marks = None
        if marks is not None and outcomes is not None:
            left_n = (marks.retry if persistent else marks.cooldown) - outcomes
            return f"{left_n} more labelled outcomes" if left_n > 0 else ""
        until = self._retry_from if persistent else self._not_before
        left_s = until.get(model, 0.0) - self.monotonic()
        return f"{left_s:.0f}s more" if left_s > 0 else ""

    def _begin(self, model: str, outcomes: int | None) -> None:
        self._running.add(model)
        if outcomes is None:
            self._started_at.pop(model, None)
        else:
            self._started_at[model] = outcomes

    def finished(self, model: str, *, promoted: bool) -> None:
        self._running.discard(model)
        wait = self.cooldown_s if promoted else self.retry_after_s
        self._not_before[model] = self.monotonic() + wait
        self._retry_from[model] = self.monotonic() + self.retry_after_s
        self._misses[model] = 0 if promoted else self._misses.get(model, 0) + 1
        start = self._started_at.pop(model, None)
        if start is None:  # started by an alert without a count: the seconds decide
            self._marks.pop(model, None)
            return
        retry = start + self.retry_after_outcomes
        self._marks[model] = _Marks(
            start, start + self.cooldown_outcomes if promoted else retry, retry
        )

    def start_held(self, model: str, outcomes: int | None = None) -> None:
        """A held alert starts the next run now (the run it waited for promoted nothing)."""
        self._begin(model, outcomes)

    def rows_to_collect(self, model: str, collect_rows: int, window_rows: int) -> int:
        """Labelled rows the next run of ``model`` gathers after its alert: ``collect_rows``,
        doubled for each run in a row that promoted nothing (during a gradual drift the
        first rows after the alert still mix both concepts), at most ``window_rows``."""
        if collect_rows <= 0:
            return 0
        misses = min(self._misses.get(model, 0), 16)
        return max(collect_rows, min(window_rows, collect_rows * 2**misses))

    def misses(self, model: str) -> int:
        """Runs of ``model`` in a row that promoted nothing."""
        return self._misses.get(model, 0)

    def checkpoint(self) -> dict[str, Any]:
        """What survives a restart: handled alert ids, the waits per model and the runs in
        a row that promoted nothing.

        Waits in seconds are stored as seconds left, not as monotonic deadlines,
        so they mean the same in a new process; waits in outcomes are the
        performance role's counts, which it checkpoints too. A run under way does
        not survive.
        """
        now = self.monotonic()
        return {
            "seen": sorted(self._seen)[-SEEN_KEPT:],
            "wait_s": {m: t - now for m, t in self._not_before.items() if t > now},
            "retry_s": {m: t - now for m, t in self._retry_from.items() if t > now},
            "marks": {m: [k.start, k.cooldown, k.retry] for m, k in self._marks.items()},
            "misses": dict(self._misses),
        }

    def restore(self, saved: dict[str, Any]) -> None:
        now = self.monotonic()
        self._seen = set(saved.get("seen", ()))
        self._not_before = {m: now + left for m, left in saved.get("wait_s", {}).items()}
        self._retry_from = {m: now + left for m, left in saved.get("retry_s", {}).items()}
        self._marks = {m: _Marks(*k) for m, k in saved.get("marks", {}).items()}
        self._misses = {m: int(n) for m, n in saved.get("misses", {}).items()}


def policy_for(settings: Settings) -> RetrainPolicy:
    """The policy ``settings.retraining`` describes."""
    r = settings.retraining
    return RetrainPolicy(
        cooldown_s=r.cooldown_s,
        retry_after_s=r.retry_after_s,
        cooldown_outcomes=r.cooldown_outcomes,
        retry_after_outcomes=r.retry_after_outcomes,
        triggers=DEFAULT_TRIGGERS if r.drift_starts_runs else (PERFORMANCE,),
    )


Emit = Callable[[str, Event[Any]], Awaitable[None]]  # (topic kind: "models"|"pipeline-runs", event)
RunPipeline = Callable[..., Any]


class Retrainer:
    def __init__(
        self,
        settings: Settings,
        routing: RoutingTable,
        deployer: Deployer,
        emit: Emit,
        *,
        run_pipeline: RunPipeline | None = None,
        policy: RetrainPolicy | None = None,
        now: Clock = utc_now,
        gather_rows: Callable[[str, datetime, int], Awaitable[None]] | None = None,
        routes_folded: Callable[[], Awaitable[bool]] | None = None,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        self._settings = settings
        self._routing = routing
        self._deployer = deployer
        self._emit = emit
        self._run_pipeline = run_pipeline
        self.policy = policy or policy_for(settings)
        self._now = now
        self._gather = gather_rows
        self._routes_folded = routes_folded
        self._sleep = sleep
        self.tasks: set[asyncio.Task[None]] = set()
        self._held: dict[str, Event[Any]] = {}  # model → newest alert that came during a run

    def _event(self, payload: Any, lineage: Lineage) -> Event[Any]:
        return new_event(
            payload, source=self._settings.events.source, now=self._now, lineage=lineage
        )

    async def on_alert(self, event: Event[Any]) -> RetrainDecision:
        data = event.data
        alert_id = getattr(data, "alert_id", None)
        model = getattr(data, "model", None)
        if alert_id is None or model is None:
            return RetrainDecision(False, f"{event.type} is not an alert")
        if not self._settings.retraining.enabled:
            return RetrainDecision(False, "retraining is off (WEIR_RETRAINING__ENABLED=false)")
        performance = isinstance(data, PerformanceAlert)
        persistent = performance and data.baseline is not None
        decision = self.policy.consider(
            event.type,
            alert_id,
            model,
            persistent=persistent,
            outcomes=data.outcomes if performance else None,
        )
        log.info("alert %s (%s) for %s: %s", alert_id, event.type, model, decision.reason)
        if decision.held:
            self._held[model] = event
        if decision.start:
            await self._start(event, model, alert_id)
        elif decision.answer:  # never dropped silently: a run event says why no run started
            lineage = Lineage(modelname=model, alertid=alert_id)
            answer = PipelineRunEvent(
                run_id=f"none-{alert_id}",
                model=model,
                status="not-started",
                pipeline=PIPELINE_NAME,
                alert_id=alert_id,
                reason=decision.reason,
            )
            await self._emit("pipeline-runs", self._event(answer, lineage))
        return decision

    async def _start(self, event: Event[Any], model: str, alert_id: str) -> None:
        run_id = f"run-{uuid.uuid4().hex[:12]}"
        lineage = Lineage(modelname=model, runid=run_id, alertid=alert_id)
        await self._emit(
            "pipeline-runs",
            self._event(
                PipelineRunEvent(
                    run_id=run_id,
                    model=model,
                    status="requested",
                    pipeline=PIPELINE_NAME,
                    alert_id=alert_id,
                ),
                lineage,
            ),
        )
        # the rows to train on are those labelled after the evidence: on the data's clock, not
        # the alert's, which is later by however far the insight roles run behind
        since = getattr(event.data, "evidence_until", None) or event.time or self._now()
        task = asyncio.create_task(self._run(model, run_id, alert_id, lineage, since))
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    async def _finish(self, model: str, *, promoted: bool) -> None:
        self.policy.finished(model, promoted=promoted)
        held = self._held.pop(model, None)
        if held is None:
            return
        alert_id = held.data.alert_id
        if promoted:
            log.info("dropping held alert %s: a new version of %s went live", alert_id, model)
            return
        log.info("held alert %s starts the next run for %s", alert_id, model)
        self.policy.start_held(model, getattr(held.data, "outcomes", None))
        await self._start(held, model, alert_id)

    async def _gather_rows(self, model: str, since: datetime) -> None:
        """Wait until ``collect_rows`` labelled rows from ``since`` on are in the archive.

        The new concept is only in the data after the alert: training right away
        would learn mostly the old one.
        """
        r = self._settings.retraining
        wanted = self.policy.rows_to_collect(model, r.collect_rows, r.window_rows)
        if wanted > r.collect_rows:
            log.info(
                "%d runs of %s in a row promoted nothing: gathering %d rows, not %d",
                self.policy.misses(model),
                model,
                wanted,
                r.collect_rows,
            )
        if self._gather is not None and wanted > 0:
            await self._gather(model, since, wanted)

    async def _run(
        self, model: str, run_id: str, alert_id: str, lineage: Lineage, since: datetime
    ) -> None:
        def run_event(status: str, **kw: Any) -> Event[Any]:
            payload = PipelineRunEvent(
                run_id=run_id,
                model=model,
                status=status,
                pipeline=PIPELINE_NAME,
                alert_id=alert_id,
                **kw,
            )
            return self._event(payload, lineage)

        promoted = False
        cancelled = False
        try:
            from connectors.pipeline import RetrainRequest, RetrainResult, run_retrain

            runner = self._run_pipeline or run_retrain
            await self._gather_rows(model, since)
            # what serves once the rows are in: while they were gathered an online learner
            # may have taken over, and a candidate must beat what it would replace
            active = await self._serving(model, run_id)
            await self._emit("pipeline-runs", run_event("started"))
            redone = ""
            for attempt in range(2):
                request = RetrainRequest(
                    model=model,
                    run_id=run_id,
                    # an online learner's route names its snapshot; the pipeline judges
                    # the learner by the answers it served (connectors.pipeline.evaluate)
                    current_version=active.registry_version if active else None,
                    alert_id=alert_id,
                    window_rows=self._settings.retraining.window_rows,
                    min_gain=self._settings.retraining.min_gain,
                    confidence=self._settings.retraining.promotion_confidence,
                    since=since,
                )
                result = await asyncio.to_thread(runner, self._settings, request)
                if result.status != "succeeded" or result.version is None:
                    break
                # the same question once the run is over: it may have beaten a version
                # that no longer serves (a learner's take-over while it trained). A
                # learner's newer snapshot is the same version going on learning.
                compared = active.version if active else None
                active = await self._serving(model, run_id)
                if (active.version if active else None) == compared:
                    break
                moved = (
                    f"{active.registry_version if active else 'no version'} began serving "
                    f"while candidate {result.version} was compared with {request.current_version}"
                )
                if attempt == 1:
                    result = RetrainResult(
                        status="not-promoted",
                        version=None,
                        metrics=result.metrics,
                        reason=f"{redone}; then {moved}: not promoted",
                        storage_uri=None,
                    )
                    break
                log.warning("run %s: %s; comparing again", run_id, moved)
                redone = f"compared again: {moved} (version {result.version} is not served)"
            if redone and not result.reason.startswith(redone):
                reason = f"{redone}. {result.reason}" if result.reason else redone
                result = replace(result, reason=reason)
            if result.status != "succeeded" or result.version is None:
                await self._emit(
                    "pipeline-runs",
                    run_event(result.status, metrics=result.metrics, reason=result.reason),
                )
                return
            url = await asyncio.to_thread(self._deployer.deploy, model, result.version)
            canary = self._settings.retraining.rollout == "canary" and active is not None
            change = ModelVersionEvent(
                action="canary" if canary else "activate",
                weight=self._settings.canary.initial_weight if canary else None,
                model=model,
                version=result.version,
                url=url,
                protocol="v1",
                storage_uri=result.storage_uri,
                features=self._features(model, result.version),
                metrics=result.metrics,
                run_id=run_id,
                alert_id=alert_id,
            )
            version_lineage = lineage.model_copy(update={"modelversion": result.version})
            for routed in change.implied():  # with the clear of a canary it replaces
                await self._emit("models", self._event(routed, version_lineage))
            promoted = True
            await self._emit(
                "pipeline-runs",
                run_event(
                    "succeeded",
                    produced_version=result.version,
                    metrics=result.metrics,
                    reason=result.reason,
                ),
            )
            await self._retire(model, result.version)
        except asyncio.CancelledError:  # the retrainer is stopping: start nothing new
            cancelled = True
            raise
        except Exception as exc:  # a failed run is reported, and the loop goes on
            log.exception("retraining run %s failed", run_id)
            await self._emit(
                "pipeline-runs", run_event("failed", reason=f"{type(exc).__name__}: {exc}")
            )
        finally:
            if cancelled:
                self.policy.finished(model, promoted=False)
            else:
                await self._finish(model, promoted=promoted)

    async def _retire(self, model: str, version: str) -> None:
        """Old servers no route points at are stopped once the new version is out; a
        failure to is logged (the servers stay), never the run's."""
        try:
            await asyncio.to_thread(self._deployer.retire_unrouted, model, besides=version)
        except Exception:
            log.exception("could not retire old versions of %s", model)

    async def _serving(self, model: str, run_id: str) -> Any:
        """The model's active route once every control event sent until now is folded."""
        if self._routes_folded is not None and not await self._routes_folded():
            log.warning("run %s: the routes may be behind the control topic", run_id)
        return self._routing.get(model).active

    async def on_verdict(self, event: Event[CanaryVerdict]) -> str:
        """Carry out a canary verdict as signed route events; what was done, or why not."""
        verdict = event.data
        changes = routes_for(verdict, self._routing.get(verdict.model))
        if isinstance(changes, str):
            log.info("canary verdict %s not carried out: %s", verdict.alert_id, changes)
            return changes
        lineage = Lineage(
            modelname=verdict.model, modelversion=verdict.version, alertid=verdict.alert_id
        )
        for change in changes:
            await self._emit("models", self._event(change, lineage))
        done = f"canary {verdict.version} {verdict.verdict}: {verdict.reason}"
        log.info("%s", done)
        return done

    def _features(self, model: str, version: str) -> list[str] | None:
        from connectors.minio_store import ObjectStore
        from connectors.registry import ModelRegistry

        registry = ModelRegistry(
            ObjectStore(self._settings.minio), self._settings.minio.models_bucket
        )
        return list(registry.card(model, version).features)

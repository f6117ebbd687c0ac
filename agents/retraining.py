"""Turning alerts into retraining runs, and successful runs into live model versions.

:class:`RetrainPolicy` decides (pure, clock injected): an alert of a trigger
type (performance alerts; feature-drift alerts too with
``WEIR_RETRAINING__DRIFT_STARTS_RUNS``, otherwise they inform and are logged)
starts a run unless its id was seen before (dedupe), a run for the model
is already under way (at most one at a time), or the model is cooling down:
``cooldown_s`` after a run that put a new version live, ``retry_after_s`` after
one that did not. An alert that arrives while a run is under way is held (the
newest one per model); if that run promotes nothing, the held alert starts the
next run as soon as it ends, so a false alarm just before a real drift cannot
hide the drift. If the run promoted a version, the held alert was about the
version it replaced and is dropped. :class:`Retrainer` carries a run out: it emits
``requested``/``started`` pipeline-run events, runs the Kubeflow pipeline off
the event loop, and on success deploys a model server for the new version,
publishes an ``activate`` model-version event (the control topic does the
rest) and a ``succeeded`` event; otherwise a ``not-promoted`` or ``failed``
event with the reason. Lineage (alert id → run id → version) travels in the
payloads and the CloudEvents extensions.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
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


@dataclass
class RetrainPolicy:
    cooldown_s: float
    retry_after_s: float = 0.0
    monotonic: Callable[[], float] = time.monotonic
    triggers: Iterable[str] = DEFAULT_TRIGGERS
    _seen: set[str] = field(default_factory=set)
    _running: set[str] = field(default_factory=set)
    _not_before: dict[str, float] = field(default_factory=dict)
    _retry_from: dict[str, float] = field(default_factory=dict)  # the shorter wait's end

    def consider(
        self, event_type: str, alert_id: str, model: str, *, persistent: bool = False
    ) -> RetrainDecision:
        """Whether this alert starts a run. A ``persistent`` alert (the model stayed degraded
        after a run promoted a version) waits only ``retry_after_s``, not ``cooldown_s``."""
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
        until = self._retry_from if persistent else self._not_before
        left = until.get(model, 0.0) - self.monotonic()
        if left > 0:
            return RetrainDecision(
                False, f"{model} is cooling down for {left:.0f}s more", answer=True
            )
        self._running.add(model)
        return RetrainDecision(True, f"alert {alert_id} starts a run for {model}")

    def finished(self, model: str, *, promoted: bool) -> None:
        self._running.discard(model)
        wait = self.cooldown_s if promoted else self.retry_after_s
        self._not_before[model] = self.monotonic() + wait
        self._retry_from[model] = self.monotonic() + self.retry_after_s

    def start_held(self, model: str) -> None:
        """A held alert starts the next run now (the run it waited for promoted nothing)."""
        self._running.add(model)

    def checkpoint(self) -> dict[str, Any]:
        """What survives a restart: handled alert ids and the time left to wait per model.

        Waits are stored as seconds left, not as monotonic deadlines, so they
        mean the same in a new process. A run under way does not survive.
        """
        now = self.monotonic()
        return {
            "seen": sorted(self._seen)[-SEEN_KEPT:],
            "wait_s": {m: t - now for m, t in self._not_before.items() if t > now},
            "retry_s": {m: t - now for m, t in self._retry_from.items() if t > now},
        }

    def restore(self, saved: dict[str, Any]) -> None:
        now = self.monotonic()
        self._seen = set(saved.get("seen", ()))
        self._not_before = {m: now + left for m, left in saved.get("wait_s", {}).items()}
        self._retry_from = {m: now + left for m, left in saved.get("retry_s", {}).items()}


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
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        self._settings = settings
        self._routing = routing
        self._deployer = deployer
        self._emit = emit
        self._run_pipeline = run_pipeline
        self.policy = policy or RetrainPolicy(
            cooldown_s=settings.retraining.cooldown_s,
            retry_after_s=settings.retraining.retry_after_s,
            triggers=DEFAULT_TRIGGERS if settings.retraining.drift_starts_runs else (PERFORMANCE,),
        )
        self._now = now
        self._gather = gather_rows
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
        persistent = isinstance(data, PerformanceAlert) and data.baseline is not None
        decision = self.policy.consider(event.type, alert_id, model, persistent=persistent)
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
        since = event.time or self._now()
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
        self.policy.start_held(model)
        await self._start(held, model, alert_id)

    async def _gather_rows(self, model: str, since: datetime) -> None:
        """Wait until ``collect_rows`` labelled rows from ``since`` on are in the archive.

        The new concept is only in the data after the alert: training right away
        would learn mostly the old one.
        """
        wanted = self._settings.retraining.collect_rows
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
            from connectors.pipeline import RetrainRequest, run_retrain

            runner = self._run_pipeline or run_retrain
            active = self._routing.get(model).active
            request = RetrainRequest(
                model=model,
                run_id=run_id,
                # an online learner's route: compared as the snapshot it serves now
                current_version=active.registry_version if active else None,
                alert_id=alert_id,
                window_rows=self._settings.retraining.window_rows,
                min_gain=self._settings.retraining.min_gain,
                confidence=self._settings.retraining.promotion_confidence,
                since=since,
            )
            await self._gather_rows(model, since)
            await self._emit("pipeline-runs", run_event("started"))
            result = await asyncio.to_thread(runner, self._settings, request)
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

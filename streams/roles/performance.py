"""The performance role: one error-rate detector per model version, over every worker.

Reads ``outcomes`` (prediction ⨝ label, keyed by model), so all outcomes of a
model land on one partition and one performance process sees the whole stream
of that model however many scoring workers produced it. Per version: an
error-rate drift detector (:class:`agents.detectors.ErrorRateMonitor`) →
performance alerts, and the rolling accuracy shown live. A version that
alerted is watched until it recovers: it is alerted on again every
``WEIR_MONITOR__PERFORMANCE_COOLDOWN`` outcomes while it stays degraded, so a
retraining run that promoted nothing gets a second chance. Detector state is
checkpointed (:mod:`streams.roles.state`). A feature-drift alert of the model
(on ``alerts``, from the monitor role) raises the watch level for
``WEIR_MONITOR__DRIFT_WATCH_OUTCOMES`` outcomes: a version whose accuracy over
a full window is then ``recovery_margin`` below its accuracy before is alerted
on at once ("confirmed after feature drift"), without waiting for its detector.

It also judges the model's canary (:class:`agents.canary.CanaryJudge`, with
``WEIR_CANARY__AUTO``): it folds the control topic to know which version is
active and which is on canary at what weight, counts both on live labels, and
sends a :class:`~schemas.CanaryVerdict` (step, promote or rollback, with the
evidence) to ``alerts``. The retrainer carries verdicts out as signed route
events; this role holds no signing key. The contest is checkpointed too.

Outcomes of the shadow route (``shadow: true``) get a rolling accuracy of their
own, shown beside the served versions as ``<version> (shadow)`` with the share
of its answers that equal the served ones (agreement), and raise no alert: a
shadow serves nobody. That accuracy is not checkpointed; it starts
again after a restart.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from typing import Any

from agents.canary import CanaryJudge
from agents.detectors import ErrorRateMonitor
from agents.routing import RoutingTable
from schemas import DriftAlert, Outcome, PerformanceAlert
from schemas.topics import Topic
from streams.context import RoleContext
from streams.roles.alerts import alert_id, send_alerts
from streams.roles.control import attach_control
from streams.roles.decode import decoded
from streams.roles.state import attach_state


def attach_performance(ctx: RoleContext) -> None:
    m, model = ctx.settings.monitor, ctx.settings.scoring.model
    state = {
        "errors": ErrorRateMonitor(
            kind=m.performance_detector,
            window=m.performance_window,
            cooldown=m.performance_cooldown,
            recovery_margin=m.recovery_margin,
        )
    }
    restored = attach_state(
        ctx, "errors", lambda: state["errors"], lambda e: state.update(errors=e)
    )
    judge = CanaryJudge(model, ctx.settings.canary)
    judged = attach_state(ctx, "canary", judge.checkpoint, judge.restore)
    routing = RoutingTable()
    attach_control(ctx, routing, emit=False)  # sets ctx.ready once it caught up
    shadows = ErrorRateMonitor(
        kind=m.performance_detector, window=m.performance_window, cooldown=m.performance_cooldown
    )
    agreed: dict[str, Counter[bool]] = defaultdict(Counter)  # shadow version → agrees counts

    def judge_canary(outcome: Outcome) -> Any:
        if not ctx.settings.canary.auto:
            return None
        judge.follow(routing.get(model))
        verdict = judge.update(outcome.version, outcome.correct)
        ctx.live.record_contest(judge.contest)
        return verdict

    if m.drift_watch_outcomes:

        @ctx.app.agent(ctx.topics[Topic.ALERTS])
        async def feature_drift(stream: Any) -> None:
            """A feature-drift alert of the model raises the watch level (see
            ``ErrorRateMonitor.watch_closely``); it starts nothing by itself."""
            await restored.wait()
            async for event in stream.events():
                found = decoded(ctx, event.message)
                drift = found.data if found is not None else None
                if isinstance(drift, DriftAlert) and drift.model == model:
                    state["errors"].watch_closely(m.drift_watch_outcomes)

    @ctx.app.agent(ctx.topics[Topic.OUTCOMES])
    async def performance(stream: Any) -> None:
        await restored.wait()
        await judged.wait()
        await ctx.ready.wait()  # the routes say which version is active, which on canary
        async for event in stream.events():
            found = decoded(ctx, event.message)
            if found is None or not isinstance(found.data, Outcome) or found.data.model != model:
                continue
            outcome, errors = found.data, state["errors"]
            if outcome.shadow:
                shadows.update(outcome.version, outcome.correct)
                if outcome.agrees is not None:
                    agreed[outcome.version][outcome.agrees] += 1
                counts = agreed[outcome.version]
                compared = counts[True] + counts[False]
                ctx.live.record_accuracy(
                    f"{outcome.version} (shadow)",
                    shadows.accuracy(outcome.version),
                    shadows.outcomes_seen(outcome.version),
                    agreement=counts[True] / compared if compared else None,
                )
                continue
            signal = errors.update(outcome.version, outcome.correct)
            ctx.live.record_accuracy(
                outcome.version,
                errors.accuracy(outcome.version),
                errors.outcomes_seen(outcome.version),
            )
            found_alerts: list[Any] = []
            if signal is not None:
                found_alerts.append(
                    PerformanceAlert(
                        alert_id=alert_id(),
                        model=model,
                        version=outcome.version,
                        metric="accuracy",
                        value=signal.accuracy,
                        window=signal.window,
                        detector=signal.detector,
                        baseline=signal.baseline,
                        outcomes=signal.model_outcomes,
                        evidence_until=outcome.labelled_at,
                    )
                )
            verdict = judge_canary(outcome)
            if verdict is not None:
                found_alerts.append(verdict)
            if found_alerts:
                await send_alerts(ctx, found_alerts)

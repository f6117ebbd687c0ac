"""The monitor role: feature drift and outliers on records, drift on predictions.

Its own consumer group over ``records`` and ``predictions``, so it may lag or
restart without holding scoring back. Per record: a river drift detector per
input feature and a half-space-trees outlier scorer (river's model, a batch's
records scored and learnt together: :mod:`agents.halfspace`); per prediction of the
role's model: a drift detector on the predicted value. Alerts go to
``alerts``. Both topics are read in batches through librdkafka
(:mod:`streams.roles.batches`), as scoring and feedback read theirs. Several
monitor processes split the partitions, each watching its share; one process
(the default) watches the whole stream. Detector state is checkpointed
(:mod:`streams.roles.state`).
"""

from __future__ import annotations

from typing import Any

from agents.detectors import StreamDriftMonitor
from agents.outliers import OutlierScorer, OutlierSignal
from schemas import Event, InputRecord, OutlierAlert, Prediction, RawMessage
from schemas.topics import Topic
from streams.context import RoleContext
from streams.roles.alerts import alert_id, drift_alert, send_alerts
from streams.roles.batches import attach_batches
from streams.roles.decode import decoded_batch
from streams.roles.state import attach_state

BATCH_SIZE = 500  # events per read; the monitor is not latency-bound
BATCH_WAIT_S = 0.1


def attach_monitor(ctx: RoleContext) -> None:
    m, model = ctx.settings.monitor, ctx.settings.scoring.model
    state: dict[str, Any] = {
        "features": StreamDriftMonitor(
            kind=m.drift_detector,
            cooldown=m.drift_cooldown,
            max_streams=m.max_tracked_features,
            scale_warmup=m.drift_scale_warmup,
        ),
        "outliers": OutlierScorer(threshold=m.outlier_threshold),
        "predictions": StreamDriftMonitor(
            kind=m.drift_detector, cooldown=m.drift_cooldown, scale_warmup=m.drift_scale_warmup
        ),
    }
    restored = attach_state(ctx, "detectors", lambda: state, state.update, marks_ready=True)

    def watch(found: Event[Any] | None, outlier: OutlierSignal | None) -> list[Any]:
        """The alerts one record (``outlier``: its outlier signal) or prediction raises
        (none for anything else)."""
        if found is None:
            return []
        data = found.data
        alerts: list[Any] = []
        if isinstance(data, InputRecord):
            for name, value in data.features.items():
                signal = state["features"].update(name, value)
                if signal is not None:
                    alerts.append(drift_alert(model, signal, at=found.time))
            if outlier is not None:
                alerts.append(
                    OutlierAlert(
                        alert_id=alert_id(),
                        model=model,
                        record_id=data.id,
                        score=outlier.score,
                        threshold=outlier.threshold,
                    )
                )
        elif (
            isinstance(data, Prediction)
            and data.model == model
            and isinstance(data.output, int | float)
        ):
            signal = state["predictions"].update("prediction", float(data.output))
            if signal is not None:
                alerts.append(drift_alert(model, signal, version=data.version, at=found.time))
        return alerts

    async def handle(batch: list[RawMessage]) -> None:
        events = decoded_batch(ctx, batch)
        is_record = [e is not None and isinstance(e.data, InputRecord) for e in events]
        records = [e.data for e, r in zip(events, is_record, strict=True) if r and e is not None]
        # the batch's records scored and learnt together (the same scores as one by one)
        checked = iter(state["outliers"].check_many([(r.id, r.features) for r in records]))
        outliers = [next(checked) if r else None for r in is_record]
        alerts = [a for e, o in zip(events, outliers, strict=True) for a in watch(e, o)]
        if alerts:
            await send_alerts(ctx, alerts)

    attach_batches(
        ctx,
        (Topic.RECORDS, Topic.PREDICTIONS),
        handle,
        size=BATCH_SIZE,
        wait_s=BATCH_WAIT_S,
        after=restored,
    )

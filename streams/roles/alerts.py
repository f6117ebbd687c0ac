"""Building and sending alerts, shared by the monitor and performance roles."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from agents.detectors import DriftSignal
from schemas import DriftAlert, Lineage, new_event
from schemas.topics import Topic
from streams.context import RoleContext


def alert_id() -> str:
    return f"alert-{uuid.uuid4().hex[:12]}"


def drift_alert(
    model: str, signal: DriftSignal, version: str | None = None, *, at: datetime | None = None
) -> DriftAlert:
    """The alert ``signal`` raises, on the record or prediction of time ``at``."""
    return DriftAlert(
        alert_id=alert_id(),
        model=model,
        version=version,
        stream=signal.stream,
        detector=signal.detector,
        records_seen=signal.records_seen,
        mean_before=signal.mean_before,
        mean_after=signal.mean_after,
        evidence_until=at,
    )


async def send_alerts(ctx: RoleContext, alerts: Sequence[Any]) -> None:
    """Send alerts about the role's model to the alerts topic and show them live."""
    source = ctx.settings.events.source
    lineage = Lineage(modelname=ctx.settings.scoring.model)
    events = [new_event(a, source=source, lineage=lineage) for a in alerts]
    await ctx.send_all([(Topic.ALERTS, e) for e in events])
    for event in events:
        ctx.live.record_event(event)

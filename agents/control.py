"""The control agent's core: model-version events in, routing state and decisions out.

Every worker reads the whole compacted control topic (no consumer group) and
folds it into its own :class:`~agents.routing.RoutingTable`, so a new model
goes live on all workers with no redeploy. Before a route is switched to a
new endpoint the endpoint must answer ready; otherwise the current route stays
and a rejected :class:`~schemas.RouteDecision` is emitted.

While replaying history at start-up each endpoint is probed once (old servers
may be gone) and no decisions are emitted; live events wait up to
``scoring.control_ready_timeout_s`` for the endpoint.
"""

from __future__ import annotations

import logging

from agents.routing import RoutingTable
from connectors.kserve_client import InferenceClient, ModelServerError
from schemas import (
    DeadLetter,
    Event,
    EventDecodeError,
    ModelVersionEvent,
    RawMessage,
    RouteDecision,
    decode_raw,
    new_event,
)
from schemas.events import Clock, utc_now
from schemas.settings import Settings

log = logging.getLogger("weir.control")


class Controller:
    def __init__(
        self,
        settings: Settings,
        routing: RoutingTable,
        client: InferenceClient,
        *,
        now: Clock = utc_now,
    ) -> None:
        self._settings = settings
        self.routing = routing
        self._client = client
        self._now = now

    async def _ready(self, event: ModelVersionEvent, *, replaying: bool) -> bool:
        if replaying:
            return await self._client.ready(event.url, event.model, event.protocol)
        try:
            await self._client.wait_ready(
                event.url,
                event.model,
                event.protocol,
                timeout_s=self._settings.scoring.control_ready_timeout_s,
            )
        except ModelServerError:
            return False
        return True

    async def handle(
        self, raw: RawMessage, *, replaying: bool
    ) -> Event[RouteDecision] | Event[DeadLetter] | None:
        """Fold one control message; returns the event to emit, if any."""
        try:
            event = decode_raw(raw, max_bytes=self._settings.events.max_bytes)
        except EventDecodeError as err:
            log.error("undecodable control message: %s", err)
            return new_event(
                DeadLetter.from_error(err), source=self._settings.events.source, now=self._now
            )
        if not isinstance(event.data, ModelVersionEvent):
            letter = DeadLetter.from_raw(
                raw,
                error_class="WrongTopic",
                event_id=event.id,
                reason=f"{event.type} on the control topic; expected io.weir.model.version.v1",
            )
            return new_event(letter, source=self._settings.events.source, now=self._now)
        change = event.data
        ready = await self._ready(change, replaying=replaying)
        decision = self.routing.apply(change, ready=ready)
        log.log(
            logging.INFO if decision.accepted else logging.WARNING,
            "%s %s %s -> %s: %s",
            change.action,
            change.model,
            change.version,
            "accepted" if decision.accepted else "rejected",
            decision.reason,
        )
        if replaying:
            return None
        payload = RouteDecision(
            model=change.model,
            action=change.action,
            version=change.version,
            url=change.url,
            accepted=decision.accepted,
            reason=decision.reason,
            active_version=decision.active_version,
            worker=self._settings.scoring.worker_id,
        )
        return new_event(
            payload, source=self._settings.events.source, now=self._now, lineage=event.lineage
        )

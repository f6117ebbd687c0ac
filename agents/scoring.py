"""The scoring agent's core: a batch of raw records in, predictions and dead letters out.

Framework-free so it is tested without a broker; the Faust agent in
``streams/roles/scoring.py`` feeds it micro-batches and acknowledges the records only
after everything it returned is stored in Kafka.

Per batch:

* every message is decoded; anything that is not an ``io.weir.record.v1``
  event becomes a dead letter with its raw bytes and the reason;
* each record is routed by the routing table *at that moment* (active route or
  its canary share) and the records of one route go to the server in one call;
* a server that is down or slow is retried with backoff (the client's own
  retries, then this loop's, without end): the records wait and are never
  skipped. Routes are looked up again before every retry, so a hot swap during
  an outage takes effect at once. A record with no route waits the same way;
* a server that rejects a batch (4xx, a malformed answer) dead-letters that
  batch's records, with the server's reason.
"""

from __future__ import annotations

import asyncio
import logging
from collections import Counter, defaultdict
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from agents.routing import Route, RoutingTable
from connectors.kserve_client import InferenceClient, ModelServerError
from connectors.predictor import rows_from_features
from schemas import (
    DeadLetter,
    Event,
    EventDecodeError,
    InputRecord,
    Lineage,
    Prediction,
    RawMessage,
    decode_raw,
    new_event,
)
from schemas.events import Clock, utc_now
from schemas.settings import Settings

log = logging.getLogger("weir.scoring")

Sleep = Callable[[float], Awaitable[None]]


@dataclass
class BatchOutcome:
    predictions: list[Event[Prediction]] = field(default_factory=list)
    dead_letters: list[Event[DeadLetter]] = field(default_factory=list)
    by_version: Counter[str] = field(default_factory=Counter)
    retries: int = 0


@dataclass
class _Pending:
    raw: RawMessage
    event: Event[InputRecord]
    attempts: int = 0


class Scorer:
    def __init__(
        self,
        settings: Settings,
        routing: RoutingTable,
        client: InferenceClient,
        *,
        now: Clock = utc_now,
        sleep: Sleep = asyncio.sleep,
    ) -> None:
        self._settings = settings
        self._routing = routing
        self._client = client
        self._now = now
        self._sleep = sleep
        self.model = settings.scoring.model

    def _dead(self, raw: RawMessage, error_class: str, reason: str, **kw: Any) -> Event[DeadLetter]:
        letter = DeadLetter.from_raw(raw, error_class=error_class, reason=reason, **kw)
        return new_event(letter, source=self._settings.events.source, now=self._now)

    def _decode(self, messages: Sequence[RawMessage], outcome: BatchOutcome) -> list[_Pending]:
        pending = []
        for raw in messages:
            try:
                event = decode_raw(raw, max_bytes=self._settings.events.max_bytes)
            except EventDecodeError as err:
                outcome.dead_letters.append(
                    new_event(
                        DeadLetter.from_error(err),
                        source=self._settings.events.source,
                        now=self._now,
                    )
                )
                continue
            if not isinstance(event.data, InputRecord):
                outcome.dead_letters.append(
                    self._dead(
                        raw,
                        "WrongTopic",
                        f"{event.type} event on the records topic; expected io.weir.record.v1",
                        event_id=event.id,
                    )
                )
                continue
            pending.append(_Pending(raw, event))
        return pending

    async def score(self, messages: Sequence[RawMessage]) -> BatchOutcome:
        """Score one micro-batch. Returns only when every record is predicted or dead-lettered."""
        outcome = BatchOutcome()
        pending = self._decode(messages, outcome)
        delay = self._settings.scoring.backoff_initial_s
        while pending:
            groups: dict[Route, list[_Pending]] = defaultdict(list)
            waiting: list[_Pending] = []
            for item in pending:
                route = self._routing.route(self.model, item.event.data.id)
                (groups[route] if route is not None else waiting).append(item)
            if waiting:
                log.warning("no route for model %s yet; %d records wait", self.model, len(waiting))
            for route, items in groups.items():
                waiting.extend(await self._score_group(route, items, outcome))
            pending = waiting
            if pending:
                outcome.retries += 1
                await self._sleep(delay)
                delay = min(delay * 2, self._settings.scoring.backoff_max_s)
        return outcome

    async def _score_group(
        self, route: Route, items: list[_Pending], outcome: BatchOutcome
    ) -> list[_Pending]:
        """Score the records of one route; returns those that must wait and retry."""
        features = route.features or tuple(sorted(items[0].event.data.features))
        ok: list[_Pending] = []
        rows = []
        for item in items:
            try:
                rows.append(rows_from_features(features, [item.event.data.features])[0])
                ok.append(item)
            except ValueError as err:
                outcome.dead_letters.append(
                    self._dead(
                        item.raw,
                        "SchemaViolation",
                        f"record does not fit {route.model} {route.version}: {err}",
                        event_id=item.event.id,
                    )
                )
        if not ok:
            return []
        for item in ok:
            item.attempts += 1
        try:
            result = await self._client.predict(route.url, route.model, route.protocol, rows)
        except ModelServerError as err:
            if err.retriable:
                log.warning("%s; %d records wait and retry", err, len(ok))
                return ok
            for item in ok:
                outcome.dead_letters.append(
                    self._dead(
                        item.raw,
                        "ModelServerRejected",
                        str(err),
                        attempts=item.attempts,
                        event_id=item.event.id,
                    )
                )
            return []
        lineage = Lineage(modelname=route.model, modelversion=route.version, runid=route.run_id)
        per_row_ms = result.latency_ms
        at = self._now()  # one timestamp per model call: these predictions were made together
        for i, item in enumerate(ok):
            prediction = Prediction(
                record_id=item.event.data.id,
                model=route.model,
                version=route.version,
                url=route.url,
                output=result.labels[i],
                scores=result.probabilities[i] if result.probabilities else None,
                latency_ms=per_row_ms,
            )
            outcome.predictions.append(
                new_event(
                    prediction, source=self._settings.events.source, now=lambda: at, lineage=lineage
                )
            )
        outcome.by_version[route.version] += len(ok)
        return []

"""The scoring agent's core: a batch of raw records in, predictions and dead letters out.

Framework-free so it is tested without a broker; the scoring role
(``streams/roles/scoring.py``) feeds it micro-batches and acknowledges the
records only after everything it returned is stored in Kafka.

Per batch:

* every message is decoded; anything that is not an ``io.weir.record.v1``
  event becomes a dead letter with its raw bytes and the reason;
* each record is routed by the routing table *at that moment* (active route or
  its canary share) and the records of one route go to the server in one call;
  a model with a speculative route is scored by it first (``agents.speculation``),
  and only the records none of its members answered within the deadline go on
  to the active route;
* a server that is **unavailable** — no answer, a timeout, 408/425/429/502/503/504
  — is retried with backoff without end (the client's own retries, then this
  loop's): the records wait and are never skipped. Routes are looked up again
  before every retry, so a hot swap during an outage takes effect at once. A
  record with no route waits the same way;
* a server that **answers with an error** — 500, another 4xx, a malformed body —
  may be failing on one input, so the batch is split in halves until the records
  that fail are alone; the rest are scored at once. A record that fails alone is
  tried again with backoff (500) up to ``WEIR_SCORING__RECORD_ATTEMPTS`` calls, a
  4xx or malformed answer is final, and then it is dead-lettered with the
  server's reason: one poison record never holds its partition longer than that;
* an answer row that is not a valid prediction (a null, NaN or list label, a
  NaN probability) dead-letters that record alone.
"""

from __future__ import annotations

import asyncio
import logging
from collections import Counter, defaultdict
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from pydantic import ValidationError

from agents.letters import dead_letter
from agents.predictions import (
    CallPredictions,
    prediction_events,
    prediction_of,
    route_lineage,
    route_rows,
)
from agents.routing import ModelRoutes, Route, RoutingTable, Speculation
from agents.shadow import ShadowMirror
from agents.speculation import Speculator
from connectors.dead_letters import OversizeStore
from connectors.kserve_client import InferenceClient, InferenceResult, ModelServerError
from schemas import (
    DeadLetter,
    Event,
    EventDecodeError,
    InputRecord,
    KafkaRecord,
    Lineage,
    Prediction,
    RawMessage,
    decode_many,
    new_event,
    to_kafka,
)
from schemas.binding import Mode
from schemas.events import Clock, utc_now
from schemas.settings import Settings

log = logging.getLogger("weir.scoring")

Sleep = Callable[[float], Awaitable[None]]


@dataclass
class BatchOutcome:
    dead_letters: list[Event[DeadLetter]] = field(default_factory=list)
    by_version: Counter[str] = field(default_factory=Counter)
    retries: int = 0
    # dead letters cut to the inline limit, with their whole raw values (for the OversizeStore)
    oversized: list[tuple[int, bytes]] = field(default_factory=list)
    # predictions per (model, version, the call's latency in ms): one entry a model call
    calls: Counter[tuple[str, str, float]] = field(default_factory=Counter)
    # the predictions, as made: a model call's at once (CallPredictions), or one by one
    made: list[Sequence[Event[Prediction]]] = field(default_factory=list)

    def add_call(self, made: Sequence[Event[Prediction]]) -> None:
        """The predictions of one model call (which share model, version and latency)."""
        if made:
            first = made[0].data
            self.calls[(first.model, first.version, first.latency_ms)] += len(made)
            self.by_version[first.version] += len(made)
            self.made.append(made)

    @property
    def predictions(self) -> list[Event[Prediction]]:
        return [event for made in self.made for event in made]

    def prediction_records(self, mode: Mode = "binary") -> list[KafkaRecord]:
        """The predictions as Kafka records, in order (a model call's at once, when it can)."""
        out: list[KafkaRecord] = []
        for made in self.made:
            if mode == "binary" and isinstance(made, CallPredictions):
                out.extend(made.kafka_records())
            else:
                out.extend(to_kafka(event, mode=mode) for event in made)
        return out


@dataclass
class _Pending:
    raw: RawMessage
    event: Event[InputRecord]
    attempts: int = 0  # model calls that included this record
    failures: int = 0  # calls that failed with this record alone


class Scorer:
    def __init__(
        self,
        settings: Settings,
        routing: RoutingTable,
        client: InferenceClient,
        *,
        now: Clock = utc_now,
        sleep: Sleep = asyncio.sleep,
        oversize: OversizeStore | None = None,
        shadow: ShadowMirror | None = None,
        speculator: Speculator | None = None,
    ) -> None:
        self._settings = settings
        self._shadow = shadow
        self._speculator = speculator or Speculator(client)
        self._routing = routing
        self._client = client
        self._now = now
        self._sleep = sleep
        self._oversize = oversize
        self.model = settings.scoring.model
        self._under_way: list[tuple[ModelRoutes, asyncio.Future[None]]] = []  # batches being scored

    def _dead(
        self,
        outcome: BatchOutcome,
        raw: RawMessage,
        error_class: str,
        reason: str,
        **kw: Any,
    ) -> None:
        letter = dead_letter(self._settings, raw, error_class, reason, now=self._now, **kw)
        if letter.data.raw_truncated:
            outcome.oversized.append((len(outcome.dead_letters), raw.value))
        outcome.dead_letters.append(letter)

    def _decode(self, messages: Sequence[RawMessage], outcome: BatchOutcome) -> list[_Pending]:
        pending = []
        decoded = decode_many(messages, max_bytes=self._settings.events.max_bytes)
        for raw, event in zip(messages, decoded, strict=True):
            if isinstance(event, EventDecodeError):
                err = event
                self._dead(outcome, err.raw, err.error_class, err.reason, event_id=err.event_id)
                continue
            if not isinstance(event.data, InputRecord):
                self._dead(
                    outcome,
                    raw,
                    "WrongTopic",
                    f"{event.type} event on the records topic; expected io.weir.record.v1",
                    event_id=event.id,
                )
                continue
            pending.append(_Pending(raw, event))
        return pending

    async def _store_oversized(self, outcome: BatchOutcome) -> None:
        """Keep the whole values of cut dead letters in MinIO, when it answers."""
        if self._oversize is None:
            return
        for index, value in outcome.oversized:
            outcome.dead_letters[index] = await self._oversize.complete(
                outcome.dead_letters[index], value
            )

    async def score(self, messages: Sequence[RawMessage]) -> BatchOutcome:
        """Score one micro-batch. Returns only when every record is predicted or dead-lettered."""
        outcome = BatchOutcome()
        pending = self._decode(messages, outcome)
        routes = await self._routes_settled()
        finished: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        under_way = (routes, finished)
        self._under_way.append(under_way)
        try:
            return await self._score(pending, outcome)
        finally:
            self._under_way.remove(under_way)
            finished.set_result(None)

    async def _routes_settled(self) -> ModelRoutes:
        """The model's routes, once no batch begun under other routes is still under way.

        The role scores batches at once (the next while a model call is out); a batch
        that finds the routes changed — a swap, a canary share — waits for the earlier
        batches first, so once a new version has answered the old one answers no more.
        """
        while True:
            routes = self._routing.get(self.model)
            earlier = [done for seen, done in self._under_way if seen != routes]
            if not earlier:
                return routes
            await asyncio.wait(earlier)

    async def _score(self, pending: list[_Pending], outcome: BatchOutcome) -> BatchOutcome:
        if self._shadow is not None:  # off the active path: a task of its own, bounded
            self._shadow.mirror([item.event for item in pending])
        speculative = self._routing.get(self.model).speculative
        if speculative is not None and pending:
            pending = await self._speculate(speculative, pending, outcome)
        delay = self._settings.scoring.backoff_initial_s
        while pending:
            groups: dict[Route, list[_Pending]] = defaultdict(list)
            waiting: list[_Pending] = []
            routes = self._routing.split(self.model, [item.event.data.id for item in pending])
            first = routes[0] if routes else None
            if first is not None and all(r is first for r in routes):  # one route, no canary
                groups[first] = pending
            else:
                for item, route in zip(pending, routes, strict=True):
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
        await self._store_oversized(outcome)
        return outcome

    async def _speculate(
        self, spec: Speculation, pending: list[_Pending], outcome: BatchOutcome
    ) -> list[_Pending]:
        """Score by the speculative route; returns the records no member answered in time."""
        decided = await self._speculator.score(
            spec,
            [item.event.data.id for item in pending],
            [item.event.data.features for item in pending],
        )
        at = self._now()
        source = self._settings.events.source
        rest = []
        for item, prediction in zip(pending, decided, strict=True):
            if prediction is None:
                rest.append(item)
                continue
            lineage = Lineage(modelname=prediction.model, modelversion=prediction.version)
            made = new_event(prediction, source=source, now=lambda: at, lineage=lineage)
            outcome.add_call([made])
        if rest:
            log.warning(
                "no member of speculative route %s answered %d records within %.0f ms; "
                "they go to the active route",
                spec.name,
                len(rest),
                spec.deadline_s * 1000,
            )
        return rest

    async def _score_group(
        self, route: Route, items: list[_Pending], outcome: BatchOutcome
    ) -> list[_Pending]:
        """Score the records of one route; returns those that must wait and retry."""
        ok: list[_Pending] = []
        rows = []
        fitted = route_rows(route, [item.event.data.features for item in items])
        for item, row in zip(items, fitted, strict=True):
            if isinstance(row, ValueError):
                self._dead(
                    outcome,
                    item.raw,
                    "SchemaViolation",
                    f"record does not fit {route.model} {route.version}: {row}",
                    event_id=item.event.id,
                )
            else:
                rows.append(row)
                ok.append(item)
        return await self._call(route, ok, rows, outcome) if ok else []

    async def _call(
        self, route: Route, items: list[_Pending], rows: list[Any], outcome: BatchOutcome
    ) -> list[_Pending]:
        """One model call for ``items``; on an error answer, split to find the records at fault."""
        for item in items:
            item.attempts += 1
        try:
            result = await self._client.predict(route.url, route.model, route.protocol, rows)
        except ModelServerError as err:
            if err.unavailable:
                log.warning("%s; %d records wait and retry", err, len(items))
                return items
            if len(items) > 1:
                half = len(items) // 2
                return await self._call(
                    route, items[:half], rows[:half], outcome
                ) + await self._call(route, items[half:], rows[half:], outcome)
            item = items[0]
            item.failures += 1
            if err.retriable and item.failures < self._settings.scoring.record_attempts:
                return items
            self._dead(
                outcome,
                item.raw,
                "ModelServerRejected" if not err.retriable else "ModelServerFailed",
                f"{err} (record {item.event.data.id}, {item.failures} failed calls alone)",
                attempts=item.attempts,
                event_id=item.event.id,
            )
            log.warning("record %s dead-lettered: %s", item.event.data.id, err)
            return []
        self._predictions(route, items, result, outcome)
        return []

    def _predictions(
        self, route: Route, items: list[_Pending], result: InferenceResult, outcome: BatchOutcome
    ) -> None:
        lineage = route_lineage(route)
        at = self._now()  # one timestamp per model call: these predictions were made together
        source = self._settings.events.source
        ids = [item.event.data.id for item in items]
        made = prediction_events(route, ids, result, source=source, at=at, lineage=lineage)
        if made is not None:
            outcome.add_call(made)
            return
        kept = []  # some answer is not a valid prediction: row by row, to say which
        for i, item in enumerate(items):
            try:
                prediction = prediction_of(route, item.event.data.id, result, i)
            except ValidationError as err:
                self._dead(
                    outcome,
                    item.raw,
                    "ModelAnswerInvalid",
                    f"{route.model} {route.version} at {route.url} answered "
                    f"{result.labels[i]!r} for record {item.event.data.id}: "
                    + "; ".join(e["msg"] for e in err.errors()[:3]),
                    attempts=item.attempts,
                    event_id=item.event.id,
                )
                continue
            kept.append(new_event(prediction, source=source, now=lambda: at, lineage=lineage))
        outcome.add_call(kept)

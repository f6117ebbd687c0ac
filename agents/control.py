"""The control agent's core: model-version events in, routing state and decisions out.

Every worker reads the whole compacted control topic (no consumer group) and
folds it into its own :class:`~agents.routing.RoutingTable`, so a new model
goes live on all workers with no redeploy. Before a route is switched to a
new endpoint the endpoint must answer ready and the route must carry the
feature order the model expects; otherwise the current route stays and a
rejected :class:`~schemas.RouteDecision` is emitted. A clear needs neither.

While replaying history at start-up each endpoint is probed once (old servers
may be gone) and nothing is emitted. A replayed route whose endpoint is not
ready is held and probed again by :meth:`Controller.recheck` until it is ready
(then applied, with a decision saying so) or a newer event of its slot
replaces it. Live events wait up to ``scoring.control_ready_timeout_s`` for
the endpoint.

**Who may change a route.** With ``WEIR_CONTROL__REQUIRE_SIGNATURES`` (the
default) an event must carry a valid signature by an accepted key
(:class:`~connectors.signing.Verifier`); it must not be older than the event
last applied to its slot (a replayed old event, or the same one again); and
its URL's host must match ``WEIR_CONTROL__ALLOWED_HOSTS`` (an embedded
route has no host: the registry version its url names is loaded in-process); and its version
must be in the registry, with a signed card whose features are the route's
(:class:`RegistryCheck`). Otherwise it is refused with a route decision saying
why, and the current route stays. The registry is asked once per version, each
time bounded; while MinIO does not answer, a route is accepted on its signature
alone and its decision says the registry was not checked.

A control message that does not decode cannot crash the fold: live, it is
dead-lettered (cut to the inline limit, the whole value kept in MinIO when it
answers) under an event id derived from its topic, partition and offset, so
the workers that all read it report it under one id; in a replay it was
reported when it arrived and is only counted (``skipped``).
"""

from __future__ import annotations

import fnmatch
import logging
from dataclasses import dataclass
from datetime import datetime
from urllib.parse import urlsplit

from agents.letters import dead_letter
from agents.routing import RoutingTable
from connectors.bounded import Bounded
from connectors.dead_letters import OversizeStore
from connectors.kserve_client import InferenceClient, ModelServerError
from connectors.minio_store import ObjectNotFound
from connectors.registry import ArtifactRefused, ModelRegistry
from connectors.signing import Verifier
from schemas import (
    DeadLetter,
    Event,
    EventDecodeError,
    Lineage,
    ModelVersionEvent,
    RawMessage,
    RouteDecision,
    ServiceError,
    decode_raw,
    new_event,
)
from schemas.events import Clock, utc_now
from schemas.payloads import CLEARS, embedded_target
from schemas.settings import Settings

log = logging.getLogger("weir.control")


@dataclass(frozen=True)
class _Held:
    event: Event[ModelVersionEvent]


class RouteGate:
    """Who may change a route: the checks every fold of the control topic applies.

    Signature (when required), not older than the event last applied to its
    slot, URL host on the allow-list, a feature order. Used by the workers'
    :class:`Controller` and by the CLI's and model host's fold
    (:func:`streams.routes.fold_routes`), so both see the same routes.
    """

    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        self._verifier = Verifier(settings) if settings.control.require_signatures else None
        # (model, slot) → (time, id) of the event last applied to the slot
        self.applied: dict[tuple[str, str], tuple[datetime, str]] = {}

    @property
    def open(self) -> bool:
        """Signatures are not required: anyone who can write the topic changes routes."""
        return self._verifier is None

    def refusal(self, event: Event[ModelVersionEvent]) -> str | None:
        """Why this route change may not be acted on at all, or None."""
        change = event.data
        if self._verifier is not None:
            problem = self._verifier.problem(event)
            if problem is not None:
                return problem
        last = self.applied.get((change.model, change.slot))
        if (
            last is not None
            and event.time is not None
            and (event.time < last[0] or (event.time == last[0] and event.id == last[1]))
        ):
            return (
                f"replayed: event {event.id} of {event.time.isoformat()} is not newer than "
                f"event {last[1]} of {last[0].isoformat()} already applied to this route"
            )
        for version, url, protocol, features in change.targets:
            host = urlsplit(url).hostname or ""
            allowed = self._settings.control.allowed_hosts
            # an embedded route reaches no host: the scoring process loads a signed
            # registry version (checked by RegistryCheck and again when it is loaded)
            if protocol != "embedded" and not any(
                fnmatch.fnmatch(host, pattern) for pattern in allowed
            ):
                return (
                    f"url host {host!r} is not in WEIR_CONTROL__ALLOWED_HOSTS "
                    f"({', '.join(allowed)})"
                )
            if not features:
                return (
                    f"the route to version {version} names no feature order (`features`); "
                    "`weir models publish` takes it from the model card"
                )
        return None

    def applied_now(self, event: Event[ModelVersionEvent]) -> None:
        """Record that ``event`` changed its slot: older ones are replays from now on."""
        if event.time is not None:
            self.applied[(event.data.model, event.data.slot)] = (event.time, event.id)


class RegistryCheck:
    """Is a route's version in the registry, with a valid card declaring the route's
    features? Positive answers are kept (a published version does not change)."""

    def __init__(self, registry: ModelRegistry) -> None:
        self._registry = registry
        self._known: set[tuple[str, str, tuple[str, ...]]] = set()

    @classmethod
    def for_settings(cls, settings: Settings) -> RegistryCheck | None:
        """The check the settings ask for (WEIR_CONTROL__CHECK_REGISTRY), or None."""
        if not settings.control.check_registry:
            return None
        return cls(ModelRegistry.for_settings(settings.as_model_reader()))  # it only reads

    def problem(self, change: ModelVersionEvent) -> str | None:
        """Why the registry refuses this route, or None; raises ServiceError when it cannot
        be asked (MinIO away)."""
        for version, url, protocol, named in change.targets:
            # an embedded route: the snapshot its url names. Snapshots come and go (one
            # every few hundred outcomes), so they are not remembered: the set would only grow
            embedded = protocol == "embedded"
            if embedded:
                version = embedded_target(url)[1]
            problem = self._version_problem(
                change.model, version, tuple(named or ()), remember=not embedded
            )
            if problem is not None:
                return problem
        return None

    def _version_problem(
        self, model: str, version: str, features: tuple[str, ...], *, remember: bool
    ) -> str | None:
        key = (model, version, features)
        if key in self._known:
            return None
        try:
            card = self._registry.checked_card(model, version)
        except ObjectNotFound:
            # a learner's snapshot pruned since its route was sent: the newest of the same
            # learner stands in (as the scoring workers load it); else it is not there
            newer = None if remember else self._registry.newer_snapshot(model, version)
            if newer is not None:
                return self._version_problem(model, newer, features, remember=False)
            return (
                f"version {version} of {model} is not in the registry "
                f"({self._registry.uri(model, version)} has no model card)"
            )
        except ArtifactRefused as err:
            return f"the registry refuses it: {err}"
        if tuple(card.features) != features:
            return (
                f"the route's features {list(features)} are not the model card's "
                f"{list(card.features)}"
            )
        if remember:
            self._known.add(key)
        return None


class Controller:
    def __init__(
        self,
        settings: Settings,
        routing: RoutingTable,
        client: InferenceClient,
        *,
        now: Clock = utc_now,
        oversize: OversizeStore | None = None,
        registry: RegistryCheck | None = None,
        minio: Bounded | None = None,
    ) -> None:
        self._settings = settings
        self._registry = registry
        self._minio = minio or Bounded(settings.events.dead_letter_store_timeout_s)
        self.routing = routing
        self._client = client
        self._now = now
        self._oversize = oversize
        self.held: dict[tuple[str, str], _Held] = {}  # (model, slot) → replayed, not ready yet
        self.skipped = 0  # undecodable messages met in a replay
        self.gate = RouteGate(settings)
        if self.gate.open:
            log.warning(
                "WEIR_CONTROL__REQUIRE_SIGNATURES is off: anyone who can write the "
                "control topic can change routes"
            )

    async def _ready(self, event: ModelVersionEvent, *, replaying: bool) -> bool:
        """Whether every server the route sends records to answers ready (a clear: yes)."""
        for _version, url, protocol, _features in event.targets:
            if replaying:
                if not await self._client.ready(url, event.model, protocol):
                    return False
                continue
            try:
                await self._client.wait_ready(
                    url,
                    event.model,
                    protocol,
                    timeout_s=self._settings.scoring.control_ready_timeout_s,
                )
            except ModelServerError:
                return False
        return True

    async def _dead(
        self, raw: RawMessage, error_class: str, reason: str, event_id: str | None
    ) -> Event[DeadLetter]:
        o = raw.origin
        out = dead_letter(
            self._settings,
            raw,
            error_class,
            reason,
            now=self._now,
            event_id=event_id,
            letter_id=f"deadletter:{o.topic}:{o.partition}:{o.offset}",
        )
        if self._oversize is None:
            return out
        return await self._oversize.complete(out, raw.value)

    async def handle(
        self, raw: RawMessage, *, replaying: bool
    ) -> Event[RouteDecision] | Event[DeadLetter] | None:
        """Fold one control message; returns the event to emit, if any."""
        try:
            event = decode_raw(raw, max_bytes=self._settings.events.max_bytes)
        except EventDecodeError as err:
            if replaying:
                self.skipped += 1
                return None
            log.error("undecodable control message: %s", err.reason[:300])
            return await self._dead(err.raw, err.error_class, err.reason, err.event_id)
        if not isinstance(event.data, ModelVersionEvent):
            if replaying:
                self.skipped += 1
                return None
            return await self._dead(
                raw,
                "WrongTopic",
                f"{event.type} on the control topic; expected io.weir.model.version.v1",
                event.id,
            )
        change = event.data
        refusal = self.gate.refusal(event)
        unchecked = ""
        if refusal is None:
            refusal, unchecked = await self._registry_refusal(change)
        if refusal is not None:
            decision = self.routing.reject(change, refusal)
        else:
            self.held.pop((change.model, change.slot), None)  # a newer event of its slot decides
            # an idle refresh asks no server (an embedded snapshot would load for nothing)
            idle = self.routing.idle_refresh(change)
            ready = idle or await self._ready(change, replaying=replaying)
            decision = self.routing.apply(change, ready=ready)
            if decision.accepted:
                self.gate.applied_now(event)
            if replaying and not ready:
                self.held[(change.model, change.slot)] = _Held(event)
        reason = decision.reason + unchecked
        self._log(change, decision.accepted, reason)
        if replaying:
            return None
        return self._decision(change, decision.accepted, reason, event.lineage)

    async def _registry_refusal(self, change: ModelVersionEvent) -> tuple[str | None, str]:
        """The registry's refusal of ``change`` (or None), and a note when it was not asked."""
        if self._registry is None or change.action in CLEARS:
            return None, ""
        note = "; registry not checked: MinIO did not answer (accepted on its signature)"
        if self._minio.paused:
            return None, note
        try:
            return await self._minio.call(self._registry.problem, change), ""
        except (ServiceError, TimeoutError) as err:
            log.warning("registry check of %s %s skipped: %s", change.model, change.version, err)
            return None, note

    async def recheck(self) -> list[Event[RouteDecision]]:
        """Probe the replayed routes that were not ready; apply those that are now."""
        out = []
        for key, held in list(self.held.items()):
            change = held.event.data
            if not await self._ready(change, replaying=True):
                continue
            del self.held[key]
            decision = self.routing.apply(change, ready=True)
            if decision.accepted:
                self.gate.applied_now(held.event)
            reason = f"{decision.reason} (replayed route, ready now)"
            self._log(change, decision.accepted, reason)
            out.append(self._decision(change, decision.accepted, reason, held.event.lineage))
        return out

    def _log(self, change: ModelVersionEvent, accepted: bool, reason: str) -> None:
        # the action in the format, not an argument: the log's rate limit counts repeats
        # by format, and three refused shadows must not silence a refused activate
        log.log(
            logging.INFO if accepted else logging.WARNING,
            change.action + " %s %s -> %s: %s",
            change.model,
            change.version,
            "accepted" if accepted else "rejected",
            reason,
        )

    def _decision(
        self, change: ModelVersionEvent, accepted: bool, reason: str, lineage: Lineage
    ) -> Event[RouteDecision]:
        routes = self.routing.get(change.model)
        payload = RouteDecision(
            model=change.model,
            action=change.action,
            version=change.version,
            url=change.url,
            accepted=accepted,
            reason=reason,
            active_version=routes.active.version if routes.active else None,
            worker=self._settings.scoring.worker_id,
        )
        return new_event(
            payload, source=self._settings.events.source, now=self._now, lineage=lineage
        )

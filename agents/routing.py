"""Routing state: which URL serves which model version. Pure logic, no I/O.

The control agent folds model-version events into a :class:`RoutingTable`;
the scoring agent asks it, per record, where to send the record. The table
changes only through :meth:`RoutingTable.apply`, so every worker that reads
the same compacted control topic ends with the same routes.

Per model it keeps the active route, the history of earlier active routes
(for rollback), an optional canary with a weight, and an optional shadow.
Each slot changes only through the events of its own key on the control topic
(see :class:`~schemas.ModelVersionEvent`), and a ``refresh`` only moves the
url of a version a slot already holds; the topic has one partition, whose
order compaction keeps, so a table folded from the compacted topic equals the
live workers' table.
A canary split is decided by a stable hash of the record id, so a record is
routed the same way on every worker and on every retry; a canary of the active
version serves nothing.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from schemas import ModelVersionEvent
from schemas.payloads import CLEARS, RouteProtocol, embedded_target

Protocol = RouteProtocol


@dataclass(frozen=True)
class Route:
    model: str
    version: str
    url: str
    protocol: Protocol
    features: tuple[str, ...] | None = None
    run_id: str | None = None

    @property
    def registry_version(self) -> str:
        """The registry version behind this route: an embedded route's snapshot, else its
        version."""
        return embedded_target(self.url)[1] if self.protocol == "embedded" else self.version


@dataclass(frozen=True)
class Speculation:
    """Several routes called at once for every record; what answered within the deadline
    is decided by ``decider`` (``agents.speculation``)."""

    name: str
    members: tuple[Route, ...]
    deadline_s: float
    decider: str


@dataclass(frozen=True)
class ModelRoutes:
    active: Route | None = None
    history: tuple[Route, ...] = ()
    canary: Route | None = None
    canary_weight: float = 0.0
    shadow: Route | None = None
    speculative: Speculation | None = None

    @property
    def serving_canary(self) -> Route | None:
        """The canary, unless it is the active version (promoted, its clear not seen yet)."""
        canary = self.canary
        if canary is None or (self.active is not None and canary.version == self.active.version):
            return None
        return canary

    def slots_of(self, version: str) -> list[str]:
        """The slots that send records to ``version`` now: active, canary, shadow,
        speculative (a server behind any of them must keep running)."""
        members = self.speculative.members if self.speculative is not None else ()
        slots = {
            "active": (self.active,),
            "canary": (self.serving_canary,),
            "shadow": (self.shadow,),
            "speculative": members,
        }
        return [
            slot
            for slot, routes in slots.items()
            if any(r is not None and r.version == version for r in routes)
        ]


def retirable(
    served: Iterable[str], routes: ModelRoutes, order: Sequence[str], *, keep: int, besides: str
) -> list[str]:
    """Which of a model's ``served`` versions to stop, oldest first: those no slot of
    ``routes`` points at, but the newest ``keep`` of them (by ``order``, the registry's,
    oldest first: what a rollback goes back to) and ``besides`` (just deployed: its route is
    on its way)."""
    unrouted = [v for v in dict.fromkeys(served) if v != besides and not routes.slots_of(v)]
    unrouted.sort(key=lambda v: order.index(v) if v in order else -1)
    return unrouted[: max(0, len(unrouted) - keep)]


@dataclass(frozen=True)
class Decision:
    accepted: bool
    reason: str
    active_version: str | None


def routes_of(event: ModelVersionEvent) -> tuple[Route, ...]:
    """A route to every server ``event`` sends records to (none for a clear)."""
    return tuple(
        Route(
            model=event.model,
            version=version,
            url=url,
            protocol=protocol,
            features=tuple(features) if features else None,
            run_id=event.run_id,
        )
        for version, url, protocol, features in event.targets
    )


def route_of(event: ModelVersionEvent) -> Route:
    if event.url is None:
        raise ValueError(f"{event.action} {event.model} {event.version} names no url")
    return routes_of(event)[0]


def speculation_of(event: ModelVersionEvent) -> Speculation:
    assert event.deadline_ms is not None and event.decider is not None  # the schema says so
    return Speculation(event.version, routes_of(event), event.deadline_ms / 1000, event.decider)


REFRESHABLE = ("active", "canary", "shadow")  # the slots a refresh moves a version's route in


def _refreshable(routes: ModelRoutes) -> tuple[Route | None, ...]:
    return tuple(getattr(routes, slot) for slot in REFRESHABLE)


def _bucket(record_id: str) -> float:
    digest = hashlib.blake2b(record_id.encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") / 2**64


@dataclass
class RoutingTable:
    models: dict[str, ModelRoutes] = field(default_factory=dict)
    changes: int = 0

    def get(self, model: str) -> ModelRoutes:
        return self.models.get(model, ModelRoutes())

    def apply(self, event: ModelVersionEvent, *, ready: bool) -> Decision:
        """Fold one control event; ``ready`` is whether its endpoint answered ready.

        ``activate`` and ``rollback`` both name the version that should serve
        from now on, so the latest of them alone decides the active route — which
        is what survives compaction of the control topic. A rollback also drops
        the versions after its target from the history. A clear needs no
        endpoint and empties its slot.
        """
        current = self.get(event.model)
        active_version = current.active.version if current.active else None
        if event.action in CLEARS:
            slot = CLEARS[event.action]
            held = getattr(current, slot)  # the slots are ModelRoutes' fields
            if held is None:
                return Decision(True, f"no {slot} to clear", active_version)
            cleared: dict[str, Any] = {slot: None}
            if slot == "canary":
                cleared["canary_weight"] = 0.0
            self.models[event.model] = replace(current, **cleared)
            self.changes += 1
            name = held.name if isinstance(held, Speculation) else held.version
            return Decision(True, f"{slot} {name} cleared", active_version)
        if self.idle_refresh(event):
            return Decision(True, f"no route of {event.version} to refresh", active_version)
        if not ready:
            urls = ", ".join(url for _v, url, _p, _f in event.targets)
            return Decision(
                False,
                f"endpoint {urls} for {event.model} {event.version} is not ready; "
                f"keeping version {active_version}",
                active_version,
            )
        if event.action == "speculate":
            speculation = speculation_of(event)
            self.models[event.model] = replace(current, speculative=speculation)
            self.changes += 1
            versions = ", ".join(m.version for m in speculation.members)
            return Decision(
                True,
                f"speculate {event.version}: {versions} within {event.deadline_ms} ms, "
                f"{event.decider} decides",
                active_version,
            )
        new = route_of(event)
        if event.action == "refresh":
            return self._refresh(current, new)
        if event.action in ("activate", "rollback"):
            if current.active == new:
                return Decision(True, f"{event.version} already active", active_version)
            if current.active is not None and current.active.version == new.version:
                # the same version at a new place (an online learner's newer snapshot)
                history = current.history
            elif event.action == "rollback":
                kept = [r for r in current.history if r.version != new.version]
                cut = next(
                    (i for i, r in enumerate(current.history) if r.version == new.version),
                    len(current.history),
                )
                history = tuple(kept[:cut])
            else:
                history = (current.history + ((current.active,) if current.active else ()))[-20:]
            updated = replace(current, active=new, history=history)
        elif event.action == "canary":
            updated = replace(current, canary=new, canary_weight=float(event.weight or 0.0))
        else:  # shadow
            updated = replace(current, shadow=new)
        self.models[event.model] = updated
        self.changes += 1
        now_active = updated.active.version if updated.active else None
        return Decision(True, f"{event.action} {event.version}", now_active)

    def idle_refresh(self, event: ModelVersionEvent) -> bool:
        """Whether ``event`` is a refresh of a version no slot of its model holds: it
        changes nothing, so it needs no ready endpoint (nothing is asked or loaded)."""
        return event.action == "refresh" and not self.holds(event.model, event.version)

    def holds(self, model: str, version: str) -> bool:
        """Whether a slot of ``model`` routes to ``version`` (what a refresh would move)."""
        routes = self.get(model)
        return any(r is not None and r.version == version for r in _refreshable(routes))

    def _refresh(self, current: ModelRoutes, new: Route) -> Decision:
        """Move ``new.version``'s route, in each slot that holds it, to ``new``: which
        version serves stays as it is (an online learner's newer snapshot)."""
        moved: dict[str, Any] = {
            slot: new
            for slot, route in zip(REFRESHABLE, _refreshable(current), strict=True)
            if route is not None and route.version == new.version and route != new
        }
        active_version = current.active.version if current.active else None
        if not moved:
            return Decision(True, f"{new.version} already at {new.url}", active_version)
        self.models[new.model] = replace(current, **moved)
        self.changes += 1
        return Decision(True, f"refresh {new.version} ({', '.join(moved)})", active_version)

    def reject(self, event: ModelVersionEvent, why: str) -> Decision:
        """Refuse ``event`` for ``why``, keeping the current routes."""
        active = self.get(event.model).active
        version = active.version if active else None
        return Decision(
            False,
            f"{event.action} {event.version} refused: {why}; keeping version {version}",
            version,
        )

    def previous(self, model: str) -> Route | None:
        """The route a rollback of ``model`` would return to, if any."""
        history = self.get(model).history
        return history[-1] if history else None

    def split(self, model: str, record_ids: Sequence[str]) -> list[Route | None]:
        """:meth:`route` for each of ``record_ids``, under one look at the routes (a batch)."""
        routes = self.get(model)
        canary = routes.serving_canary
        if canary is None:  # the usual case: everything to the active route
            return [routes.active] * len(record_ids)
        weight, active = routes.canary_weight, routes.active
        return [canary if _bucket(r) < weight else active for r in record_ids]

    def route(self, model: str, record_id: str) -> Route | None:
        """Where to send ``record_id`` now: the canary for its share, else the active route."""
        return self.split(model, [record_id])[0]

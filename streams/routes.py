"""The routes as every worker would fold them, read from the compacted control topic.

For the CLI (``weir models list``, ``rollback``, ``clear``, ``bootstrap``) and the
model host (which refuses to stop a version that is routed). Events a worker
would not act on — not model-version events, or refused by the workers' route
gate (signature, replay, allowed host, feature order, registry) — are counted, not folded.
"""

from __future__ import annotations

from agents.control import RegistryCheck, RouteGate
from agents.routing import RoutingTable
from connectors.kafka_tools import open_reader
from schemas import ModelVersionEvent, ServiceError
from schemas.settings import Settings
from schemas.topics import Topic, topic_name


def fold_routes(settings: Settings) -> tuple[RoutingTable, int]:
    """The routes on the control topic, read from its beginning; and how many messages were
    not model-version events a worker would act on (not one, or refused by the same
    :class:`~agents.control.RouteGate` the workers apply). Every endpoint counts as ready."""
    table, ignored, gate = RoutingTable(), 0, RouteGate(settings)
    registry = RegistryCheck.for_settings(settings)

    def refused_by_registry(change: ModelVersionEvent) -> bool:
        nonlocal registry
        if registry is None:
            return False
        try:
            return registry.problem(change) is not None
        except ServiceError:  # MinIO away: the workers accept it on its signature, too
            registry = None
            return False

    with open_reader(settings, topic_name(settings.kafka, Topic.MODELS), start="beginning") as r:
        for msg in r.read_to_end():
            event = msg.event
            if (
                event is not None
                and isinstance(event.data, ModelVersionEvent)
                and gate.refusal(event) is None
                and not refused_by_registry(event.data)
            ):
                if table.apply(event.data, ready=True).accepted:
                    gate.applied_now(event)
            else:
                ignored += 1
    return table, ignored

"""The control fold: every route a model has, rebuilt from the compacted control topic.

A Faust task that reads the whole ``models`` topic from the beginning with its
own group-less consumer (every process needs every route), folds it into a
:class:`~agents.routing.RoutingTable` through :class:`~agents.control.Controller`,
and sets ``ready`` once it has caught up with the topic's end. Replayed routes
whose endpoint was not ready are probed again every ``RECHECK_S`` seconds. The
scoring role emits its route decisions (to ``alerts``) and dead letters; the
retrainer only reads the routes (which version is active) and emits nothing.
A role that sends route events may pass ``on_decision`` to hear how its own
fold answered the live ones (the learner learns that its take-over was refused).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Hashable, Mapping
from typing import Any

from aiokafka import AIOKafkaConsumer, TopicPartition

from agents.control import Controller, RegistryCheck
from agents.routing import RoutingTable
from connectors.dead_letters import OversizeStore
from connectors.kafka import aiokafka_security, list_topics
from schemas import ConfigurationError, Event, RouteDecision
from schemas.topics import Topic
from streams.context import RoleContext, raw_message

log = logging.getLogger("weir.control")

POLL_MS = 200
CATCH_UP_S = 10.0  # longest a role waits for its fold to reach the control topic's end
RECHECK_S = 2.0


class FoldProgress:
    """How far a control fold has got, per partition (the offset after the last event the
    routes include), and a wait until it gets somewhere."""

    def __init__(self, folded: Mapping[Hashable, int]) -> None:
        self.folded = dict(folded)
        self._changed = asyncio.Condition()

    async def advanced(self, positions: Mapping[Hashable, int]) -> None:
        """The fold has taken in everything before ``positions``."""
        async with self._changed:
            self.folded.update(positions)
            self._changed.notify_all()

    async def reached(self, target: Mapping[Hashable, int], timeout_s: float) -> bool:
        """Wait until the fold is at ``target`` (end offsets) everywhere; False after
        ``timeout_s``."""
        try:
            async with asyncio.timeout(timeout_s), self._changed:
                await self._changed.wait_for(
                    lambda: all(self.folded.get(tp, 0) >= end for tp, end in target.items())
                )
        except TimeoutError:
            return False
        return True


def attach_control(
    ctx: RoleContext,
    routing: RoutingTable,
    *,
    emit: bool,
    on_decision: Callable[[RouteDecision], None] | None = None,
) -> None:
    app, settings, k = ctx.app, ctx.settings, ctx.settings.kafka
    ctx.routing = routing

    @app.task
    async def control() -> None:
        controller = Controller(
            settings,
            routing,
            ctx.client,
            oversize=OversizeStore(settings) if emit else None,
            registry=RegistryCheck.for_settings(settings),
        )

        async def publish(out: Event[Any] | None) -> None:
            ctx.live.record_routes(routing)
            if on_decision is not None and out is not None and isinstance(out.data, RouteDecision):
                on_decision(out.data)
            if out is None or not emit:
                return
            dead = out.type == "io.weir.deadletter.v1"
            await ctx.send_all([(Topic.DEAD_LETTER if dead else Topic.ALERTS, out)])
            ctx.live.record_event(out)

        loop = asyncio.get_running_loop()
        rechecked = loop.time()
        name = ctx.name(Topic.MODELS)
        consumer = AIOKafkaConsumer(
            bootstrap_servers=k.bootstrap_servers,
            group_id=None,
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            client_id=f"{k.client_id}-{ctx.role}-control",
            **aiokafka_security(k),
        )
        await consumer.start()
        try:
            count = (await asyncio.to_thread(list_topics, settings)).get(name, 0)
            if not count:
                raise ConfigurationError(
                    f"control topic {name} does not exist on {k.bootstrap_servers}; "
                    "run `weir topics create`"
                )
            partitions = [TopicPartition(name, p) for p in range(count)]
            consumer.assign(partitions)
            await consumer.seek_to_beginning(*partitions)
            end = await consumer.end_offsets(partitions)
            progress = FoldProgress({tp: await consumer.position(tp) for tp in partitions})

            async def folded_to_now() -> bool:
                """Wait until every control event the topic held at the call is folded."""
                return await progress.reached(await consumer.end_offsets(partitions), CATCH_UP_S)

            ctx.folded_to_now = folded_to_now
            while True:
                caught_up = all(progress.folded[tp] >= end[tp] for tp in partitions)
                if not ctx.ready.is_set() and caught_up:
                    ctx.ready.set()
                    log.info("control caught up: %s", routing.models)
                    if controller.skipped:
                        log.warning(
                            "%d undecodable messages on %s were skipped in the replay "
                            "(dead-lettered when they arrived)",
                            controller.skipped,
                            name,
                        )
                batches = await consumer.getmany(timeout_ms=POLL_MS)
                for msgs in batches.values():
                    for m in msgs:
                        replaying = (
                            not ctx.ready.is_set()
                            and m.offset < end[TopicPartition(m.topic, m.partition)]
                        )
                        await publish(await controller.handle(raw_message(m), replaying=replaying))
                # every record returned so far is folded now
                await progress.advanced({tp: await consumer.position(tp) for tp in partitions})
                if controller.held and loop.time() - rechecked >= RECHECK_S:
                    rechecked = loop.time()
                    for decision in await controller.recheck():
                        await publish(decision)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # a role must not act on a dead control loop
            log.exception("control task failed")
            await app.crash(exc)
        finally:
            await consumer.stop()

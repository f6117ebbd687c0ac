"""The control fold: every route a model has, rebuilt from the compacted control topic.

A Faust task that reads the whole ``models`` topic from the beginning with its
own group-less consumer (every process needs every route), folds it into a
:class:`~agents.routing.RoutingTable` through :class:`~agents.control.Controller`,
and sets ``ready`` once it has caught up with the topic's end. The scoring role
emits its route decisions (to ``alerts``) and dead letters; the retrainer only
reads the routes (which version is active) and emits nothing.
"""

from __future__ import annotations

import asyncio
import logging

from aiokafka import AIOKafkaConsumer, TopicPartition

from agents.control import Controller
from agents.routing import RoutingTable
from connectors.kafka import list_topics
from schemas import ConfigurationError
from schemas.topics import Topic
from streams.context import RoleContext, raw_message

log = logging.getLogger("weir.control")

POLL_MS = 200


def attach_control(ctx: RoleContext, routing: RoutingTable, *, emit: bool) -> None:
    app, settings, k = ctx.app, ctx.settings, ctx.settings.kafka

    @app.task
    async def control() -> None:
        controller = Controller(settings, routing, ctx.client)
        name = ctx.name(Topic.MODELS)
        consumer = AIOKafkaConsumer(
            bootstrap_servers=k.bootstrap_servers,
            group_id=None,
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            client_id=f"{k.client_id}-{ctx.role}-control",
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
            while True:
                if not ctx.ready.is_set():
                    positions = {tp: await consumer.position(tp) for tp in partitions}
                    if all(positions[tp] >= end[tp] for tp in partitions):
                        ctx.ready.set()
                        log.info("control caught up: %s", routing.models)
                batches = await consumer.getmany(timeout_ms=POLL_MS)
                for msgs in batches.values():
                    for m in msgs:
                        replaying = (
                            not ctx.ready.is_set()
                            and m.offset < end[TopicPartition(m.topic, m.partition)]
                        )
                        out = await controller.handle(raw_message(m), replaying=replaying)
                        ctx.live.record_routes(routing)
                        if out is None or not emit:
                            continue
                        target = (
                            Topic.DEAD_LETTER
                            if out.type == "io.weir.deadletter.v1"
                            else Topic.ALERTS
                        )
                        await ctx.send_all([(target, out)])
                        ctx.live.record_event(out)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # a role must not act on a dead control loop
            log.exception("control task failed")
            await app.crash(exc)
        finally:
            await consumer.stop()

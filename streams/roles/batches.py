"""Reading a role's topics in batches through librdkafka, inside its Faust app.

For the roles that read the most events per record (scoring; feedback reads
three per record), Faust's stream machinery — fetcher, conductor, per-event
acks — cost more CPU than the role's own work (measured with py-spy under
``bench/peers.py``: 60 % of the feedback process). These roles read through a
:class:`~connectors.kafka_async.BatchConsumer` in the role's consumer group
and store a batch's offsets after it was handled. Their Faust app keeps the
task, timers, live view, signals and crash handling; its own consumer, which
refuses to start with no topic, gets an idle agent on the small control topic
and joins a group of its own (``<group>-app``), so the two never share a group.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from connectors.kafka_async import BatchConsumer
from schemas import RawMessage
from schemas.topics import Topic
from streams.context import RoleContext

log = logging.getLogger("weir.batches")

COMMIT_INTERVAL_MS = 1000


def keep_faust_subscribed(ctx: RoleContext) -> None:
    """An idle agent that gives the app's own consumer a topic (see the module docstring)."""

    @ctx.app.agent(ctx.topics[Topic.MODELS])
    async def keep_faust_subscribed(stream: Any) -> None:
        async for _ in stream.events():
            pass


def attach_batches(
    ctx: RoleContext,
    topics: Sequence[Topic],
    handle: Callable[[list[RawMessage]], Awaitable[None]],
    *,
    size: int,
    wait_s: float,
    after: asyncio.Event,
) -> None:
    """A task that hands batches of ``topics`` to ``handle`` once ``after`` is set.

    A batch's offsets are stored (committed within a second) only after
    ``handle`` returned; an error in ``handle`` crashes the role instead of
    leaving it stalled (the supervisor starts it again).
    """
    keep_faust_subscribed(ctx)

    @ctx.app.task
    async def read_batches() -> None:
        consumer = BatchConsumer(
            ctx.settings,
            [ctx.name(t) for t in topics],
            ctx.group,
            commit_interval_ms=COMMIT_INTERVAL_MS,
        )
        try:
            await after.wait()
            while True:
                batch = await consumer.take(size, wait_s)
                if batch:
                    await handle(batch)
                    await consumer.done(batch)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            log.exception("%s: reading batches failed", ctx.role)
            await ctx.app.crash(exc)
        finally:
            await consumer.close()

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
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any

from connectors.kafka_async import BatchConsumer
from schemas import ConfigurationError, RawMessage
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


@dataclass
class Pending:
    """What a handled batch still waits for before its offsets may be stored."""

    acked: asyncio.Future[list[str]]  # Kafka's answer for the batch's outputs (errors, if any)
    then: Callable[[], None] = lambda: None  # once acknowledged (e.g. the live view's count)


Handle = Callable[[list[RawMessage]], Awaitable[Pending | None]]


def attach_batches(
    ctx: RoleContext,
    topics: Sequence[Topic],
    handle: Handle,
    *,
    size: int,
    wait_s: float,
    after: asyncio.Event,
    in_flight: int = 1,
) -> None:
    """A task that hands batches of ``topics`` to ``handle`` once ``after`` is set.

    ``handle`` returns None when it is done with a batch, or a :class:`Pending`
    for outputs Kafka has yet to acknowledge; then the next batches are read and
    handled meanwhile, at most ``in_flight`` of them unacknowledged. A batch's
    offsets are stored (committed within a second) only once it is done, strictly
    in order. An error in ``handle`` or a refused output crashes the role instead
    of leaving it stalled (the supervisor starts it again).
    """
    if ctx.app.conf.id == ctx.group:  # the app's own consumer would join our group
        raise ConfigurationError(
            f"role {ctx.role} reads through librdkafka: list it in streams.app.LIBRDKAFKA_ROLES"
        )
    keep_faust_subscribed(ctx)

    @ctx.app.task
    async def read_batches() -> None:
        consumer = BatchConsumer(
            ctx.settings,
            [ctx.name(t) for t in topics],
            ctx.group,
            commit_interval_ms=COMMIT_INTERVAL_MS,
        )
        waiting: deque[tuple[Pending | None, list[RawMessage]]] = deque()  # oldest first
        try:
            await after.wait()
            while True:
                batch = await consumer.take(size, wait_s)
                if batch:
                    waiting.append((await handle(batch), batch))
                while waiting and (
                    waiting[0][0] is None or waiting[0][0].acked.done() or len(waiting) > in_flight
                ):
                    pending, done = waiting.popleft()
                    if pending is not None:
                        ctx.producer.check(await pending.acked)
                        pending.then()
                    await consumer.done(done)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            log.exception("%s: reading batches failed", ctx.role)
            await ctx.app.crash(exc)
        finally:
            await consumer.close()

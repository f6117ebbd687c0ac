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
from typing import Any, Generic, TypeVar

from connectors.kafka_async import BatchConsumer
from schemas import ConfigurationError, RawMessage
from schemas.topics import Topic
from streams.context import RoleContext
from streams.roles.scoring_first import attach_scoring_first

log = logging.getLogger("weir.batches")

COMMIT_INTERVAL_MS = 1000
_T = TypeVar("_T")


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
Work = Callable[[list[RawMessage]], Awaitable[_T]]
Emit = Callable[[list[RawMessage], _T], Pending | None]


def attach_batches(
    ctx: RoleContext,
    topics: Sequence[Topic],
    handle: Handle,
    *,
    size: int,
    wait_s: float,
    after: asyncio.Event,
) -> None:
    """A task that hands batches of ``topics`` to ``handle``, one at a time, once ``after``
    is set; a batch's offsets are stored once ``handle`` is done with it (and Kafka
    acknowledged what it returned as :class:`Pending`). See :func:`attach_pipeline`.

    These are the insight roles' batches: while the scoring role is behind, the role
    waits before reading each (:mod:`streams.roles.scoring_first`)."""
    attach_pipeline(
        ctx,
        topics,
        handle,
        lambda _batch, pending: pending,
        size=size,
        wait_s=wait_s,
        after=after,
        before_take=attach_scoring_first(ctx),
    )


def attach_pipeline(
    ctx: RoleContext,
    topics: Sequence[Topic],
    work: Work[_T],
    emit: Emit[_T],
    *,
    size: int,
    wait_s: float,
    after: asyncio.Event,
    overlap: int = 1,
    in_flight: int = 1,
    before_take: Callable[[], Awaitable[None]] | None = None,
) -> None:
    """A task that reads batches of ``topics`` once ``after`` is set and runs them through
    two stages: ``work`` (up to ``overlap`` batches at once: under a backlog, the next
    batch is read and worked on while a model call is out) and ``emit`` (strictly in the
    order the batches were read, so outputs keep their input order).

    ``emit`` returns None when it is done with a batch, or a :class:`Pending` for
    outputs Kafka has yet to acknowledge; at most ``in_flight`` emitted batches wait
    for it at once. A batch's offsets are stored (committed within a second) only
    once it is done, strictly in order. An error in either stage or a refused output
    crashes the role instead of leaving it stalled (the supervisor starts it again).
    ``before_take``, if given, is awaited before each read.
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

        async def take() -> list[RawMessage]:
            if before_take is not None:
                await before_take()
            return await consumer.take(size, wait_s)

        pipeline = BatchPipeline(
            take,
            work,
            emit,
            consumer.done,
            ctx.producer.check,
            overlap=overlap,
            in_flight=in_flight,
            full=size,
        )
        try:
            await after.wait()
            await pipeline.run()
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            log.exception("%s: reading batches failed", ctx.role)
            await ctx.app.crash(exc)
        finally:
            await pipeline.stop()
            await consumer.close()


class BatchPipeline(Generic[_T]):
    """The loop of :func:`attach_pipeline`, without Kafka or Faust (tested on its own).

    ``take`` reads the next batch (never cancelled: its records would be lost),
    ``store`` marks a done batch's offsets, ``check`` raises for Kafka's
    delivery errors.

    A batch is read while others are worked on only after a *full* batch (``full``
    records: a backlog). At a rate the role keeps up with, batches are worked on one
    at a time, which makes fewer and larger model calls: measured at 2,000 records/s,
    overlapping there too raised the model server's CPU by a fifth and made the p99
    erratic (51 to 138 ms against 56 to 58 ms), while under a backlog overlapping drains
    about a quarter faster.
    """

    def __init__(
        self,
        take: Callable[[], Awaitable[list[RawMessage]]],
        work: Work[_T],
        emit: Emit[_T],
        store: Callable[[list[RawMessage]], None],
        check: Callable[[list[str]], None],
        *,
        overlap: int = 1,
        in_flight: int = 1,
        full: int | None = None,
    ) -> None:
        self._take, self._work, self._emit = take, work, emit
        self._full = full
        self._backlog = False  # the last batch read was full
        self._store, self._check = store, check
        self._overlap, self._in_flight = overlap, in_flight
        self._working: deque[tuple[asyncio.Future[_T], list[RawMessage]]] = deque()  # read order
        self._waiting: deque[tuple[Pending | None, list[RawMessage]]] = deque()  # emitted
        self._taking: asyncio.Future[list[RawMessage]] | None = None

    async def run(self) -> None:
        """Read, work, emit and store until cancelled or an error is raised."""
        working, waiting = self._working, self._waiting
        while True:
            if self._taking is None and (
                not working or (self._backlog and len(working) < self._overlap)
            ):
                self._taking = asyncio.ensure_future(self._take())
            oldest = working[0][0] if working else None
            acked = waiting[0][0].acked if waiting and waiting[0][0] is not None else None
            await asyncio.wait(
                {f for f in (self._taking, oldest, acked) if f is not None},
                return_when=asyncio.FIRST_COMPLETED,
            )
            if self._taking is not None and self._taking.done():
                batch, self._taking = self._taking.result(), None
                self._backlog = self._full is not None and len(batch) >= self._full
                if batch:
                    working.append((asyncio.ensure_future(self._work(batch)), batch))
            while working and working[0][0].done():
                result, batch = working.popleft()
                waiting.append((self._emit(batch, result.result()), batch))
            while waiting and (
                waiting[0][0] is None
                or waiting[0][0].acked.done()
                or len(waiting) > self._in_flight
            ):
                pending, done = waiting.popleft()
                if pending is not None:
                    self._check(await pending.acked)
                    pending.then()
                self._store(done)

    async def stop(self) -> None:
        """Drop the work under way (its offsets are not stored: it is read again) and let
        a read under way finish, so the consumer is not closed beneath it."""
        for future, _ in self._working:
            future.cancel()
        if self._taking is not None:
            await asyncio.wait({self._taking})
            if not self._taking.cancelled():
                self._taking.exception()  # retrieved: the loop's error, if any, was logged

"""The scoring role: records in, predictions and dead letters out — and nothing else.

The hot path. Its event loop runs the control fold (routes), this loop and,
when asked for, the live view; no monitor, join, archive or pipeline shares it.

Records are read in micro-batches by a librdkafka group consumer
(:class:`connectors.kafka_async.BatchConsumer`, group
``<prefix>-scoring-<model>``): up to ``WEIR_SCORING__BATCH_SIZE`` records,
waiting at most ``WEIR_SCORING__BATCH_WAIT_S`` for them. Each batch is scored by
:class:`agents.scoring.Scorer` and its predictions and dead letters are queued
on the librdkafka producer; while Kafka acknowledges them the next batch is
read and scored (at most ``WEIR_SCORING__BATCHES_IN_FLIGHT`` unacknowledged),
and a batch's offsets are stored for the next commit only once its outputs are
acknowledged, in order — at-least-once. Scoring starts
once the control fold has caught up.

Why not a Faust agent: measured with ``bench/peers.py``, Faust's stream
machinery (fetcher, conductor, per-event acks) cost more CPU per record than
all of weir's own work on a batch; the Faust app still runs this loop as a
task, with the control fold, the live view, signals and crash handling
(:mod:`streams.roles.batches` says how its own consumer is kept apart). An
unexpected error crashes the app (and the supervisor starts the role again)
instead of leaving a silent, stalled loop behind.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque

from agents.routing import RoutingTable
from agents.scoring import BatchOutcome, Scorer
from connectors.kafka_async import BatchConsumer
from schemas import RawMessage
from schemas.topics import Topic
from streams.context import RoleContext
from streams.roles.batches import keep_faust_subscribed
from streams.roles.control import attach_control

log = logging.getLogger("weir.scoring")

COMMIT_INTERVAL_MS = 1000


def attach_scoring(ctx: RoleContext) -> None:
    settings, s = ctx.settings, ctx.settings.scoring
    routing = RoutingTable()
    attach_control(ctx, routing, emit=True)

    keep_faust_subscribed(ctx)

    @ctx.app.task
    async def score() -> None:
        scorer = Scorer(settings, routing, ctx.client)
        consumer = BatchConsumer(
            settings,
            [ctx.name(Topic.RECORDS)],
            ctx.group,
            commit_interval_ms=COMMIT_INTERVAL_MS,
        )
        # Batches whose outputs are queued but not yet acknowledged, oldest first: the
        # next batch is read and scored while Kafka acks the last ones, and offsets are
        # stored strictly in order, each only after its batch's outputs are stored.
        acking: deque[tuple[asyncio.Future[list[str]], list[RawMessage], BatchOutcome, float]]
        acking = deque()
        try:
            await ctx.ready.wait()
            while True:
                batch = await consumer.take(s.batch_size, s.batch_wait_s)
                if batch:
                    started = time.perf_counter()
                    outcome = await scorer.score(batch)
                    seconds = time.perf_counter() - started
                    acked = ctx.queue_all(
                        [(Topic.PREDICTIONS, p) for p in outcome.predictions]
                        + [(Topic.DEAD_LETTER, d) for d in outcome.dead_letters]
                    )
                    acking.append((acked, batch, outcome, seconds))
                while acking and (acking[0][0].done() or len(acking) > s.batches_in_flight):
                    acked, done, outcome, seconds = acking.popleft()
                    ctx.producer.check(await acked)  # a refused output crashes the role
                    await consumer.done(done)
                    ctx.live.record_batch(outcome, consumed=len(done), seconds=seconds)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # never a silent, stalled hot path: crash, be restarted
            log.exception("scoring loop failed")
            await ctx.app.crash(exc)
        finally:
            await consumer.close()

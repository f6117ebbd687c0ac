"""The scoring role: records in, predictions and dead letters out — and nothing else.

The hot path. Its event loop runs the control fold (routes), this loop and,
when asked for, the live view; no monitor, join, archive or pipeline shares it.

Records are read in micro-batches by a librdkafka group consumer
(:func:`streams.roles.batches.attach_pipeline`, group
``<prefix>-scoring-<model>``): up to ``WEIR_SCORING__BATCH_SIZE`` records,
waiting at most ``WEIR_SCORING__BATCH_WAIT_S`` for them. Each batch is scored by
:class:`agents.scoring.Scorer`; while its model call is out the next batch is
read and scored when the last batch was full (a backlog;
``WEIR_SCORING__BATCHES_SCORING`` at once). Batches' predictions
and dead letters are queued on the librdkafka producer in the order the records
were read; while Kafka acknowledges them the next batches are read and scored
(at most ``WEIR_SCORING__BATCHES_IN_FLIGHT`` unacknowledged),
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

import time

from agents.routing import RoutingTable
from agents.scoring import BatchOutcome, Scorer
from agents.shadow import ShadowMirror
from agents.speculation import Speculator
from connectors.dead_letters import OversizeStore
from schemas import RawMessage
from schemas.topics import Topic
from streams.context import RoleContext
from streams.roles.batches import Pending, attach_pipeline
from streams.roles.control import attach_control


def attach_scoring(ctx: RoleContext) -> None:
    settings, s = ctx.settings, ctx.settings.scoring
    mode = settings.events.mode
    routing = RoutingTable()
    attach_control(ctx, routing, emit=True)
    scorers: list[Scorer] = []  # one, made on the first batch (its HTTP client needs the loop)

    async def score(batch: list[RawMessage]) -> tuple[BatchOutcome, float]:
        if not scorers:
            shadow = ShadowMirror(
                settings,
                routing,
                ctx.client,
                lambda out: ctx.send_nowait([(Topic.PREDICTIONS, p) for p in out]),
            )
            ctx.on_shutdown(shadow.close)
            late = ctx.live.metrics.speculative_late
            speculator = Speculator(
                ctx.client, on_late=lambda version, rows: late.labels(s.model, version).inc(rows)
            )
            ctx.on_shutdown(speculator.close)
            scorers.append(
                Scorer(
                    settings,
                    routing,
                    ctx.client,
                    oversize=OversizeStore(settings),
                    shadow=shadow,
                    speculator=speculator,
                )
            )
        started = time.perf_counter()
        outcome = await scorers[0].score(batch)
        return outcome, time.perf_counter() - started

    def emit(batch: list[RawMessage], scored: tuple[BatchOutcome, float]) -> Pending:
        outcome, seconds = scored
        acked = ctx.queue_all(
            [(Topic.PREDICTIONS, p) for p in outcome.prediction_records(mode)]
            + [(Topic.DEAD_LETTER, d) for d in outcome.dead_letters]
        )
        return Pending(
            acked, lambda: ctx.live.record_batch(outcome, consumed=len(batch), seconds=seconds)
        )

    attach_pipeline(
        ctx,
        (Topic.RECORDS,),
        score,
        emit,
        size=s.batch_size,
        wait_s=s.batch_wait_s,
        after=ctx.ready,  # the control fold has caught up: every route is known
        overlap=s.batches_scoring,
        in_flight=s.batches_in_flight,
    )

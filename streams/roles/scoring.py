"""The scoring role: records in, predictions and dead letters out — and nothing else.

The hot path. Its event loop runs the control fold (routes), this agent and,
when asked for, the live view; no monitor, join, archive or pipeline shares it.
The agent consumes ``records`` in micro-batches
(``noack_take(batch_size, within=batch_wait_s)``), scores them with
:class:`agents.scoring.Scorer`, sends predictions and dead letters through the
librdkafka producer, waits for Kafka to acknowledge them, and only then acks
the records — so an offset is committed only after its outcome is stored
(at-least-once). Scoring starts once the control fold has caught up.

The agent runs under mode's ``CrashingSupervisor``: an unexpected error stops
the process (and the supervisor starts it again) instead of leaving a silent,
stalled agent behind.
"""

from __future__ import annotations

import time
from typing import Any

from mode import CrashingSupervisor

from agents.routing import RoutingTable
from agents.scoring import Scorer
from schemas.topics import Topic
from streams.context import RoleContext, raw_message
from streams.roles.control import attach_control


def attach_scoring(ctx: RoleContext) -> None:
    settings, s = ctx.settings, ctx.settings.scoring
    routing = RoutingTable()
    attach_control(ctx, routing, emit=True)

    @ctx.app.agent(ctx.topics[Topic.RECORDS], supervisor_strategy=CrashingSupervisor)
    async def score(stream: Any) -> None:
        scorer = Scorer(settings, routing, ctx.client)
        await ctx.ready.wait()
        async for events in stream.noack_take(s.batch_size, within=s.batch_wait_s):
            started = time.perf_counter()
            outcome = await scorer.score([raw_message(e.message) for e in events])
            seconds = time.perf_counter() - started
            await ctx.send_all(
                [(Topic.PREDICTIONS, p) for p in outcome.predictions]
                + [(Topic.DEAD_LETTER, d) for d in outcome.dead_letters]
            )
            for event in events:
                await stream.ack(event)
            ctx.live.record_batch(outcome, consumed=len(events), seconds=seconds)

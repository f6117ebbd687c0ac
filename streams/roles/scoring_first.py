"""Scoring first: an insight role samples the scoring group's lag and, while scoring is
behind, waits between its batches (:class:`agents.pacing.ScoringFirst` says how long).

Only where they share cores: ``weir worker`` passes ``--scoring-first`` to the
monitor, feedback and learner it runs beside a scoring role. A role in a container
of its own (compose, Kubernetes) has CPU of its own and runs freely, as it does when
the scoring role is on another machine.

The sample is an admin call every second in a thread (the lag of
``<prefix>-scoring-<model>`` on the records topic); a broker that does not
answer leaves the last verdict to go stale, and a stale verdict never holds the
role back. The first sample is taken before the role's first batch. The role
logs when it starts and stops giving way.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable

from agents.pacing import ScoringFirst
from connectors.kafka import admin
from schemas import ServiceError
from schemas.topics import Topic, topic_name
from streams.context import PACED_ROLES, RoleContext, role_group
from streams.lag import group_position

log = logging.getLogger("weir.scoring_first")

SAMPLE_INTERVAL_S = 1.0


def attach_scoring_first(
    ctx: RoleContext,
    *,
    sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    cpu: Callable[[], float] = time.process_time,
    clock: Callable[[], float] = time.monotonic,
) -> Callable[[], Awaitable[None]] | None:
    """A wait to await before each batch an insight role reads, or None: when the role
    does not share the cores with a scoring role (``ctx.scoring_first``, which ``weir
    worker`` sets for the monitor, feedback and learner it runs beside scoring), is not
    one of those (``PACED_ROLES``), or
    ``WEIR_SCORING__INSIGHT_SHARE_BEHIND`` is 1. ``cpu`` is the process's CPU time,
    ``clock`` the time of lag samples."""
    scoring = ctx.settings.scoring
    if not ctx.scoring_first or ctx.role not in PACED_ROLES or scoring.insight_share_behind >= 1:
        return None
    pacing = ScoringFirst(scoring.insight_share_behind, min_records=scoring.scoring_behind_records)
    settings = ctx.settings
    group, records = role_group(settings, "scoring"), topic_name(settings.kafka, Topic.RECORDS)
    address = settings.kafka.bootstrap_servers
    client = admin(settings)

    async def sample() -> None:
        try:
            lag, end = await asyncio.to_thread(
                group_position, client, group, records, address=address
            )
        except ServiceError as err:
            log.debug("%s", err.message)  # the live view says when the broker is away
            return
        total = sum(lag.values())
        if pacing.observe(total, sum(end.values()), clock()):
            if pacing.behind:
                log.info(
                    "scoring is %d records behind: %s uses at most %.0f%% of a core until it "
                    "catches up",
                    total,
                    ctx.role,
                    100 * pacing.share,
                )
            else:
                log.info(
                    "scoring has caught up (%d records behind): %s runs freely", total, ctx.role
                )

    @ctx.app.timer(interval=SAMPLE_INTERVAL_S)
    async def sample_scoring_lag() -> None:
        await sample()

    used, first = cpu(), True

    async def before_next_batch() -> None:
        nonlocal used, first
        if first:  # the first batch: the timer's first sample is a second away
            first = False
            await sample()
        wait = pacing.worked(cpu() - used, clock())
        if wait > 0:
            await sleep(wait)
        used = cpu()

    return before_next_batch

"""The retrainer role: alerts → Kubeflow pipeline runs → new live versions.

Reads ``alerts`` (its own consumer group) and hands each one to
:class:`agents.retraining.Retrainer` (dedupe, hold, cooldown; one run per model
at a time). A run is a child process (:func:`connectors.pipeline.run_retrain_in_child`),
never a thread of a role, so kfp's process-global state and a slow or
crashing run touch nothing else. Before training, the run waits for
``collect_rows`` labelled outcomes of the model after the alert (counted on
``outcomes``) and for the feedback role's archive to have written them. The
routes (which version serves now) come from the control fold; the retrainer
emits no route decisions. The policy (seen alerts, cooldowns) is
checkpointed (:mod:`streams.roles.state`).
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from agents.retraining import Retrainer
from agents.routing import RoutingTable
from connectors.archive import newest_chunk_time
from connectors.minio_store import ObjectStore
from connectors.pipeline import run_retrain_in_child
from schemas import Event, Outcome
from schemas.events import utc_now
from schemas.topics import Topic
from streams.context import RoleContext
from streams.roles.control import attach_control
from streams.roles.decode import decoded
from streams.roles.state import attach_state
from streams.servers.deployers import deployer_for

log = logging.getLogger("weir.retrainer")

ARCHIVE_WAIT_S = 60.0  # longest a run waits for the archive to hold the newest rows
ARCHIVE_POLL_S = 1.0


def attach_retrainer(ctx: RoleContext) -> None:
    settings, model = ctx.settings, ctx.settings.scoring.model
    routing = RoutingTable()
    attach_control(ctx, routing, emit=False)
    outcomes = {"count": 0}
    store = ObjectStore(settings.minio)

    async def emit(kind: str, event: Event[Any]) -> None:
        topic = Topic.MODELS if kind == "models" else Topic.PIPELINE_RUNS
        await ctx.send_all([(topic, event)])
        ctx.live.record_event(event)

    async def archive_caught_up() -> None:
        """Wait until the feedback role archived what was labelled until now."""
        wanted = utc_now()
        loop = asyncio.get_running_loop()
        deadline = loop.time() + ARCHIVE_WAIT_S
        while loop.time() < deadline:
            try:
                newest = await asyncio.to_thread(
                    newest_chunk_time, store, settings.minio.data_bucket, model
                )
            except Exception as err:  # MinIO away: the run's fetch step will say so
                log.warning("cannot read the archive (%s); training on what it holds", err)
                return
            if newest is not None and newest >= wanted:
                return
            await asyncio.sleep(ARCHIVE_POLL_S)
        log.warning(
            "archive did not catch up within %.0fs; training on what it holds", ARCHIVE_WAIT_S
        )

    retrainer = Retrainer(
        settings,
        routing,
        deployer_for(settings),
        emit,
        run_pipeline=run_retrain_in_child,
        labelled_rows=lambda: outcomes["count"],
        flush_archive=archive_caught_up,
    )
    restored = attach_state(ctx, "policy", retrainer.policy.checkpoint, retrainer.policy.restore)

    @ctx.app.agent(ctx.topics[Topic.OUTCOMES])
    async def count_outcomes(stream: Any) -> None:
        async for event in stream.events():
            found = decoded(ctx, event.message)
            if found is not None and isinstance(found.data, Outcome) and found.data.model == model:
                outcomes["count"] += 1

    @ctx.app.agent(ctx.topics[Topic.ALERTS])
    async def retraining(stream: Any) -> None:
        await restored.wait()
        await ctx.ready.wait()  # the routes say which version serves now
        async for event in stream.events():
            found = decoded(ctx, event.message)
            if found is None or found.data.partition_key != model:
                continue
            await retrainer.on_alert(found)

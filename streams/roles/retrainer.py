"""The retrainer role: alerts → Kubeflow pipeline runs → new live versions.

Reads ``alerts`` (its own consumer group) and hands each one to
:class:`agents.retraining.Retrainer` (dedupe, hold, cooldown; one run per model
at a time). A run is a child process (:func:`connectors.pipeline.run_retrain_in_child`),
never a thread of a role, so kfp's process-global state and a slow or
crashing run touch nothing else. Before training, the run waits until the
feedback role archived ``collect_rows`` labelled rows from the alert on
(counted from the archive's object names, at most ``collect_timeout_s``). The
routes (which version serves now) come from the control fold; the retrainer
emits no route decisions. A canary verdict of the performance role is carried
out here, as signed route events (this role holds the signing key). The
policy (seen alerts, cooldowns) is checkpointed (:mod:`streams.roles.state`).
"""

from __future__ import annotations

import asyncio
import logging
from datetime import datetime
from typing import Any

from agents.retraining import Retrainer
from agents.routing import RoutingTable
from connectors.archive import rows_since
from connectors.minio_store import ObjectStore
from connectors.pipeline import run_retrain_in_child
from connectors.signing import signed
from schemas import CanaryVerdict, Event
from schemas.topics import Topic
from streams.context import RoleContext
from streams.roles.control import attach_control
from streams.roles.decode import decoded
from streams.roles.state import attach_state
from streams.servers.deployers import deployer_for

log = logging.getLogger("weir.retrainer")

ARCHIVE_POLL_S = 1.0  # how often a run waiting for rows counts the archive


def attach_retrainer(ctx: RoleContext) -> None:
    settings, model = ctx.settings, ctx.settings.scoring.model
    routing = RoutingTable()
    attach_control(ctx, routing, emit=False)
    store = ObjectStore(settings.minio)

    async def emit(kind: str, event: Event[Any]) -> None:
        if kind == "models":  # a route: signed, or no worker acts on it
            event = await asyncio.to_thread(signed, settings, event)
        topic = Topic.MODELS if kind == "models" else Topic.PIPELINE_RUNS
        await ctx.send_all([(topic, event)])
        ctx.live.record_event(event)

    async def gather_rows(model: str, since: datetime, wanted: int) -> None:
        """Wait until the feedback role archived ``wanted`` labelled rows since ``since``."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + settings.retraining.collect_timeout_s
        have = 0
        while loop.time() < deadline:
            try:
                have = await asyncio.to_thread(
                    rows_since, store, settings.minio.data_bucket, model, since
                )
            except Exception as err:  # MinIO away: keep waiting; the deadline bounds it
                log.warning("cannot count archived rows of %s (%s)", model, err)
            if have >= wanted:
                return
            await asyncio.sleep(ARCHIVE_POLL_S)
        log.warning(
            "%d of %d labelled rows of %s archived after %.0fs; training on what there is",
            have,
            wanted,
            model,
            settings.retraining.collect_timeout_s,
        )

    retrainer = Retrainer(
        settings,
        routing,
        deployer_for(settings),
        emit,
        run_pipeline=run_retrain_in_child,
        gather_rows=gather_rows,
        routes_folded=ctx.routes_caught_up,
    )
    restored = attach_state(ctx, "policy", retrainer.policy.checkpoint, retrainer.policy.restore)

    @ctx.app.agent(ctx.topics[Topic.ALERTS])
    async def retraining(stream: Any) -> None:
        await restored.wait()
        await ctx.ready.wait()  # the routes say which version serves now
        async for event in stream.events():
            found = decoded(ctx, event.message)
            if found is None or found.data.partition_key != model:
                continue
            if isinstance(found.data, CanaryVerdict):
                await retrainer.on_verdict(found)
            else:
                await retrainer.on_alert(found)

"""Keeping a role's state across restarts: restore at start, checkpoint on a timer.

``attach_state(ctx, name, get, put)`` restores the newest checkpoint of
``<role>/<model>/<name>`` (:mod:`connectors.checkpoints`) before the role's
agents handle their first event — they ``await restored.wait()`` — and saves
``get()`` every ``WEIR_MONITOR__CHECKPOINT_INTERVAL_S`` and at shutdown.

What this guarantees: a restarted or rebalanced role resumes with detectors,
join window and policy as they were at the last checkpoint, not from zero.
Events between that checkpoint and the committed offsets (at most one
interval plus one commit interval) are either seen twice or not at all by the
detectors; monitoring is best effort, scoring is the at-least-once path.
A broker that does not answer a checkpoint is logged and tried at the next
tick; it never stops the role.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any

from connectors.checkpoints import CheckpointStore
from schemas import ServiceError
from streams.context import RoleContext

log = logging.getLogger("weir.state")


def attach_state(
    ctx: RoleContext,
    name: str,
    get: Callable[[], Any],
    put: Callable[[Any], None],
    *,
    marks_ready: bool = False,
) -> asyncio.Event:
    """Restore ``name`` at start and checkpoint it; returns the event set once restored.

    With ``marks_ready`` the role counts as ready (``/readyz``) once restored:
    for the roles whose readiness is nothing but their state.
    """
    store = CheckpointStore(ctx.settings)
    key = f"{ctx.role}/{ctx.settings.scoring.model}/{name}"
    restored = asyncio.Event()
    interval = ctx.settings.monitor.checkpoint_interval_s

    async def save() -> None:
        if not restored.is_set():
            return  # never overwrite a checkpoint with a state that was not restored yet
        pickled = store.pickled(get())  # on the loop: the agents do not touch the state meanwhile
        try:
            size = await asyncio.to_thread(lambda: store.save(key, store.compressed(pickled)))
        except ServiceError as err:
            log.warning("checkpoint %s not saved: %s", key, err)
            return
        log.debug("checkpoint %s saved (%d bytes)", key, size)

    @ctx.app.task
    async def restore() -> None:
        try:
            states = await asyncio.to_thread(store.load_all, key)
        except ServiceError as err:
            log.warning("no checkpoint read for %s (%s); starting fresh", key, err)
            states = {}
        if key in states:
            put(states[key])
            log.info("%s restored from its checkpoint", key)
        restored.set()
        if marks_ready:
            ctx.ready.set()

    @ctx.app.timer(interval=interval)
    async def checkpoint() -> None:
        await save()

    ctx.on_shutdown(save)

    return restored

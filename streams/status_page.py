"""The worker's live view over HTTP, served inside the worker's own event loop.

When ``WEIR_LIVE__PORT`` is not 0, :func:`attach_live` adds two things to the
Faust app:

* a task that serves an aiohttp app on ``WEIR_LIVE__HOST:WEIR_LIVE__PORT``
  (loopback by default) until the worker stops:

  ========================  ====================================================
  ``GET /``                 the status page (refreshes itself from status.json)
  ``GET /status.json``      :class:`streams.live.LiveStatus`
  ``GET /metrics``          Prometheus text format, the worker's own registry
  ``GET /healthz``          200 while the event loop answers (liveness)
  ``GET /readyz``           200 once the control task caught up, else 503
  ========================  ====================================================

* a timer that samples the scoring group's consumer lag on the records topic
  every ``WEIR_LIVE__LAG_INTERVAL_S`` seconds with an admin call in a thread.
"""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING

from aiohttp import web

from connectors.kafka import admin
from schemas import ConfigurationError, ServiceError
from schemas.topics import Topic, topic_name
from streams.lag import group_lag
from streams.metrics import CONTENT_TYPE_LATEST
from streams.status_html import PAGE

if TYPE_CHECKING:
    from streams.context import RoleContext

log = logging.getLogger("weir.live")


# the topic whose consumer lag each role reports
LAG_TOPIC = {
    "scoring": Topic.RECORDS,
    "monitor": Topic.RECORDS,
    "feedback": Topic.LABELS,
    "performance": Topic.OUTCOMES,
    "retrainer": Topic.ALERTS,
}


def build_app(ctx: RoleContext) -> web.Application:
    """The aiohttp app of one role's live view."""
    live = ctx.live

    async def page(_: web.Request) -> web.Response:
        return web.Response(text=PAGE, content_type="text/html")

    async def status(_: web.Request) -> web.Response:
        body = live.snapshot(ready=ctx.ready.is_set()).model_dump_json()
        return web.Response(text=body, content_type="application/json")

    async def metrics(_: web.Request) -> web.Response:
        return web.Response(
            body=live.metrics.exposition(), headers={"Content-Type": CONTENT_TYPE_LATEST}
        )

    async def healthz(_: web.Request) -> web.Response:
        return web.Response(text="ok\n")

    async def readyz(_: web.Request) -> web.Response:
        if ctx.ready.is_set():
            return web.Response(text="ready\n")
        return web.Response(status=503, text=f"{ctx.role} not ready yet (routes or state)\n")

    app = web.Application()
    app.router.add_get("/", page)
    app.router.add_get("/status.json", status)
    app.router.add_get("/metrics", metrics)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    return app


def attach_live(ctx: RoleContext) -> None:
    """Serve the live view and sample consumer lag, if ``live.port`` is set."""
    settings, w = ctx.settings, ctx
    live = settings.live
    if live.port == 0:
        return

    @w.app.task
    async def live_view() -> None:
        runner = web.AppRunner(build_app(ctx), access_log=None)
        await runner.setup()
        try:
            await web.TCPSite(runner, live.host, live.port).start()
        except OSError as err:  # asked for a live view it cannot have: stop, say why
            await runner.cleanup()
            await w.app.crash(
                ConfigurationError(f"live view cannot bind {live.host}:{live.port}: {err}")
            )
            return
        log.info("live view on http://%s:%d/", live.host, live.port)
        try:
            await asyncio.Event().wait()  # serve until the worker cancels this task
        finally:
            await runner.cleanup()

    records = topic_name(settings.kafka, LAG_TOPIC[ctx.role])
    client = admin(settings)

    def sample() -> dict[int, int]:
        # Faust's consumer group is the app id
        return group_lag(client, ctx.group, records, address=settings.kafka.bootstrap_servers)

    @w.app.timer(interval=live.lag_interval_s)
    async def sample_lag() -> None:
        try:
            lag = await asyncio.to_thread(sample)
        except ServiceError as err:  # monitoring is best effort: keep the last sample
            log.warning("%s", err)
            return
        ctx.live.record_lag(records, lag)

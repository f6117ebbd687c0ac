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
  ``GET /readyz``           200 when the role can work, else 503 and why
  ========================  ====================================================

* a timer that, every ``WEIR_LIVE__LAG_INTERVAL_S`` seconds, checks that the
  broker answers and the control topic exists, that the active model server of
  the role's model answers ready (roles that hold routes), and samples the
  role's consumer lag — the admin calls in a thread.

Ready means: the role caught up (routes folded, state restored) and the last
checks found nothing wrong. A role that is not ready keeps working as far as it
can (scoring waits for its server with backoff); readiness tells a load
balancer or an operator, honestly, that it cannot serve now.
"""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING, Any

from aiohttp import web
from confluent_kafka import KafkaException

from connectors.kafka import admin
from schemas import ConfigurationError, ServiceError
from schemas.topics import Topic, topic_name
from streams.lag import group_lag
from streams.metrics import CONTENT_TYPE_LATEST
from streams.status_html import PAGE

if TYPE_CHECKING:
    from streams.context import RoleContext

log = logging.getLogger("weir.live")

BROKER_TIMEOUT_S = 3.0


# the topic whose consumer lag each role reports
LAG_TOPIC = {
    "scoring": Topic.RECORDS,
    "monitor": Topic.RECORDS,
    "feedback": Topic.LABELS,
    "performance": Topic.OUTCOMES,
    "retrainer": Topic.ALERTS,
    "learner": Topic.OUTCOMES,
}


def build_app(ctx: RoleContext) -> web.Application:
    """The aiohttp app of one role's live view."""
    live = ctx.live

    async def page(_: web.Request) -> web.Response:
        return web.Response(text=PAGE, content_type="text/html")

    async def status(_: web.Request) -> web.Response:
        snapshot = live.snapshot(ready=ctx.ready.is_set() and not ctx.problems)
        body = snapshot.model_copy(update={"problems": list(ctx.problems.values())})
        return web.Response(text=body.model_dump_json(), content_type="application/json")

    async def metrics(_: web.Request) -> web.Response:
        return web.Response(
            body=live.metrics.exposition(), headers={"Content-Type": CONTENT_TYPE_LATEST}
        )

    async def healthz(_: web.Request) -> web.Response:
        return web.Response(text="ok\n")

    async def readyz(_: web.Request) -> web.Response:
        if not ctx.ready.is_set():
            return web.Response(status=503, text=f"{ctx.role} not ready yet (routes or state)\n")
        if ctx.problems:
            why = "; ".join(ctx.problems.values())
            return web.Response(status=503, text=f"{ctx.role} not ready: {why}\n")
        return web.Response(text="ready\n")

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
    control = topic_name(settings.kafka, Topic.MODELS)
    client = admin(settings)
    address = settings.kafka.bootstrap_servers

    def sample() -> dict[int, int]:
        problem = broker_problem(client, control, address=address)
        if problem is not None:
            raise ServiceError(problem, service="kafka", address=address)
        return group_lag(client, ctx.group, records, address=address)

    @w.app.timer(interval=live.lag_interval_s)
    async def check_and_sample_lag() -> None:
        await check_model_server(ctx)
        try:
            lag = await asyncio.to_thread(sample)
        except ServiceError as err:  # keep the last lag sample; say why not ready
            if ctx.problems.get("broker") != err.message:
                log.warning("%s", err.message)
            ctx.problems["broker"] = err.message
            return
        if ctx.problems.pop("broker", None) is not None:
            log.info("broker at %s answers again", address)
        ctx.live.record_lag(records, lag)


def broker_problem(client: Any, control: str, *, address: str) -> str | None:
    """Why the broker cannot serve this role now (unreachable, no control topic), or None."""
    try:
        topics = client.list_topics(timeout=BROKER_TIMEOUT_S).topics
    except KafkaException as err:
        return f"broker at {address} does not answer: {err.args[0] if err.args else err}"
    if control not in topics:
        return f"control topic {control} does not exist on {address}"
    return None


async def check_model_server(ctx: RoleContext) -> None:
    """Whether the active model server of the role's model answers ready (routing roles)."""
    if ctx.routing is None or ctx.role != "scoring":
        return
    active = ctx.routing.get(ctx.settings.scoring.model).active
    if active is None:
        ctx.problems["model-server"] = f"no route for model {ctx.settings.scoring.model} yet"
        return
    if await ctx.client.ready(active.url, active.model, active.protocol):
        ctx.problems.pop("model-server", None)
        return
    ctx.problems["model-server"] = (
        f"the active model server of {active.model} {active.version} at {active.url} is not ready"
    )

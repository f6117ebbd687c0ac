"""``weir worker``: every role as a supervised child process, one command on one machine.

Each role runs as ``weir worker --role R`` in a process of its own (its own
event loop, consumer group and memory), so a slow monitor, a MinIO outage or a
pipeline run cannot pause scoring. The supervisor

* starts the roles asked for (all by default), each with the same settings;
* restarts a role that exits, with backoff (1 s doubling to 30 s; back to 1 s
  after a role ran for a minute), and says so;
* on SIGTERM/SIGINT stops every child (SIGTERM, then SIGKILL after a grace
  period) and exits; children die with it if it is killed (``PR_SET_PDEATHSIG``);
* with ``--live-port P`` gives each child a live view on a free loopback port
  and serves the merged view on ``P``: one status page and ``/status.json``
  over all roles, ``/metrics`` with a ``role`` label on every sample,
  ``/healthz`` and ``/readyz`` (ready when every role is).
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import logging
import os
import signal
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
from aiohttp import web

from connectors.process import free_port, lower_priority, niced_children_lead_sessions
from connectors.signing import verify_only
from schemas import ConfigurationError
from schemas.settings import Settings, settings_env
from streams.context import PACED_ROLES, PUBLISHERS, ROLES, role_off
from streams.live import LiveStatus, merge_status
from streams.logs import limit_logs
from streams.metrics import CONTENT_TYPE_LATEST, merge_expositions
from streams.status_html import PAGE

log = logging.getLogger("weir.supervisor")

BACKOFF_MIN_S = 1.0
BACKOFF_MAX_S = 30.0
HEALTHY_AFTER_S = 60.0  # a role that ran this long starts again at the shortest backoff
STOP_GRACE_S = 15.0
PR_SET_PDEATHSIG = 1


def _die_with_parent() -> None:  # runs in the child between fork and exec
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL)


def _prepare(niceness: int) -> Callable[[], None]:
    """What a role's child runs between fork and exec: die with the supervisor, and (the
    insight roles) yield the CPU to scoring when the machine is short of it. A child
    with a niceness may lead a session of its own (:func:`start_options`), so
    :func:`connectors.process.lower_priority` sets its autogroup's niceness too:
    otherwise, on a kernel with autogroups, the niceness would count only against the
    supervisor's session (:func:`connectors.process.lower_autogroup`)."""

    def prepare() -> None:
        _die_with_parent()
        if niceness:
            lower_priority(min(19, os.nice(0) + niceness))

    return prepare


def start_options(niceness: int) -> dict[str, Any]:
    """How a role's child is started (``preexec_fn``, ``start_new_session``): a niced one
    leads a session of its own where the supervisor's niceness would otherwise bind it
    only within the supervisor's autogroup
    (:func:`connectors.process.niced_children_lead_sessions`)."""
    return {
        "preexec_fn": _prepare(niceness),
        "start_new_session": niceness > 0 and niced_children_lead_sessions(),
    }


@dataclass
class Child:
    role: str
    live_port: int
    proc: asyncio.subprocess.Process | None = None
    restarts: int = 0


def role_settings(settings: Settings, role: str) -> Settings:
    """What one role's process is given. Only the roles that publish routes (retrainer,
    learner) keep the signing key and run as Kafka's control principal; the others get
    neither."""
    if role in PUBLISHERS:
        return settings
    trimmed = verify_only(settings)
    return trimmed.model_copy(update={"kafka": trimmed.kafka.without_control()})


class Supervisor:
    def __init__(
        self, settings: Settings, roles: tuple[str, ...] = ROLES, *, loglevel: str = "info"
    ) -> None:
        unknown = set(roles) - set(ROLES)
        if unknown:
            raise ConfigurationError(f"unknown roles {sorted(unknown)}; roles: {', '.join(ROLES)}")
        for role in roles:
            off = role_off(settings, role)
            if off is not None:
                log.info("%s", off)
        roles = tuple(r for r in roles if role_off(settings, r) is None)
        self.settings = settings
        self.loglevel = loglevel
        self.children = {r: Child(r, 0) for r in roles}
        if settings.live.port != 0:
            for child in self.children.values():
                child.live_port = self._free_live_port(child)
        self._stopping = asyncio.Event()

    def _free_live_port(self, child: Child) -> int:
        """A free loopback port for ``child``'s live view that is neither the supervisor's
        nor another child's: the OS may hand out again a port its owner has just let go of
        (a role once got the supervisor's own and crashed on it at every start)."""
        taken = {self.settings.live.port} | {
            c.live_port for c in self.children.values() if c is not child
        }
        while (port := free_port()) in taken:
            pass
        return port

    def _argv(self, child: Child) -> list[str]:
        weir = str(Path(sys.executable).parent / "weir")
        argv = [weir, "worker", "--role", child.role, "--loglevel", self.loglevel]
        scoring = self.settings.scoring
        if child.role == "monitor" and scoring.monitor_niceness > scoring.insight_niceness:
            argv += ["--nice-after-start", str(scoring.monitor_niceness)]
        if child.role in PACED_ROLES and "scoring" in self.children:  # they share the cores
            argv += ["--scoring-first"]
        return [*argv, "--worker-id", scoring.worker_id]

    async def _spawn(self, child: Child) -> None:
        if child.restarts and child.live_port:  # its port may have been taken while it was down
            child.live_port = self._free_live_port(child)
        live = self.settings.live.model_copy(update={"port": child.live_port})
        env = settings_env(
            role_settings(self.settings, child.role).model_copy(update={"live": live})
        )
        nice = 0 if child.role == "scoring" else self.settings.scoring.insight_niceness
        child.proc = await asyncio.create_subprocess_exec(
            *self._argv(child), env=env, **start_options(nice)
        )
        log.info("started role %s (pid %d)", child.role, child.proc.pid)

    async def _keep(self, child: Child) -> None:
        """Run one role until the supervisor stops; start it again whenever it exits."""
        loop = asyncio.get_running_loop()
        delay = BACKOFF_MIN_S
        while not self._stopping.is_set():
            started = loop.time()
            await self._spawn(child)
            assert child.proc is not None
            code = await child.proc.wait()
            if self._stopping.is_set():
                return
            if loop.time() - started >= HEALTHY_AFTER_S:
                delay = BACKOFF_MIN_S
            child.restarts += 1
            log.warning(
                "role %s exited with %s; starting it again in %.0fs (restart %d)",
                child.role,
                code,
                delay,
                child.restarts,
            )
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stopping.wait(), delay)
            delay = min(delay * 2, BACKOFF_MAX_S)

    async def _stop_children(self) -> None:
        procs = [c.proc for c in self.children.values() if c.proc and c.proc.returncode is None]
        for proc in procs:
            with contextlib.suppress(ProcessLookupError):
                proc.terminate()
        for proc in procs:
            try:
                await asyncio.wait_for(proc.wait(), STOP_GRACE_S)
            except TimeoutError:
                with contextlib.suppress(ProcessLookupError):
                    proc.kill()
                await proc.wait()

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self._stopping.set)
        keepers = [asyncio.create_task(self._keep(c)) for c in self.children.values()]
        runner = await self._serve_live()
        try:
            await self._stopping.wait()
        finally:
            log.info("stopping roles: %s", ", ".join(self.children))
            await self._stop_children()
            for task in keepers:
                task.cancel()
            await asyncio.gather(*keepers, return_exceptions=True)
            if runner is not None:
                await runner.cleanup()

    # ------------------------------------------------------------------ live view

    async def _gather(
        self, client: httpx.AsyncClient, path: str, *, failures: dict[str, str] | None = None
    ) -> dict[str, bytes]:
        """Each child's 200 answer on ``path``; the others' reasons go to ``failures``."""

        async def one(child: Child) -> tuple[str, bytes | None, str]:
            try:
                r = await client.get(f"http://127.0.0.1:{child.live_port}{path}")
            except httpx.HTTPError as err:
                return child.role, None, f"{child.role} does not answer ({type(err).__name__})"
            if r.status_code == 200:
                return child.role, r.content, ""
            return child.role, None, r.text.strip() or f"{child.role}: HTTP {r.status_code}"

        answers = await asyncio.gather(*(one(c) for c in self.children.values()))
        if failures is not None:
            failures.update({role: why for role, body, why in answers if body is None})
        return {role: body for role, body, _ in answers if body is not None}

    async def _serve_live(self) -> web.AppRunner | None:
        live = self.settings.live
        if live.port == 0:
            return None
        client = httpx.AsyncClient(timeout=2.0)

        async def page(_: web.Request) -> web.Response:
            return web.Response(text=PAGE, content_type="text/html")

        async def status(_: web.Request) -> web.Response:
            parts = {
                role: LiveStatus.model_validate_json(body)
                for role, body in (await self._gather(client, "/status.json")).items()
            }
            if not parts:
                return web.Response(status=503, text="no role answers yet\n")
            merged = merge_status(parts, recent=live.recent)
            merged.ready = merged.ready and set(parts) == set(self.children)
            return web.Response(text=merged.model_dump_json(), content_type="application/json")

        async def metrics(_: web.Request) -> web.Response:
            body = merge_expositions(await self._gather(client, "/metrics"))
            return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})

        async def healthz(_: web.Request) -> web.Response:
            return web.Response(text="ok\n")

        async def readyz(_: web.Request) -> web.Response:
            failures: dict[str, str] = {}
            await self._gather(client, "/readyz", failures=failures)
            if failures:
                why = "; ".join(failures[role] for role in sorted(failures))
                return web.Response(status=503, text=f"not ready: {why}\n")
            return web.Response(text="ready\n")

        app = web.Application()
        app.router.add_get("/", page)
        app.router.add_get("/status.json", status)
        app.router.add_get("/metrics", metrics)
        app.router.add_get("/healthz", healthz)
        app.router.add_get("/readyz", readyz)
        app.on_cleanup.append(lambda _: client.aclose())
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        try:
            await web.TCPSite(runner, live.host, live.port).start()
        except OSError as err:
            await runner.cleanup()
            raise ConfigurationError(
                f"live view cannot bind {live.host}:{live.port}: {err}"
            ) from err
        log.info("live view on http://%s:%d/ (all roles)", live.host, live.port)
        return runner


def run_supervisor(
    settings: Settings, roles: tuple[str, ...] = ROLES, *, loglevel: str = "info"
) -> None:
    logging.basicConfig(level=loglevel.upper(), format="[%(asctime)s] %(name)s: %(message)s")
    limit_logs()
    asyncio.run(Supervisor(settings, roles, loglevel=loglevel).run())

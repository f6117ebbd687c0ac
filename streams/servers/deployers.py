"""Serving a registry version from this machine, and picking the deployer.

:func:`serve` starts a model server child process (:mod:`streams.servers.model_server`)
and waits until it answers; the model host and :class:`LocalDeployer` use it.
:func:`deployer_for` picks the deployer ``WEIR_KSERVE__DEPLOYER`` names (see
:mod:`connectors.deployers`).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

from agents.routing import ModelRoutes, retirable
from connectors.deployers import Deployer, HostDeployer
from connectors.kserve_client import InferenceClient
from connectors.process import ServiceProcess, free_port
from connectors.registry import ModelRegistry
from schemas import WeirError
from schemas.settings import Settings
from streams.routes import fold_routes
from streams.servers.model_server import local_servers, server_process, start_server

log = logging.getLogger("weir.deployers")

SERVER_READY_S = 90  # kserve import + model load from MinIO: ~5-10 s on 2 cores
RETIRING = (
    "retiring %s version %s at %s: no route points at it, and the newest %d unrouted "
    "version(s) stay (WEIR_KSERVE__KEEP_UNROUTED)"
)


def serve(settings: Settings, model: str, version: str, port: int) -> ServiceProcess:
    """Start a model server for ``model``/``version`` on ``port``; return once it is ready."""
    start_server(settings, model, version, port)

    async def wait() -> None:
        async with InferenceClient(settings.kserve) as client:
            await client.wait_ready(
                f"http://127.0.0.1:{port}", model, "v1", timeout_s=SERVER_READY_S
            )

    asyncio.run(wait())
    return server_process(settings, model, version, port)


class Retirement:
    """Which of a model's servers go once a new version is served
    (:func:`agents.routing.retirable`), for the model host and :class:`LocalDeployer` alike.
    The routes on the control topic and the registry's order are read only when more than
    ``WEIR_KSERVE__KEEP_UNROUTED`` others are served; without them, none goes. Blocking."""

    def __init__(
        self,
        settings: Settings,
        *,
        routes: Callable[[str], ModelRoutes] | None = None,
        registered: Callable[[str], list[str]] | None = None,
    ) -> None:
        self.keep = settings.kserve.keep_unrouted
        self.routes = routes or (lambda model: fold_routes(settings)[0].get(model))
        self._registered = registered or (
            lambda model: ModelRegistry.for_settings(settings).versions(model)
        )

    def choose(self, model: str, served: list[str], *, besides: str) -> list[str]:
        """The versions among ``served`` to stop, oldest first."""
        if len(set(served) - {besides}) <= self.keep:
            return []
        try:
            routes, order = self.routes(model), self._registered(model)
        except WeirError as err:  # cannot tell what serves: stop nothing
            log.warning("not retiring old versions of %s: %s", model, err.message)
            return []
        return retirable(served, routes, order, keep=self.keep, besides=besides)


class LocalDeployer:
    """Starts a kserve.ModelServer process on a free loopback port (the local stand-in
    for creating a KServe InferenceService); asked to, it stops the model's servers that
    no route points at, as the model host does (:class:`Retirement`)."""

    def __init__(self, settings: Settings, *, retirement: Retirement | None = None) -> None:
        self._settings = settings
        self._retirement = retirement or Retirement(settings)

    def deploy(self, model: str, version: str) -> str:
        port = free_port()
        serve(self._settings, model, version, port)
        return f"http://127.0.0.1:{port}"

    def retire_unrouted(self, model: str, *, besides: str) -> list[str]:
        """Stop the servers of ``model`` started here that :class:`Retirement` names;
        returns the versions stopped."""
        mine = [(v, port) for m, v, port in local_servers(self._settings) if m == model]
        gone = self._retirement.choose(model, [v for v, _ in mine], besides=besides)
        for version, port in mine:
            if version in gone:
                server_process(self._settings, model, version, port).stop()
                log.info(
                    RETIRING, model, version, f"http://127.0.0.1:{port}", self._retirement.keep
                )
        return gone


def deployer_for(settings: Settings) -> Deployer:
    if settings.kserve.deployer == "host":
        return HostDeployer(settings)
    return LocalDeployer(settings)

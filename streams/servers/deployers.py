"""Serving a registry version from this machine, and picking the deployer.

:func:`serve` starts a model server child process (:mod:`streams.servers.model_server`)
and waits until it answers; the model host and :class:`LocalDeployer` use it.
:func:`deployer_for` picks the deployer ``WEIR_KSERVE__DEPLOYER`` names (see
:mod:`connectors.deployers`).
"""

from __future__ import annotations

import asyncio

from connectors.deployers import Deployer, HostDeployer
from connectors.kserve_client import InferenceClient
from connectors.process import ServiceProcess, free_port
from schemas.settings import Settings
from streams.servers.model_server import server_process, start_server

SERVER_READY_S = 90  # kserve import + model load from MinIO: ~5-10 s on 2 cores


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


class LocalDeployer:
    """Starts a kserve.ModelServer process on a free loopback port (the local stand-in
    for creating a KServe InferenceService)."""

    def __init__(self, settings: Settings) -> None:
        self._settings = settings

    def deploy(self, model: str, version: str) -> str:
        port = free_port()
        serve(self._settings, model, version, port)
        return f"http://127.0.0.1:{port}"


def deployer_for(settings: Settings) -> Deployer:
    if settings.kserve.deployer == "host":
        return HostDeployer(settings)
    return LocalDeployer(settings)

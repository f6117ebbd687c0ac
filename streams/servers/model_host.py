"""The model host: serves registry versions on request, one kserve.ModelServer each.

Where there is no cluster to create a KServe InferenceService per version (the
docker-compose setup, a VM), the model host plays that part for every worker:
the retraining agent (any worker) and ``weir models bootstrap`` ask it over
HTTP to serve ``model``/``version``; it checks the version is in the MinIO
registry, starts ``weir serve``'s server process on a port of its own
(``WEIR_KSERVE__PORT_MIN`` to ``PORT_MAX``, or any free one), waits until the
server answers ready, and hands back ``http://WEIR_KSERVE__ADVERTISED_HOST:port``
for the ``activate`` event. Every worker can reach that URL, which a server
started inside one worker's container could not offer the others.

API (JSON, schemas in :mod:`schemas.deployments`):

* ``POST /v1/deployments`` ``{"model", "version"}`` → **201** with the
  deployment, **200** if it was already served, **404** if the registry has no
  such version, **400** for a bad body, **503** if the server did not come up
  (the reason includes its log's last lines);
* ``GET /v1/deployments`` — what is served; ``DELETE
  /v1/deployments/{model}/{version}`` stops one — **409** while a route on the
  control topic (active, canary, shadow or a speculation's member) points at
  it; ``GET /healthz``.

Old versions are retired by the host itself: once it has answered a request
for a new version of a model, it stops that model's servers no route points
at, but the newest ``WEIR_KSERVE__KEEP_UNROUTED`` (1: the version a rollback
goes back to). A loop that retrains for weeks therefore never fills the port
range. When the routes cannot be read, nothing is stopped; the next
deployment catches up.

With ``WEIR_KSERVE__HOST_TOKEN`` set, ``POST`` and ``DELETE`` need
``Authorization: Bearer <token>`` (**401** otherwise; the host deployer sends
it); without it they are open to whoever reaches the port, which the host
says in a warning when it starts.

What it serves is desired state, kept in ``<state dir>/model-host.json``: a
host that restarts serves the same versions on the same ports again, so routes
already on the control topic stay valid. On shutdown it stops the servers it
started (by PID), and keeps the file.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import json
import logging
import socket
from collections.abc import AsyncIterator, Callable
from pathlib import Path

from pydantic import ValidationError
from starlette.applications import Starlette
from starlette.background import BackgroundTask
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from agents.routing import ModelRoutes
from connectors.process import ServiceProcess
from connectors.registry import ModelRegistry
from schemas import ServiceError, WeirError
from schemas.deployments import Deployment, DeploymentRequest
from schemas.settings import Settings
from streams.servers.deployers import RETIRING, Retirement
from streams.servers.deployers import serve as serve_and_wait
from streams.servers.model_server import server_process

log = logging.getLogger("weir.model_host")

ServeFn = Callable[[Settings, str, str, int], ServiceProcess]


class NotRegisteredError(WeirError):
    """The registry has no such model version."""


def _port_free(host: str, port: int) -> bool:
    with socket.socket() as s:
        # as the model server binds (uvicorn sets SO_REUSEADDR): a port left in TIME_WAIT by
        # a retired server's connections is free for the next one; a listening port is not
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError:
            return False
    return True


class ModelHost:
    """Serves registry versions as kserve.ModelServer processes; one lock, no races."""

    def __init__(
        self,
        settings: Settings,
        *,
        serve: ServeFn | None = None,
        registered: Callable[[str], list[str]] | None = None,
        routes: Callable[[str], ModelRoutes] | None = None,
    ) -> None:
        self.settings = settings.as_model_reader()  # it only reads models
        self._serve = serve or serve_and_wait
        if registered is None:
            registry = ModelRegistry.for_settings(self.settings)
            registered = registry.versions
        self._registered = registered  # a model's versions, oldest first
        self.retirement = Retirement(self.settings, routes=routes, registered=registered)
        self._deployments: dict[tuple[str, str], Deployment] = {}
        self._lock = asyncio.Lock()

    @property
    def state_file(self) -> Path:
        return self.settings.stack.run_dir / "model-host.json"

    def deployments(self) -> list[Deployment]:
        return sorted(self._deployments.values(), key=lambda d: (d.model, d.version))

    def _url(self, port: int) -> str:
        return f"http://{self.settings.kserve.advertised_host}:{port}"

    def _pick_port(self) -> int:
        k = self.settings.kserve
        taken = {d.port for d in self._deployments.values()}
        if k.port_min == 0:
            with socket.socket() as s:
                s.bind((k.bind_host, 0))
                return int(s.getsockname()[1])
        for port in range(k.port_min, k.port_max + 1):
            if port not in taken and _port_free(k.bind_host, port):
                return port
        raise ServiceError(
            f"no free port left in {k.port_min}-{k.port_max} for another model server "
            f"(WEIR_KSERVE__PORT_MIN/PORT_MAX)",
            service="model-host",
            address=k.bind_host,
            retriable=False,
        )

    def _save(self) -> None:
        self.state_file.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.state_file.with_suffix(".tmp")
        tmp.write_text(
            json.dumps([d.model_dump(exclude={"pid"}) for d in self.deployments()], indent=2)
        )
        tmp.replace(self.state_file)

    async def _start(self, model: str, version: str, port: int) -> Deployment:
        proc = server_process(self.settings, model, version, port)
        pid = proc.pid()
        if pid is None:  # not adopted from an earlier run of this host: start it
            try:
                proc = await asyncio.to_thread(self._serve, self.settings, model, version, port)
            except Exception as exc:
                await asyncio.to_thread(proc.stop)  # waits up to 30 s for the process to exit
                raise ServiceError(
                    f"model server for {model} version {version} did not become ready on "
                    f"port {port}: {exc}\n{proc.log_tail(10)}",
                    service="model-server",
                    address=self._url(port),
                ) from exc
            pid = proc.pid()
        deployment = Deployment(
            model=model, version=version, port=port, url=self._url(port), pid=pid
        )
        self._deployments[(model, version)] = deployment
        self._save()
        log.info("serving %s version %s at %s (pid %s)", model, version, deployment.url, pid)
        return deployment

    async def deploy(self, model: str, version: str) -> tuple[Deployment, bool]:
        """Serve ``model``/``version``; returns the deployment and whether it is new."""
        async with self._lock:
            known = self._deployments.get((model, version))
            if (
                known is not None
                and server_process(self.settings, model, version, known.port).pid()
            ):
                return known, False
            versions = await asyncio.to_thread(self._registered, model)
            if version not in versions:
                have = ", ".join(versions) or "none"
                raise NotRegisteredError(
                    f"{model} version {version} is not in the registry "
                    f"(s3://{self.settings.minio.models_bucket}/{model}/; versions: {have})"
                )
            port = known.port if known is not None else self._pick_port()
            return await self._start(model, version, port), True

    async def retire_unrouted(self, model: str, *, besides: str) -> list[Deployment]:
        """Stop the servers of ``model`` that :class:`Retirement` names: no route points at
        them, and they are neither the newest ``WEIR_KSERVE__KEEP_UNROUTED`` of those nor
        ``besides`` (just deployed: its route is on its way)."""
        served = [d.version for d in self.deployments() if d.model == model]
        chosen = await asyncio.to_thread(self.retirement.choose, model, served, besides=besides)
        retired = []
        for version in chosen:
            gone = await self.retire(model, version)
            if gone is not None:
                log.info(RETIRING, model, version, gone.url, self.retirement.keep)
                retired.append(gone)
        return retired

    async def retire(self, model: str, version: str) -> Deployment | None:
        async with self._lock:
            gone = self._deployments.pop((model, version), None)
            if gone is not None:
                await asyncio.to_thread(
                    server_process(self.settings, model, version, gone.port).stop
                )
                self._save()
            return gone

    async def restore(self) -> None:
        """Serve again what the state file lists (adopting servers still running)."""
        try:
            wanted = [Deployment.model_validate(d) for d in json.loads(self.state_file.read_text())]
        except FileNotFoundError:
            return
        async with self._lock:
            for d in wanted:
                try:
                    await self._start(d.model, d.version, d.port)
                except WeirError as exc:  # the others still get served
                    log.error("could not restore %s version %s: %s", d.model, d.version, exc)

    async def stop_all(self) -> None:
        """Stop every server this host started; the state file stays for the next start."""
        for d in list(self._deployments.values()):
            await asyncio.to_thread(server_process(self.settings, d.model, d.version, d.port).stop)


def _problem(status: int, error: str, reason: str) -> JSONResponse:
    return JSONResponse({"error": error, "reason": reason}, status_code=status)


def create_model_host_app(host: ModelHost) -> Starlette:
    token = host.settings.kserve.host_token

    def unauthorized(request: Request) -> JSONResponse | None:
        if token is None:
            return None
        given = request.headers.get("authorization", "").encode()
        if hmac.compare_digest(given, f"Bearer {token.get_secret_value()}".encode()):
            return None
        return _problem(401, "Unauthorized", "this call needs WEIR_KSERVE__HOST_TOKEN")

    async def post(request: Request) -> JSONResponse:
        refused = unauthorized(request)
        if refused is not None:
            return refused
        try:
            wanted = DeploymentRequest.model_validate_json(await request.body())
        except ValidationError as err:
            return _problem(400, "BadRequest", str(err))
        try:
            deployment, created = await host.deploy(wanted.model, wanted.version)
        except NotRegisteredError as err:
            return _problem(404, "NotRegistered", err.message)
        except ServiceError as err:
            return _problem(503, "ServerNotReady", err.message)
        # once the answer is out (the caller routes to it meanwhile): the old ones go
        retire = BackgroundTask(host.retire_unrouted, wanted.model, besides=wanted.version)
        return JSONResponse(
            deployment.model_dump(),
            status_code=201 if created else 200,
            background=retire if created else None,
        )

    async def listing(_: Request) -> JSONResponse:
        return JSONResponse([d.model_dump() for d in host.deployments()])

    async def delete(request: Request) -> JSONResponse:
        refused = unauthorized(request)
        if refused is not None:
            return refused
        model, version = request.path_params["model"], request.path_params["version"]
        try:
            slots = (await asyncio.to_thread(host.retirement.routes, model)).slots_of(version)
        except WeirError as err:  # cannot tell: do not stop what may be serving
            return _problem(503, "RoutesUnknown", f"cannot read the routes: {err.message}")
        if slots:
            return _problem(
                409,
                "Routed",
                f"{model} version {version} is routed ({', '.join(slots)}); publish another "
                "route (or clear it) before stopping its server",
            )
        gone = await host.retire(model, version)
        if gone is None:
            return _problem(404, "NotServed", f"{model} version {version} is not served here")
        return JSONResponse(gone.model_dump())

    async def healthz(_: Request) -> JSONResponse:
        return JSONResponse({"ok": True, "serving": len(host.deployments())})

    @contextlib.asynccontextmanager
    async def lifespan(_: Starlette) -> AsyncIterator[None]:
        await host.restore()
        try:
            yield
        finally:
            await host.stop_all()

    return Starlette(
        routes=[
            Route("/v1/deployments", post, methods=["POST"]),
            Route("/v1/deployments", listing, methods=["GET"]),
            Route("/v1/deployments/{model}/{version}", delete, methods=["DELETE"]),
            Route("/healthz", healthz, methods=["GET"]),
        ],
        lifespan=lifespan,
    )


def run_model_host(settings: Settings, *, port: int) -> None:
    """Serve the model host's API until interrupted (binds ``WEIR_KSERVE__BIND_HOST``)."""
    import uvicorn

    if settings.kserve.host_token is None:
        log.warning(
            "WEIR_KSERVE__HOST_TOKEN is not set: anyone who reaches port %d can ask for "
            "servers or stop unrouted ones",
            port,
        )
    uvicorn.run(
        create_model_host_app(ModelHost(settings)),
        host=settings.kserve.bind_host,
        port=port,
        log_level="info",
    )

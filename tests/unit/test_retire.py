"""The model host and the local deployer stop servers no route points at, keeping the
newest few for a rollback.

The model host's server starts and stops are stand-ins here (the real ones, with
kserve.ModelServer processes, are in tests/integration/test_model_host.py); the local
deployer stops real processes that carry a model server's PID file and command-line mark.
The routes are a table folded from the model-version events a test gives.
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
from pathlib import Path

import pytest

from agents.routing import ModelRoutes, RoutingTable
from connectors.process import ServiceProcess
from schemas import ModelVersionEvent, ServiceError
from schemas.payloads import SpeculativeMember
from schemas.settings import KServeSettings, Settings, StackSettings
from streams.servers.deployers import LocalDeployer, Retirement
from streams.servers.model_host import ModelHost
from streams.servers.model_server import server_process

MODEL = "m"


class Fixture:
    def __init__(self, tmp_path: Path, keep: int) -> None:
        self.table = RoutingTable()
        self.registered = ["1", "2", "3", "4", "5"]  # oldest first, as the registry lists them
        self.routes_down = False
        self.started: list[str] = []
        settings = Settings(
            kserve=KServeSettings(keep_unrouted=keep),
            stack=StackSettings(state_dir=tmp_path),
        )
        self.host = ModelHost(
            settings, serve=self.serve, registered=self.versions, routes=self.routes
        )

    def serve(self, settings: Settings, model: str, version: str, port: int) -> ServiceProcess:
        self.started.append(version)
        return server_process(settings, model, version, port)

    def versions(self, model: str) -> list[str]:
        return list(self.registered)

    def routes(self, model: str) -> ModelRoutes:
        if self.routes_down:
            raise ServiceError("the control topic is away", service="kafka", address="x:9092")
        return self.table.get(model)

    def route(self, action: str, version: str, **kw: object) -> None:
        url = None if action.startswith("clear") else f"http://h:{8100 + int(version)}"
        event = ModelVersionEvent(action=action, model=MODEL, version=version, url=url, **kw)
        decision = self.table.apply(event, ready=True)
        assert decision.accepted, decision.reason

    def deploy(self, version: str) -> None:
        """As ``POST /v1/deployments`` does: deploy, answer, then retire."""

        async def post() -> None:
            await self.host.deploy(MODEL, version)
            await self.host.retire_unrouted(MODEL, besides=version)

        asyncio.run(post())

    def served(self) -> list[str]:
        return [d.version for d in self.host.deployments()]


@pytest.fixture
def host(tmp_path: Path) -> Fixture:
    return Fixture(tmp_path, keep=1)


def test_each_new_version_retires_the_older_unrouted_ones_but_the_newest(host: Fixture):
    host.deploy("1")
    host.route("activate", "1")
    host.deploy("2")  # version 1 active, 2 on its way: both stay
    assert host.served() == ["1", "2"]
    host.route("activate", "2")
    host.deploy("3")  # 1 unrouted but the newest unrouted one (a rollback's target): stays
    assert host.served() == ["1", "2", "3"]
    host.route("activate", "3")
    host.deploy("4")  # 1 and 2 unrouted: the older goes
    assert host.served() == ["2", "3", "4"]
    host.route("activate", "4")
    host.deploy("5")
    assert host.served() == ["3", "4", "5"]
    assert host.started == ["1", "2", "3", "4", "5"]


def test_a_version_any_slot_points_at_is_never_retired(host: Fixture):
    host.deploy("1")
    host.route("activate", "1")
    host.deploy("2")
    host.route("shadow", "2")
    host.deploy("3")
    host.route("canary", "3", weight=0.1)
    host.deploy("4")
    host.deploy("5")  # 4 is unrouted, the newest such: stays
    assert host.served() == ["1", "2", "3", "4", "5"]


def test_the_order_is_the_registrys_not_the_names(tmp_path: Path):
    host = Fixture(tmp_path, keep=1)
    host.registered = ["9", "10", "11"]  # "10" < "9" as text; the registry says 9 is older
    for version in ("9", "10", "11"):
        host.deploy(version)
    assert host.served() == ["10", "11"]


def test_keep_zero_leaves_only_the_routed_and_the_new_one(tmp_path: Path):
    host = Fixture(tmp_path, keep=0)
    host.deploy("1")
    host.route("activate", "1")
    host.deploy("2")
    host.route("activate", "2")
    host.deploy("3")
    assert host.served() == ["2", "3"]


def test_without_the_routes_nothing_is_stopped(host: Fixture):
    for version in ("1", "2"):
        host.deploy(version)
    host.routes_down = True
    host.deploy("3")
    host.deploy("4")
    assert host.served() == ["1", "2", "3", "4"]
    host.routes_down = False
    host.deploy("5")  # once they can be read again, the next deployment catches up
    assert host.served() == ["4", "5"]


def test_a_member_of_a_speculative_route_is_not_retired(host: Fixture):
    host.deploy("1")
    host.route("activate", "1")
    host.deploy("2")
    host.deploy("3")  # 2 is unrouted, the newest such: stays
    members = [
        SpeculativeMember(version=v, url=f"http://h:810{v}", protocol="v1") for v in ("1", "2")
    ]
    event = ModelVersionEvent(
        action="speculate",
        model=MODEL,
        version="race",
        members=members,
        deadline_ms=50,
        decider="first",
    )
    assert host.table.apply(event, ready=True).accepted
    assert host.table.get(MODEL).slots_of("2") == ["speculative"]
    host.deploy("4")  # 3 is the newest unrouted one: 2 would go, but a speculation calls it
    assert host.served() == ["1", "2", "3", "4"]


def test_the_local_deployer_stops_its_unrouted_servers_of_that_model(tmp_path: Path):
    fixture = Fixture(tmp_path, keep=1)
    settings = fixture.host.settings
    settings.stack.run_dir.mkdir(parents=True, exist_ok=True)
    procs: dict[tuple[str, str], subprocess.Popen[bytes]] = {}
    for model, version in ((MODEL, "1"), (MODEL, "2"), (MODEL, "3"), (MODEL, "4"), ("m2", "1")):
        port = 9100 + len(procs)
        mark = f"streams.servers.model_server {model} {version} {port}"  # as its argv says
        proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(300)", mark])
        procs[(model, version)] = proc
        server_process(settings, model, version, port).pid_file.write_text(f"{proc.pid}\n")
    try:
        fixture.route("activate", "3")
        retirement = Retirement(settings, routes=fixture.routes, registered=fixture.versions)
        deployer = LocalDeployer(settings, retirement=retirement)
        # 4 just deployed, 3 active, 2 the newest unrouted one: 1 goes, and m2 is another model
        assert deployer.retire_unrouted(MODEL, besides="4") == ["1"]
        assert procs[(MODEL, "1")].wait(timeout=30) is not None
        alive = {k for k, p in procs.items() if p.poll() is None}
        assert alive == {(MODEL, "2"), (MODEL, "3"), (MODEL, "4"), ("m2", "1")}
        fixture.routes_down = True  # without the routes, nothing
        fixture.route("activate", "4")
        assert deployer.retire_unrouted(MODEL, besides="4") == []
        fixture.routes_down = False
        assert deployer.retire_unrouted(MODEL, besides="4") == ["2"]
        assert procs[(MODEL, "2")].wait(timeout=30) is not None
    finally:
        for proc in procs.values():
            proc.kill()
            proc.wait()

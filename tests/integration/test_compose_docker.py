"""docker-compose.yml for real: `docker compose up` on images built here closes the loop.

The rehearsal (test_compose_rehearsal.py) runs the compose file's commands as
local processes; this test runs the file itself, on a Docker engine of the
project's own (deploy/images/engine.sh: Debian's dockerd, its own data root,
socket and pidfile under ~/.cache/weir/engine, stopped afterwards by PID if
this test started it) and images built with no registry (deploy/images/build.sh:
a debootstrap base, Debian's Python and Java, the Maven jars and the MinIO
build of `weir stack fetch`), with deploy/compose.local.yml pointing at them.

It checks what the rehearsal checks (tests/compose_checks.py: version 1 served,
the drift retrained into version 2, both scoring replicas on it as their own
/metrics and /status.json say, every record scored), and what only containers
can show: every container runs as a non-root user, the named volumes (MinIO's
data, the model host's state) survive `docker compose restart`, and
`docker compose down -v` leaves no container, volume or network of the project.

Ports: the project runs in a network of its own; only the compose file's
127.0.0.1 ports are published (29092, 29000-29001, 8070, 8080, 8090-8098,
8100-8119), and the test first checks that every one is free, so it cannot
collide with a local stack (9092/9093, 9000/9001) or anything else.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
from minio import Minio

from schemas.settings import Settings
from tests import compose_checks
from tests.compose_file import REPO, host_ports, resolve, services

pytestmark = pytest.mark.integration

ENGINE = REPO / "deploy" / "images" / "engine.sh"
BUILD = REPO / "deploy" / "images" / "build.sh"
FILES = ["-f", str(REPO / "docker-compose.yml"), "-f", str(REPO / "deploy" / "compose.local.yml")]
INSTALL_S = 900  # cold: apt-get install docker.io, then Compose built with Go (about 2 min)
BUILD_S = 1200  # cold: debootstrap, Debian's Python and Java, pip install of weir's dependencies
UP_S = 600  # init, the model host, bootstrap's pipeline run and model server, the roles
LOOP_S = compose_checks.STREAM_S + compose_checks.SCORED_S  # version 2 serving, then the rest
HEALTHY_S = 180
POLL_S = 1.0  # between looks at container states (each look is a docker call)


def run(argv: list[str], env: dict[str, str], timeout: float) -> str:
    done = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=timeout)
    assert done.returncode == 0, f"{argv[:4]} exited {done.returncode}:\n{done.stderr[-3000:]}"
    return done.stdout


@dataclass
class Engine:
    env: dict[str, str]  # the process environment with DOCKER_HOST and DOCKER_CONFIG

    def docker(self, *args: str, timeout: float = 120) -> str:
        return run(["docker", *args], self.env, timeout)


@pytest.fixture(scope="module")
def engine() -> Iterator[Engine]:
    """The project's dockerd, installed when missing; stopped at the end if started here."""
    if sys.platform != "linux":
        pytest.skip("dockerd runs on Linux only")
    if os.geteuid() != 0 and shutil.which("sudo") is None:
        pytest.skip("dockerd needs root: run as root or with sudo")
    env = dict(os.environ)
    run([str(ENGINE), "install"], env, INSTALL_S)
    for line in run([str(ENGINE), "env"], env, 30).split("export ", 1)[1].split():
        key, value = line.split("=", 1)
        env[key] = value
    started = subprocess.run([str(ENGINE), "status"], env=env).returncode != 0
    if started:
        run([str(ENGINE), "start"], env, 120)
    try:
        yield Engine(env)
    finally:
        if started:
            run([str(ENGINE), "stop"], env, 120)


@pytest.fixture(scope="module")
def images(engine: Engine) -> None:
    """The local images; weir:latest is built from this checkout every time (its
    dependency layer stays cached while pyproject.toml is unchanged)."""
    env = engine.env | {"WEIR_IMAGES_BASE": "local"}
    run([str(BUILD)], env, BUILD_S)


@dataclass
class Project:
    engine: Engine
    name: str

    def compose(self, *args: str, timeout: float = 120) -> str:
        return self.engine.docker("compose", "-p", self.name, *FILES, *args, timeout=timeout)

    def containers(self) -> list[dict[str, Any]]:
        out = self.compose("ps", "--all", "--format", "json")
        return [json.loads(line) for line in out.splitlines() if line.strip()]

    def container(self, service: str) -> dict[str, Any]:
        (found,) = [c for c in self.containers() if c["Service"] == service]
        return found

    def inspect(self, name: str) -> dict[str, Any]:
        return json.loads(self.engine.docker("inspect", name))[0]

    def host_port(self, service: str, port: int, index: int = 1) -> int:
        out = self.compose("port", "--index", str(index), service, str(port))
        return int(out.strip().rsplit(":", 1)[1])

    def url(self, service: str, port: int, index: int = 1) -> str:
        return f"http://127.0.0.1:{self.host_port(service, port, index)}"

    def left_behind(self) -> dict[str, list[str]]:
        label = f"label=com.docker.compose.project={self.name}"
        return {
            kind: self.engine.docker(*cmd, "--filter", label, "--format", field).split()
            for kind, cmd, field in (
                ("containers", ["ps", "--all"], "{{.Names}}"),
                ("volumes", ["volume", "ls"], "{{.Name}}"),
                ("networks", ["network", "ls"], "{{.Name}}"),
            )
        }


def published_ports() -> list[int]:
    return sorted({p for s in services().values() for r in host_ports(s) for p in r})


def taken(port: int) -> bool:
    with socket.socket() as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return True
    return False


@pytest.fixture
def project(engine: Engine, images: None) -> Iterator[Project]:
    busy = [p for p in published_ports() if taken(p)]
    assert not busy, (
        f"127.0.0.1 ports {busy} are in use; the compose file publishes them: stop what holds "
        "them (e.g. another `docker compose up` or `weir model-host --port 8070`) and rerun"
    )
    p = Project(engine, f"weir-it-{uuid.uuid4().hex[:8]}")
    try:
        yield p
    finally:
        with contextlib.suppress(AssertionError, subprocess.TimeoutExpired):
            p.compose("down", "--volumes", "--timeout", "30", timeout=180)


class Watch:
    """Fails fast when a long-running service's container has exited or restarts; asks
    the engine at most every POLL_S, as the collector checks its condition more often."""

    def __init__(self, project: Project) -> None:
        self.project = project
        self.last = 0.0
        self.states: dict[str, dict[str, Any]] = {}

    def look(self) -> dict[str, dict[str, Any]]:
        """The project's containers by name, as of at most POLL_S ago."""
        if time.monotonic() - self.last >= POLL_S:
            self.last = time.monotonic()
            self.states = {c["Name"]: c for c in self.project.containers()}
        return self.states

    def check_running(self) -> bool:
        """False, always; raises if a long-running service's container is not running."""
        for name, c in self.look().items():
            if services()[c["Service"]].get("restart", "no") == "no":
                continue
            assert c["State"] == "running", f"{name} is {c['State']}:\n{self.logs(c['Service'])}"
        return False

    def logs(self, service: str) -> str:
        return self.project.compose("logs", "--no-color", "--tail", "60", service)

    def exited(self, service: str) -> bool:
        return self.check_running() or any(
            c["Service"] == service and c["State"] == "exited" for c in self.look().values()
        )


def wait_healthy(project: Project, services_: list[str]) -> None:
    deadline = time.monotonic() + HEALTHY_S
    while True:
        health = {c["Service"]: c.get("Health") for c in project.containers()}
        if all(health.get(s) == "healthy" for s in services_):
            return
        assert time.monotonic() < deadline, f"not healthy in {HEALTHY_S}s: {health}"
        time.sleep(POLL_S)  # the healthchecks' own interval is 5 s; this only looks


# cold, the fixtures build Compose and every image first: the whole test took 10 min
# here; warm, 4 (README "docker compose, for real")
@pytest.mark.timeout(INSTALL_S + BUILD_S + UP_S + 2 * LOOP_S)
def test_docker_compose_up_closes_the_loop(project: Project):
    # up: init, model host, bootstrap, the roles, ingress and producer, in depends_on
    # order (compose waits for init and bootstrap to exit 0, for health where asked)
    project.compose("up", "--detach", "--no-build", timeout=UP_S)
    watch = Watch(project)

    base = Settings()
    s = base.model_copy(
        update={
            "kafka": base.kafka.model_copy(
                update={
                    "bootstrap_servers": "127.0.0.1:29092",  # the HOST listener
                    "managed": False,
                    "topic_prefix": "weir",
                }
            ),
            "scoring": base.scoring.model_copy(update={"model": "weir-demo"}),
        }
    )
    env = {k: resolve(v) for k, v in services()["scoring"]["environment"].items()}
    assert env["WEIR_SCORING__MODEL"] == s.scoring.model
    collector = compose_checks.collector(s, group=f"docker-{project.name}")
    try:

        def stop_producer() -> None:
            project.compose("stop", "--timeout", "30", "producer", timeout=90)  # SIGTERM
            producer = project.container("producer")
            assert producer["ExitCode"] == 0, watch.logs("producer")

        compose_checks.stream_until_swapped(
            collector,
            s,
            check_running=watch.check_running,
            producer_exited=lambda: watch.exited("producer"),
            stop_producer=stop_producer,
        )
    finally:
        collector.close()

    replicas = int(services()["scoring"]["deploy"]["replicas"])
    scorers = {}
    for index in range(1, replicas + 1):
        c = project.inspect(f"{project.name}-scoring-{index}")
        scorers[c["Config"]["Hostname"]] = project.url("scoring", 8090, index)  # its worker id
    compose_checks.check_loop_closed(
        collector,
        s,
        compose_checks.Where(
            model_host=project.url("model-host", 8070),
            retrainer=project.url("retrainer", 8090),
            scorers=scorers,
            served_prefix="http://model-host:",  # the compose service's name, on its network
        ),
    )

    # every container, one-shots included, runs as a non-root user
    containers = project.containers()
    assert {c["Service"] for c in containers} >= {"kafka", "minio", "init", "producer"}
    for c in containers:
        user = project.inspect(c["Name"])["Config"]["User"].split(":")[0]
        assert user not in ("", "0", "root"), f"{c['Name']} runs as {user or 'root'}"
        if c["State"] == "running":
            uid = project.engine.docker("exec", c["Name"], "id", "-u").strip()
            assert uid != "0", f"{c['Name']} runs as root"

    # the named volumes survive a restart: MinIO keeps the registry and the archive,
    # the model host what it serves
    volumes = {
        v: project.engine.docker("volume", "inspect", "--format", "{{.CreatedAt}}", v).strip()
        for v in (f"{project.name}_minio-data", f"{project.name}_model-host-state")
    }
    minio = Minio(
        f"127.0.0.1:{project.host_port('minio', 9000)}",
        access_key=s.minio.access_key,
        secret_key=s.minio.secret_key.get_secret_value(),
        secure=False,
    )

    def stored() -> set[tuple[str, str]]:
        return {
            (b.name, str(o.object_name))
            for b in minio.list_buckets()
            for o in minio.list_objects(b.name, recursive=True)
        }

    objects = stored()
    assert objects, "MinIO holds the registry's models and the archived rows"
    deployments = httpx.get(project.url("model-host", 8070) + "/v1/deployments", timeout=10)
    served = {(d["version"], d["url"]) for d in deployments.json()}
    project.compose("restart", "minio", "model-host", timeout=180)
    wait_healthy(project, ["minio", "model-host"])
    after = {
        v: project.engine.docker("volume", "inspect", "--format", "{{.CreatedAt}}", v).strip()
        for v in volumes
    }
    assert after == volumes, "the same volumes, not new ones"
    assert stored() >= objects
    deployments = httpx.get(project.url("model-host", 8070) + "/v1/deployments", timeout=10)
    assert {(d["version"], d["url"]) for d in deployments.json()} == served

    # down -v leaves nothing of the project behind (the same look saw it all before)
    before = project.left_behind()
    assert set(volumes) <= set(before["volumes"]) and len(before["containers"]) == len(containers)
    project.compose("down", "--volumes", "--timeout", "30", timeout=180)
    assert project.left_behind() == {"containers": [], "volumes": [], "networks": []}

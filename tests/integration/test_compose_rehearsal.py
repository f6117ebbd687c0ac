"""docker-compose.yml rehearsed without Docker: its services' commands close the loop.

The fast check: test_compose_docker.py runs the file itself on images built
here (minutes more, and a Docker engine); this runs every weir service of the
compose file, as written there, as a local process: the same ``weir``
subcommand and arguments, the same ``WEIR_*`` environment, started in the
order its ``depends_on`` conditions give (one-shots must exit 0, healthchecks
are run as written), ``deploy.replicas`` copies of a replicated service. The
local stack stands in for the ``kafka`` and ``minio`` services.

What a container network provides is translated, and nothing else:

* service host names become 127.0.0.1 (``kafka:9092`` and ``minio:9000`` the
  running stack's addresses), ``0.0.0.0`` binds become loopback;
* each container port a service publishes gets a free local port (processes
  share one network namespace here); the model host's published port range
  becomes a block of free ports below the OS's ephemeral range, so a model server
  never takes a port the OS just handed to this plan for another service;
* every replica gets its own state directory and worker id (a container has
  its own filesystem and host name);
* topics and the model name get this run's prefix, so the registry starts empty.

The roles run as the file runs them: one service per role (``weir worker
--role R``), two ``scoring`` replicas and one of each other role, each in a
consumer group of its own, connected only by topics. Then the loop must close
as ``weir demo``'s does: bootstrap trains version 1 and the model host serves
it; the producer's stream drifts; the monitor and performance roles alert; the
retrainer trains version 2 on what feedback archived and has the model host
serve it; both scoring replicas switch (their own ``/metrics`` and
``/status.json`` say so), and every record is scored — all of it while CPU
hogs keep both cores busy, as on a loaded machine. The facts are checked by
tests/compose_checks.py, as for the real compose run.
"""

from __future__ import annotations

import contextlib
import os
import re
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from connectors.process import free_port
from schemas.settings import Settings
from tests import compose_checks
from tests.compose_file import as_list, compose_env, resolve, role_services, services
from tests.load import busy_seconds

pytestmark = pytest.mark.integration

WEIR = str(Path(sys.executable).parent / "weir")
STAND_INS = ("kafka", "minio")  # the local stack plays these
ONE_SHOT_S = 300  # bootstrap: the pipeline's local runner plus a model server start
HEALTHY_S = 120


def free_block(size: int, start: int = 24_000) -> int:
    """The first of ``size`` consecutive loopback ports, all free now, below the ephemeral
    range (32768 up) that ``free_port`` and every outgoing connection draw from."""
    for first in range(start, 32_768 - size, size):
        try:
            with contextlib.ExitStack() as held:
                for port in range(first, first + size):
                    sock = held.enter_context(socket.socket())
                    sock.bind(("127.0.0.1", port))
            return first
        except OSError:
            continue
    raise AssertionError(f"no {size} consecutive free ports from {start}")


@dataclass
class Replica:
    service: str
    index: int
    ports: dict[int, int]  # container port → local port
    argv: list[str]
    env: dict[str, str]
    log: Path
    proc: subprocess.Popen[bytes] | None = None


@dataclass
class Rehearsal:
    live: Settings
    prefix: str
    model: str
    tmp: Path
    replicas: dict[str, list[Replica]] = field(default_factory=dict)

    def local_url(self, service: str, port: int) -> str:
        return f"http://127.0.0.1:{self.replicas[service][0].ports[port]}"

    def translate(self, value: str) -> str:
        def url(match: re.Match[str]) -> str:
            return self.local_url(match.group(1), int(match.group(2)))

        names = "|".join(re.escape(n) for n in self.replicas)
        return re.sub(rf"http://({names}):(\d+)", url, value) if names else value

    def plan(self, name: str, service: dict[str, Any]) -> list[Replica]:
        count = int((service.get("deploy") or {}).get("replicas", 1))
        targets: set[int] = set()
        for spec in service.get("ports", []):
            low, _, high = str(spec).rsplit(":", 1)[1].partition("-")
            if not high:  # a published range is a model-server pool: any free port instead
                targets.add(int(low))
        planned = []
        for index in range(count):
            ports = {t: free_port() for t in targets}
            env = {k: resolve(v) for k, v in compose_env(service).items()}
            for key, value in list(env.items()):
                if value == "0.0.0.0":
                    env[key] = "127.0.0.1"
                elif value.isdigit() and int(value) in ports:
                    env[key] = str(ports[int(value)])
                elif value in self.replicas or value == name:  # a host name handed out
                    env[key] = "127.0.0.1"
            if "WEIR_KSERVE__PORT_MIN" in env:
                size = int(env["WEIR_KSERVE__PORT_MAX"]) - int(env["WEIR_KSERVE__PORT_MIN"]) + 1
                first = free_block(size)
                env["WEIR_KSERVE__PORT_MIN"] = str(first)
                env["WEIR_KSERVE__PORT_MAX"] = str(first + size - 1)
            env.update(
                WEIR_KAFKA__BOOTSTRAP_SERVERS=self.live.kafka.bootstrap_servers,
                WEIR_MINIO__ENDPOINT=self.live.minio.endpoint,
                WEIR_MINIO__ACCESS_KEY=self.live.minio.access_key,
                WEIR_MINIO__SECRET_KEY=self.live.minio.secret_key.get_secret_value(),
                WEIR_KAFKA__TOPIC_PREFIX=self.prefix,
                WEIR_SCORING__MODEL=self.model,
                WEIR_SCORING__WORKER_ID=f"{name}-{index + 1}",
                WEIR_STACK__STATE_DIR=str(self.tmp / f"{name}-{index + 1}"),
            )
            args = as_list(service["command"])
            args = [
                str(ports[int(a)]) if i and args[i - 1] == "--port" and int(a) in ports else a
                for i, a in enumerate(args)
            ]
            planned.append(
                Replica(name, index, ports, [WEIR, *args], env, self.tmp / f"{name}-{index}.log")
            )
        self.replicas[name] = planned
        for replica in planned:  # URLs of services planned earlier (depends_on order)
            replica.env = {k: self.translate(v) for k, v in replica.env.items()}
        return planned

    def start(self, replica: Replica) -> None:
        env = {k: v for k, v in os.environ.items() if not k.startswith("WEIR_")}
        env.update(replica.env)
        with replica.log.open("wb") as out:  # the child keeps its own copy of the fd
            replica.proc = subprocess.Popen(
                replica.argv, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
            )

    def wait_done(self, replica: Replica) -> None:
        assert replica.proc is not None
        try:
            code = replica.proc.wait(timeout=ONE_SHOT_S)
        except subprocess.TimeoutExpired:
            raise AssertionError(f"{replica.service} still running after {ONE_SHOT_S}s") from None
        assert code == 0, f"{replica.service} exited {code}:\n{replica.log.read_text()[-3000:]}"

    def wait_healthy(self, name: str, service: dict[str, Any]) -> None:
        test = service["healthcheck"]["test"]
        assert test[0] == "CMD", f"{name}: the rehearsal runs exec-form healthchecks"
        for replica in self.replicas[name]:
            argv = [sys.executable if a == "python" else a for a in test[1:]]
            for port, local in replica.ports.items():
                argv = [a.replace(f"127.0.0.1:{port}/", f"127.0.0.1:{local}/") for a in argv]
            deadline = time.monotonic() + HEALTHY_S
            while subprocess.run(argv, capture_output=True, timeout=30).returncode != 0:
                assert replica.proc is not None and replica.proc.poll() is None, (
                    f"{name} exited:\n{replica.log.read_text()[-3000:]}"
                )
                assert time.monotonic() < deadline, f"{name} not healthy in {HEALTHY_S}s"
                time.sleep(0.5)  # the healthcheck's own polling interval, bounded above

    def check_running(self) -> bool:
        """False, always; raises if a long-running service has exited (a crash)."""
        for name, replicas in self.replicas.items():
            if services()[name].get("restart", "no") == "no":
                continue
            for r in replicas:
                if r.proc is not None and r.proc.poll() is not None:
                    raise AssertionError(
                        f"{name} #{r.index + 1} exited {r.proc.returncode}:\n"
                        f"{r.log.read_text()[-3000:]}"
                    )
        return False

    def stop_all(self) -> None:
        running = [r for rs in reversed(self.replicas.values()) for r in rs if r.proc]
        for r in running:
            if r.proc is not None and r.proc.poll() is None:
                r.proc.terminate()
        for r in running:
            assert r.proc is not None
            try:
                r.proc.wait(timeout=40)
            except subprocess.TimeoutExpired:
                r.proc.kill()
                r.proc.wait(timeout=10)


def start_order() -> list[str]:
    """Services without a profile, dependencies first (compose's own order)."""
    todo = {n: s for n, s in services().items() if not s.get("profiles") and n not in STAND_INS}
    order: list[str] = []
    while todo:
        ready = [
            n
            for n, s in todo.items()
            if all(d in order or d in STAND_INS for d in (s.get("depends_on") or {}))
        ]
        assert ready, f"depends_on cycle among {sorted(todo)}"
        for n in sorted(ready):
            order.append(n)
            del todo[n]
    return order


@pytest.fixture
def rehearsal(live_stack: Settings, unique: str, tmp_path: Path) -> Iterator[Rehearsal]:
    r = Rehearsal(
        live=live_stack,
        prefix=f"{live_stack.kafka.topic_prefix}-compose{unique}",
        model=f"c{unique}",
        tmp=tmp_path,
    )
    try:
        yield r
    finally:
        r.stop_all()


def _live(replica: Replica) -> str:
    """The replica's live view (WEIR_LIVE__PORT, already a free local port)."""
    return f"http://127.0.0.1:{replica.env['WEIR_LIVE__PORT']}"


# bootstrap, the healthchecks, the stream until version 2 serves, the last predictions
@pytest.mark.timeout(
    ONE_SHOT_S + HEALTHY_S + compose_checks.STREAM_S + compose_checks.SCORED_S + 120
)
def test_compose_services_close_the_loop(rehearsal: Rehearsal, busy_cores: list[int]):
    """The loop closes while a CPU hog keeps both cores busy (``busy_cores``)."""
    order = start_order()
    assert order.index("bootstrap") < order.index("producer")
    for name in order:
        service = services()[name]
        for dep, how in (service.get("depends_on") or {}).items():
            condition = how["condition"] if isinstance(how, dict) else "service_started"
            if dep in STAND_INS:
                continue
            if condition == "service_healthy":
                rehearsal.wait_healthy(dep, services()[dep])
        for replica in rehearsal.plan(name, service):
            rehearsal.start(replica)
        if service.get("restart", "no") == "no" and name != "producer":
            for replica in rehearsal.replicas[name]:
                rehearsal.wait_done(replica)

    live = rehearsal.live
    s = live.model_copy(
        update={
            "kafka": live.kafka.model_copy(update={"topic_prefix": rehearsal.prefix}),
            "scoring": live.scoring.model_copy(update={"model": rehearsal.model}),
        }
    )
    collector = compose_checks.collector(s, group=f"rehearsal-{rehearsal.prefix}")
    try:
        producer = rehearsal.replicas["producer"][0]
        proc = producer.proc
        assert proc is not None

        def stop_producer() -> None:  # as `docker compose stop producer` does
            if proc.poll() is None:
                proc.terminate()
            rehearsal.wait_done(producer)  # it flushes what it queued and exits 0

        compose_checks.stream_until_swapped(
            collector,
            s,
            check_running=rehearsal.check_running,
            producer_exited=lambda: proc.poll() is not None,
            stop_producer=stop_producer,
        )
    finally:
        collector.close()

    # one replica of every role but scoring, which has its replicas (and but the opt-in
    # ones behind a profile, which `docker compose up` does not start)
    running = {n for n, service in role_services().items() if not service.get("profiles")}
    assert {r: len(rehearsal.replicas[r]) for r in running if r != "scoring"} == {
        r: 1 for r in running if r != "scoring"
    }
    (retrainer,) = rehearsal.replicas["retrainer"]
    scorers = rehearsal.replicas["scoring"]
    compose_checks.check_loop_closed(
        collector,
        s,
        compose_checks.Where(
            model_host=rehearsal.local_url("model-host", 8070),
            retrainer=_live(retrainer),
            scorers={w.env["WEIR_SCORING__WORKER_ID"]: _live(w) for w in scorers},
            served_prefix="http://127.0.0.1:",  # the rehearsal's model host is on loopback
        ),
    )

    # the hogs really competed with the services for the CPU the whole time
    hogged = [busy_seconds(pid) for pid in busy_cores]
    assert min(hogged) > 10, f"CPU hogs ran {hogged} s"

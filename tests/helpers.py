"""Small helpers several test modules share: scripted HTTP answers, topics of a test's own."""

from __future__ import annotations

import sys
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

import httpx
from confluent_kafka import Consumer, TopicPartition

from connectors.kafka import delete_topics, ensure_topics, list_topics
from connectors.process import ServiceProcess, wait_until
from schemas.settings import Settings, settings_env
from schemas.topics import topic_specs


class Recorder:
    """An httpx MockTransport handler that answers from a script and records requests.

    The answers are used in order; the last one repeats. An exception is raised
    instead of answering (a connection error, a timeout).
    """

    def __init__(self, *answers: httpx.Response | Exception) -> None:
        self.answers = list(answers)
        self.requests: list[httpx.Request] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        answer = self.answers.pop(0) if len(self.answers) > 1 else self.answers[0]
        if isinstance(answer, Exception):
            raise answer
        return answer


@contextmanager
def own_topics(settings: Settings, prefix: str) -> Iterator[Settings]:
    """``settings`` with every weir topic under ``prefix``, created now and deleted after."""
    kafka = settings.kafka.model_copy(update={"topic_prefix": prefix})
    settings = settings.model_copy(update={"kafka": kafka})
    ensure_topics(settings)
    names = [spec.name for spec in topic_specs(settings.kafka)]
    wait_until(lambda: set(names) <= set(list_topics(settings)), timeout_s=30, what="new topics")
    try:
        yield settings
    finally:
        delete_topics(settings, prefix + ".")


def start_roles(
    settings: Settings, worker_id: str, roles: Sequence[str] = (), *, name: str | None = None
) -> ServiceProcess:
    """``weir worker [--role R ...] --worker-id ID`` as a process with a PID file and a log.

    One role runs in that process; several (or none: every role) run under the
    supervisor, as its children. ``streams.dev.localrun.start_worker`` is the
    every-role case.
    """
    weir = str(Path(sys.executable).parent / "weir")
    argv = [weir, "worker", *(a for r in roles for a in ("--role", r)), "--worker-id", worker_id]
    proc = ServiceProcess(
        name or f"worker-{worker_id}", settings.stack.run_dir, marker=f"--worker-id {worker_id}"
    )
    proc.start(argv, env=settings_env(settings))
    return proc


def role_pids(supervisor_pid: int) -> dict[str, int]:
    """The live children of a ``weir worker`` supervisor, by role (``--role R`` in argv)."""
    found: dict[str, int] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            status = (entry / "status").read_text()
            argv = (entry / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        ppid = next(
            (line.split()[1] for line in status.splitlines() if line.startswith("PPid:")), ""
        )
        state = next(
            (line.split()[1] for line in status.splitlines() if line.startswith("State:")), ""
        )
        if ppid != str(supervisor_pid) or state in ("Z", "X") or b"--role" not in argv:
            continue
        found[argv[argv.index(b"--role") + 1].decode()] = int(entry.name)
    return found


def process_env(pid: int) -> dict[str, str]:
    """The environment process ``pid`` was started with."""
    raw = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
    pairs = (item.decode(errors="replace").partition("=") for item in raw if item)
    return {name: value for name, _, value in pairs}


def http_get(url: str, timeout_s: float = 2.0) -> httpx.Response | None:
    """The answer at ``url``, or None when nothing answers."""
    try:
        return httpx.get(url, timeout=timeout_s)
    except httpx.TransportError:
        return None


def group_lag(settings: Settings, group: str, topic: str) -> dict[int, int]:
    """A group's lag per partition: end offset minus committed offset.

    Asked of the coordinator by a consumer that never subscribes, so it does
    not join the group and cannot disturb its members.
    """
    consumer = Consumer(
        {
            "bootstrap.servers": settings.kafka.bootstrap_servers,
            "group.id": group,
            "enable.auto.commit": False,
            "log_level": 3,
        }
    )
    try:
        parts = consumer.list_topics(topic, timeout=15).topics[topic].partitions
        got = consumer.committed([TopicPartition(topic, p) for p in parts], timeout=15)
        ends = {
            tp.partition: consumer.get_watermark_offsets(tp, timeout=15)[1]
            for tp in (TopicPartition(topic, p) for p in parts)
        }
        return {tp.partition: ends[tp.partition] - max(tp.offset, 0) for tp in got}
    finally:
        consumer.close()


def end_offsets(settings: Settings, topic: str) -> dict[int, int]:
    """Each partition's end offset. weir's producers are idempotent and not transactional,
    so on a topic of a test's own their sum is how many messages were written to it."""
    return group_lag(settings, "weir-test-watermarks", topic)  # a group that never commits

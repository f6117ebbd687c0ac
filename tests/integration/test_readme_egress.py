"""The README's Knative egress example runs: `weir event-display` receives what `weir egress` sends.

The example is read from README.md (the ```bash block with ``weir event-display``)
and its two commands run as real processes, changed only in what a test must
change: a free port instead of 8099, the test stack's environment with topics of
this test's own (a fresh prefix), and ``--json --count 2`` on event-display so
its output can be parsed and it exits by itself. Every wait is bounded.
"""

from __future__ import annotations

import asyncio
import json
import shlex
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from confluent_kafka import ConsumerGroupTopicPartitions, TopicPartition

from connectors.kafka import EventProducer, admin, list_topics
from connectors.process import free_port
from schemas import Event, InputRecord, Lineage, OutlierAlert, new_event, to_http
from schemas.settings import Settings, settings_env
from schemas.topics import Topic, topic_name
from streams.cli.knative import readable_line
from streams.servers.event_display import EventDisplay, create_event_display_app
from tests.helpers import own_topics
from tests.integration.test_knative import _prediction
from tests.integration.test_readme import bash_blocks

pytestmark = pytest.mark.integration

WEIR = str(Path(sys.executable).with_name("weir"))
README_PORT = "8099"
START_S = 30  # event-display up and answering /healthz
DELIVER_S = 90  # egress joins its group, reads both events and posts them


def readme_commands(port: int) -> list[tuple[dict[str, str], list[str]]]:
    """The example's commands as (environment assignments, weir arguments), on ``port``."""
    block = next(b for b in bash_blocks() if "weir event-display" in b)
    commands = []
    for line in block.replace(README_PORT, str(port)).splitlines():
        words = shlex.split(line, comments=True)
        if not words:
            continue
        if words[-1] == "&":
            words.pop()
        env = {}
        while "=" in words[0]:
            name, _, value = words.pop(0).partition("=")
            env[name] = value
        assert words[0] == "weir", line
        commands.append((env, words[1:]))
    return commands


@pytest.fixture
def egress_topics(live_stack: Settings, unique: str) -> Iterator[Settings]:
    """Topics of this test's own, deleted afterwards."""
    with own_topics(live_stack.model_copy(update={"k_sink": None}), f"it-rdeg-{unique}") as s:
        yield s


def start_egress_group_at_beginning(settings: Settings) -> None:
    """`weir egress` starts a new consumer group at the topics' end; it would miss events
    produced before it joined. Committing offset 0 for its (still empty) group first makes
    it read this test's fresh topics from the start, with no race against the join."""
    partitions = list_topics(settings)
    tps = [
        TopicPartition(name, p, 0)
        for name in (topic_name(settings.kafka, Topic(t)) for t in settings.knative.egress_topics)
        for p in range(partitions[name])
    ]
    group = f"{settings.kafka.topic_prefix}-egress"
    client = admin(settings)  # kept referenced until its futures are done
    for future in client.alter_consumer_group_offsets(
        [ConsumerGroupTopicPartitions(group, tps)]
    ).values():
        future.result(timeout=30)


def stop(proc: subprocess.Popen[bytes] | None) -> None:
    if proc is None or proc.poll() is not None:
        return
    proc.terminate()
    try:
        proc.wait(timeout=15)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout=15)


def wait_healthy(url: str, proc: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + START_S
    while time.monotonic() < deadline:
        try:
            if httpx.get(url + "/healthz", timeout=2).status_code == 200:
                return
        except httpx.TransportError:
            pass
        try:  # the pause between tries, which also notices a process that died
            proc.wait(timeout=0.1)
        except subprocess.TimeoutExpired:
            continue
        pytest.fail(f"event-display exited with {proc.returncode}:\n{log.read_text()}")
    pytest.fail(f"event-display did not answer /healthz in {START_S}s:\n{log.read_text()}")


def test_readme_egress_example_delivers_to_event_display(egress_topics: Settings, tmp_path: Path):
    settings = egress_topics
    port = free_port()
    (display_env, display_args), (egress_env, egress_args) = readme_commands(port)
    assert display_args[:1] == ["event-display"] and egress_args == ["egress"]
    assert egress_env == {"K_SINK": f"http://127.0.0.1:{port}"}
    env = settings_env(settings)
    start_egress_group_at_beginning(settings)
    out, err, egress_log = (tmp_path / n for n in ("display.out", "display.err", "egress.log"))
    display = egress = None
    try:
        with out.open("wb") as stdout, err.open("wb") as stderr:
            display = subprocess.Popen(
                [WEIR, *display_args, "--json", "--count", "2"],
                env=env | display_env,
                stdout=stdout,
                stderr=stderr,
            )
        url = f"http://127.0.0.1:{port}"
        wait_healthy(url, display, err)

        # a malformed event is refused with the reason, and neither shown nor counted
        headers, _ = to_http(new_event(InputRecord(id="r", features={"x": 1.0}), source="t"))
        bad = httpx.post(url, headers=headers, content=b"{nope", timeout=10)
        assert bad.status_code == 400 and bad.json()["error"] == "MalformedEvent", bad.text

        with egress_log.open("wb") as log:
            egress = subprocess.Popen(
                [WEIR, *egress_args], env=env | egress_env, stdout=log, stderr=subprocess.STDOUT
            )
        producer = EventProducer(settings)
        prediction = new_event(
            _prediction(1), source="weir", lineage=Lineage(modelname="m", modelversion="1")
        )
        alert = new_event(
            OutlierAlert(
                alert_id=f"a-{port}", model="m", record_id="r1", score=0.99, threshold=0.9
            ),
            source="weir",
        )
        producer.send(topic_name(settings.kafka, Topic.PREDICTIONS), prediction)
        producer.send(topic_name(settings.kafka, Topic.ALERTS), alert)

        try:  # --count 2: event-display exits 0 once both were shown
            code = display.wait(timeout=DELIVER_S)
        except subprocess.TimeoutExpired:
            pytest.fail(
                f"event-display got {out.read_text()!r} in {DELIVER_S}s\n"
                f"event-display: {err.read_text()}\negress (exit {egress.poll()}): "
                f"{egress_log.read_text()}"
            )
        assert code == 0, err.read_text()
    finally:
        stop(egress)
        stop(display)

    shown = [json.loads(line) for line in out.read_text().splitlines()]
    assert {e["id"]: e["type"] for e in shown} == {
        prediction.id: "io.weir.prediction.v1",
        alert.id: "io.weir.alert.outlier.v1",
    }, shown
    by_id = {e["id"]: e for e in shown}
    assert by_id[prediction.id]["modelname"] == "m", "lineage survives the hop"
    assert by_id[alert.id]["data"]["alert_id"] == alert.data.alert_id
    assert "rejected MalformedEvent" in err.read_text()


def _post_all(display: EventDisplay, requests: list[tuple[dict[str, str], bytes]]) -> list[Any]:
    async def post() -> list[Any]:
        app = create_event_display_app(display)
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://display") as client:
            return [await client.post("/", headers=h, content=b) for h, b in requests]

    return asyncio.run(post())


def test_event_display_rejects_malformed_events_with_400_and_stops_at_count():
    shown: list[Event[Any]] = []
    rejected: list[str] = []
    done: list[bool] = []
    display = EventDisplay(shown.append, count=1, max_bytes=4096, reject=rejected.append)
    display.on_done = lambda: done.append(True)
    good = new_event(_prediction(3), source="t", lineage=Lineage(modelname="m", modelversion="1"))
    binary_headers, _ = to_http(good)
    structured = to_http(good, mode="structured")
    cases = [
        (binary_headers, b"{nope"),  # data is not JSON
        (binary_headers, b'{"record_id": "r"}'),  # data misses fields
        ({"content-type": "application/json"}, b"{}"),  # not a CloudEvent
        (binary_headers, b" " * 5000),  # over max_bytes
        structured,  # valid: shown, and the count is reached
        structured,  # after the count: the sink is shutting down
    ]
    answers = _post_all(display, cases)
    assert [a.status_code for a in answers] == [400, 400, 400, 413, 202, 503]
    assert [a.json()["error"] for a in answers[:4]] == [
        "MalformedEvent",
        "SchemaViolation",
        "MalformedEvent",
        "EventTooLarge",
    ]
    assert "ce-specversion" in answers[2].json()["reason"]
    assert len(rejected) == 4 and "not valid JSON" in rejected[0]
    assert [e.id for e in shown] == [good.id] and done == [True]

    line = readable_line(good)
    assert "\n" not in line
    for part in ("io.weir.prediction.v1", f"id={good.id}", "source=t", "model=m", "version=1"):
        assert part in line, line

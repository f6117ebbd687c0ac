"""The everyday CLI against the real stack: produce, subscribe, models, dlq replay, errors.

Every test but the README one gets topics of its own (a fresh prefix, deleted
afterwards), so reading "from the beginning" sees only what the test sent.
Waits are bounded by ``--timeout``/``--max`` and the readers' deadlines.
"""

from __future__ import annotations

import json
import re
import shlex
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import click
import httpx
import numpy as np
import pytest
from click.testing import CliRunner, Result
from confluent_kafka import KafkaException
from sklearn.linear_model import LogisticRegression

from connectors.kafka import (
    Delivered,
    EventProducer,
    read_at,
)
from connectors.kserve_client import ready_path
from connectors.process import free_port, wait_until
from connectors.registry import ModelRegistry
from schemas import (
    DeadLetter,
    DriftAlert,
    EventDecodeError,
    Origin,
    PerformanceAlert,
    from_kafka,
    new_event,
)
from schemas.model_card import ModelCard
from schemas.settings import Settings, StackSettings, settings_env
from schemas.topics import Topic, topic_name
from streams.cli.data import Pacer, dlq, produce, subscribe
from streams.cli.main import cli
from streams.cli.models import models
from streams.dev.localrun import stop_model_servers
from streams.servers.model_server import local_servers
from tests.helpers import end_offsets, own_topics

pytestmark = pytest.mark.integration

WAIT = "60"  # --timeout for reads that must find their events; the local broker needs < 2 s

# The commands as `weir` will have them once streams/cli/main.py registers them.
weir = click.Group(
    "weir", commands={"produce": produce, "subscribe": subscribe, "models": models, "dlq": dlq}
)

# The README's "Everyday commands" examples, read from README.md so they cannot
# drift apart; test_readme_examples runs them in order.
_README = (Path(__file__).resolve().parents[2] / "README.md").read_text()
_EVERYDAY = _README[_README.index("## Everyday commands") :]
README_CSV = re.search(r"```\n(id,customer.*?)```", _EVERYDAY, flags=re.S).group(1)  # type: ignore[union-attr]
README_EXAMPLES = re.search(r"```bash\n(.*?)```", _EVERYDAY, flags=re.S).group(1)  # type: ignore[union-attr]
assert README_EXAMPLES.startswith("weir produce"), "README's everyday examples moved"


def run(settings: Settings, *args: str) -> Result:
    return CliRunner().invoke(weir, list(args), obj={"settings": settings})


def json_lines(result: Result) -> list[dict]:
    return [json.loads(line) for line in result.stdout.splitlines() if line.strip()]


@pytest.fixture(name="own_topics")
def own_topics_fixture(live_stack: Settings, unique: str) -> Iterator[Settings]:
    with own_topics(live_stack, f"it-cli-{unique}") as settings:
        yield settings


def register_two_versions(settings: Settings, name: str) -> None:
    rng = np.random.default_rng(3)
    x = rng.normal(size=(200, 3))
    y = (x[:, 0] + x[:, 1] > 0).astype(int)
    registry = ModelRegistry.for_settings(settings)
    for version, accuracy in (("1", 0.81), ("2", 0.93)):
        card = ModelCard(
            name=name,
            version=version,
            framework="sklearn",
            features=["x0", "x1", "x2"],
            classes=[0, 1],
            metrics={"accuracy": accuracy},
            created_at=datetime.now(UTC),
            run_id=f"run-{version}",
        )
        registry.publish(card, LogisticRegression().fit(x, y))


def test_produce_csv_skips_a_bad_row_and_subscribe_reads_it_back(own_topics: Settings, tmp_path):
    path = tmp_path / "orders.csv"
    path.write_text("id,customer,x0,x1,note\na1,u1,0.5,1.5,x\na2,u2,oops,2.0,x\na3,u1,1.0,3.0,x\n")
    sent = run(own_topics, "produce", "--file", str(path), "--key-field", "customer")
    assert sent.exit_code == 0, sent.output
    assert "line 3:" in sent.stderr and "x0" in sent.stderr
    assert "sent 2 records" in sent.stdout and "skipped 1" in sent.stdout

    got = run(
        own_topics,
        "subscribe",
        "records",
        "--json",
        "--from-beginning",
        "--max",
        "2",
        "--timeout",
        WAIT,
    )
    assert got.exit_code == 0, got.output
    events = json_lines(got)
    assert [e["data"]["id"] for e in sorted(events, key=lambda e: e["data"]["id"])] == ["a1", "a3"]
    first = next(e for e in events if e["data"]["id"] == "a1")
    assert first["type"] == "io.weir.record.v1" and first["specversion"] == "1.0"
    assert first["data"]["features"] == {"x0": 0.5, "x1": 1.5}
    assert first["data"]["entity"] == "u1"


def test_produce_jsonl_generates_ids_and_reports_bad_lines(own_topics: Settings, tmp_path):
    path = tmp_path / "sensors.jsonl"
    path.write_text(
        '{"x0": 1, "x1": 2.5, "site": "north"}\n'
        "not json at all\n"
        "\n"
        '{"x0": 3, "x1": 4}\n'
        '{"x0": "three", "x1": 4}\n'
    )
    sent = run(own_topics, "produce", "--file", str(path))
    assert sent.exit_code == 0, sent.output
    assert "line 2: not valid JSON" in sent.stderr
    assert "line 5: feature x0 is not a finite number" in sent.stderr
    assert "sent 2 records" in sent.stdout and "skipped 2" in sent.stdout

    got = run(
        own_topics,
        "subscribe",
        "records",
        "--json",
        "--from-beginning",
        "--max",
        "2",
        "--timeout",
        WAIT,
    )
    records = [e["data"] for e in json_lines(got)]
    assert len(records) == 2
    assert {r["id"].rsplit("-", 1)[1] for r in records} == {"1", "4"}  # ids name the line
    assert all(r["id"].startswith("sensors-") for r in records)
    assert {tuple(r["features"]) for r in records} == {("x0", "x1")}


def test_produce_generator_with_labels_count_and_rate(own_topics: Settings):
    started = time.monotonic()
    sent = run(
        own_topics,
        "produce",
        "--generate",
        "40",
        "--count",
        "30",
        "--rate",
        "300",
        "--labels",
        "--seed",
        "7",
    )
    elapsed = time.monotonic() - started
    assert sent.exit_code == 0, sent.output
    assert "sent 30 records" in sent.stdout and "+30 labels" in sent.stdout
    assert elapsed >= 29 / 300

    records = run(
        own_topics,
        "subscribe",
        "records",
        "--json",
        "--from-beginning",
        "--max",
        "30",
        "--timeout",
        WAIT,
    )
    labels = run(
        own_topics,
        "subscribe",
        "labels",
        "--json",
        "--from-beginning",
        "--max",
        "30",
        "--timeout",
        WAIT,
    )
    record_ids = {e["data"]["id"] for e in json_lines(records)}
    label_ids = {e["data"]["record_id"] for e in json_lines(labels)}
    assert len(record_ids) == 30 and record_ids == label_ids
    assert {e["data"]["label"] for e in json_lines(labels)} <= {0, 1}


@pytest.mark.parametrize("stop_with", [signal.SIGTERM, signal.SIGINT], ids=["sigterm", "ctrl-c"])
def test_produce_stops_cleanly_on_sigterm_or_ctrl_c(own_topics: Settings, stop_with: int):
    """`docker compose stop producer` sends SIGTERM, a user presses Ctrl-C: the stream ends
    at a row (never between a record and its label), what was queued is flushed and
    counted, and the exit code is 0 — the compose tests end the demo's long stream so."""
    weir_cli = str(Path(sys.executable).parent / "weir")
    records_t = topic_name(own_topics.kafka, Topic.RECORDS)
    labels_t = topic_name(own_topics.kafka, Topic.LABELS)
    proc = subprocess.Popen(
        [weir_cli, "produce", "--generate", "100000", "--rate", "400", "--labels"],
        env=settings_env(own_topics),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )

    def started() -> bool:
        if proc.poll() is not None:
            return True
        try:
            return sum(end_offsets(own_topics, records_t).values()) >= 300
        except KafkaException:  # a new topic's partitions may have no leader yet
            return False

    try:
        wait_until(
            started,
            timeout_s=90,
            what="the producer's first records",
            interval_s=0.5,
        )
        assert proc.poll() is None, proc.stderr.read() if proc.stderr else ""
        proc.send_signal(stop_with)
        out, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0, err
    found = re.search(r"sent (\d+) records", out)
    assert found, out
    sent = int(found.group(1))
    assert 300 <= sent < 100_000
    assert "stopped early (Ctrl-C or SIGTERM)" in out
    assert sum(end_offsets(own_topics, records_t).values()) == sent
    assert sum(end_offsets(own_topics, labels_t).values()) == sent


def test_subscribe_filters_and_shows_undecodable_messages(own_topics: Settings, unique: str):
    alerts = topic_name(own_topics.kafka, Topic.ALERTS)
    producer = EventProducer(own_topics)
    drift = DriftAlert(
        alert_id=f"d-{unique}", model="alpha", stream="x0", detector="ADWIN", records_seen=100
    )
    perf = PerformanceAlert(
        alert_id=f"p-{unique}",
        model="beta",
        metric="accuracy",
        value=0.6,
        window=500,
        detector="DDM",
    )
    producer.send(alerts, new_event(drift, source="test"))
    producer.send(alerts, new_event(perf, source="test"))
    producer.send_raw(alerts, b"\x00\xffnot an event", key=b"k")

    table = run(
        own_topics,
        "subscribe",
        "alerts",
        "--from-beginning",
        "--model",
        "alpha",
        "--max",
        "2",
        "--timeout",
        WAIT,
    )
    assert table.exit_code == 0, table.output
    assert f"d-{unique}" in table.stdout and "alert.drift" in table.stdout
    assert f"p-{unique}" not in table.stdout
    assert "undecodable" in table.stdout and "MalformedEvent" in table.stdout

    only_perf = run(
        own_topics,
        "subscribe",
        "alerts",
        "--json",
        "--from-beginning",
        "--type",
        "alert.performance",
        "--max",
        "1",
        "--timeout",
        WAIT,
    )
    [event] = json_lines(only_perf)
    assert event["type"] == "io.weir.alert.performance.v1"
    assert event["data"]["alert_id"] == f"p-{unique}"

    latest = run(own_topics, "subscribe", "alerts", "--json", "--timeout", "1")
    assert latest.exit_code == 0 and latest.stdout == ""  # default start is the end


def test_models_publish_list_rollback_round_trip(own_topics: Settings, unique: str):
    name = f"m{unique}"
    register_two_versions(own_topics, name)

    def publish(version: str, *extra: str) -> Result:
        url = f"http://127.0.0.1:1800{version}"
        return run(own_topics, "models", "publish", name, version, "--url", url, *extra)

    assert publish("1", "--protocol", "v1").exit_code == 0
    assert publish("2").exit_code == 0
    missing = publish("3")
    assert missing.exit_code == 1 and "not in the registry" in missing.stderr
    assert "versions: 1, 2" in missing.stderr
    assert publish("2", "--action", "canary").exit_code == 2  # a canary needs --weight

    listed = run(own_topics, "models", "list", "--model", name)
    assert listed.exit_code == 0, listed.output
    rows = [line for line in listed.stdout.splitlines() if name[:5] in line]
    assert any(" 2 " in row and "active" in row for row in rows), listed.stdout
    assert any(" 1 " in row and "rollback" in row for row in rows), listed.stdout
    assert "run-1" in listed.stdout and "accuracy" in listed.stdout

    back = run(own_topics, "models", "rollback", name, "--no-serve")  # nothing answers there
    assert back.exit_code == 0, back.output
    assert "2 → 1" in back.stdout
    again = run(own_topics, "models", "rollback", name)
    assert again.exit_code == 1 and "nothing to roll back to" in again.stderr
    forward = run(own_topics, "models", "rollback", name, "--to", "2")
    assert forward.exit_code == 1 and "no URL known" in forward.stderr

    # a canary can be removed again; with none left, clearing says so
    assert publish("2", "--action", "canary", "--weight", "0.5").exit_code == 0
    cleared = run(own_topics, "models", "clear", name, "--slot", "canary")
    assert cleared.exit_code == 0 and "cleared" in cleared.stdout, cleared.output
    none_left = run(own_topics, "models", "clear", name, "--slot", "canary")
    assert none_left.exit_code == 1 and "no canary route" in none_left.stderr

    everything = json_lines(
        run(
            own_topics,
            "subscribe",
            "models",
            "--json",
            "--from-beginning",
            "--model",
            name,
            "--max",
            "8",  # three route changes, each activate/rollback with its clear, a canary, a clear
            "--timeout",
            WAIT,
        )
    )
    slots = Counter(e["data"]["action"] for e in everything)
    assert slots == {"activate": 2, "rollback": 1, "clear-canary": 4, "canary": 1}
    events = [e for e in everything if e["data"]["action"] in ("activate", "rollback")]
    assert [(e["data"]["action"], e["data"]["version"]) for e in events] == [
        ("activate", "1"),
        ("activate", "2"),
        ("rollback", "1"),
    ]
    assert events[0]["data"]["features"] == ["x0", "x1", "x2"]
    assert events[0]["data"]["protocol"] == "v1" and events[2]["data"]["protocol"] == "v1"
    assert events[2]["data"]["url"] == "http://127.0.0.1:18001"
    assert events[0]["modelname"] == name and events[0]["modelversion"] == "1"


def test_dlq_replay_puts_the_exact_bytes_back_on_their_topic(own_topics: Settings):
    records = topic_name(own_topics.kafka, Topic.RECORDS)
    value, key = b'{"id": "r-1", "features": {"x": 1e999}}', b"r-1"
    headers = [
        ("ce_specversion", b"1.0"),
        ("ce_id", b"evt-1"),
        ("ce_source", b"s"),
        ("ce_type", b"io.weir.record.v1"),
        ("content-type", b"application/json"),
    ]
    with pytest.raises(EventDecodeError) as caught:
        from_kafka(value, key, headers, origin=Origin(topic=records, partition=2, offset=9))
    letter = DeadLetter.from_error(caught.value)
    EventProducer(own_topics).send(
        topic_name(own_topics.kafka, Topic.DEAD_LETTER), new_event(letter, source="test")
    )

    dry = run(own_topics, "dlq", "replay", "--dry-run")
    assert dry.exit_code == 0, dry.output
    assert "would replay 1" in dry.stdout and letter.error_class in dry.stdout
    filtered = run(own_topics, "dlq", "replay", "--error-class", "MalformedEvent")
    assert "replayed 0" in filtered.stdout and "skipped 1 by filters" in filtered.stdout

    replayed = run(own_topics, "dlq", "replay")
    assert replayed.exit_code == 0, replayed.output
    assert "replayed 1" in replayed.stdout
    back = read_at(own_topics, Delivered(records, partition_of(own_topics, records, key), 0))
    assert back.error is not None  # still the same bad bytes, now back on their topic
    assert back.error.raw.value == value and back.error.raw.key == key
    assert list(back.error.raw.headers) == headers
    assert back.error.event_id == "evt-1"

    assert "replayed 0" in run(own_topics, "dlq", "replay").stdout  # position was saved
    assert (
        "would replay 1" in run(own_topics, "dlq", "replay", "--from-beginning", "--dry-run").stdout
    )


def partition_of(settings: Settings, topic: str, key: bytes) -> int:
    """Where the broker put the replayed message: the one partition that is not empty."""
    from confluent_kafka import Consumer, TopicPartition

    consumer = Consumer({"bootstrap.servers": settings.kafka.bootstrap_servers, "group.id": "x"})
    try:
        parts = range(settings.kafka.record_partitions)
        highs = {p: consumer.get_watermark_offsets(TopicPartition(topic, p), 10)[1] for p in parts}
    finally:
        consumer.close()
    [partition] = [p for p, high in highs.items() if high > 0]
    return partition


@pytest.mark.parametrize(
    "args",
    [["produce", "--generate", "3"], ["subscribe", "records", "--max", "1"], ["dlq", "replay"]],
    ids=["produce", "subscribe", "dlq-replay"],
)
def test_unreachable_broker_is_one_line_naming_address_and_setting(monkeypatch, capfd, args):
    monkeypatch.setenv("WEIR_KAFKA__BOOTSTRAP_SERVERS", "127.0.0.1:1")
    result = run(Settings(), *args)
    assert result.exit_code == 1
    [line] = result.stderr.strip().splitlines()
    assert line.startswith("error: Kafka at 127.0.0.1:1 did not answer")
    assert "WEIR_KAFKA__BOOTSTRAP_SERVERS" in line
    assert "Connect to" not in capfd.readouterr().err  # no librdkafka log lines around it


def test_pacer_holds_the_rate_with_an_injected_clock():
    now = [0.0]
    pacer = Pacer(10.0, clock=lambda: now[0], sleep=lambda s: now.__setitem__(0, now[0] + s))
    for sent in range(5):
        pacer.wait_turn(sent)
    assert now[0] == pytest.approx(0.4)
    unlimited = Pacer(0.0, clock=lambda: 0.0, sleep=lambda s: pytest.fail("slept"))
    unlimited.wait_turn(1000)


def test_rollback_serves_a_retired_version_again(own_topics: Settings, unique: str, tmp_path):
    # model servers this test starts are found by PID files under its own state dir
    stack = StackSettings(cache_dir=own_topics.stack.cache_dir, state_dir=tmp_path)
    settings = own_topics.model_copy(update={"stack": stack})
    name = f"r{unique}"
    retired = f"http://127.0.0.1:{free_port()}"  # nothing answers there: a retired server
    register_two_versions(settings, name)
    for version in ("1", "2"):
        published = run(settings, "models", "publish", name, version, "--url", retired)
        assert published.exit_code == 0, published.output
    try:
        back = run(settings, "models", "rollback", name)
        assert back.exit_code == 0, back.output
        assert f"does not answer at {retired}; serving it again (local deployer)" in back.stdout
        [(model, version, port)] = local_servers(settings)
        assert (model, version) == (name, "1")
        url = f"http://127.0.0.1:{port}"
        assert f"2 → 1 ({url})" in back.stdout
        answer = httpx.get(url + ready_path(name, "v2"), timeout=10)
        assert answer.status_code == 200 and answer.json()["ready"] is True
        routed = json_lines(
            run(settings, "subscribe", "models", "--json", "--from-beginning", "--model", name,
                "--max", "6", "--timeout", WAIT)
        )  # fmt: skip
        [event] = [e for e in routed if e["data"]["action"] == "rollback"]
        assert (event["data"]["version"], event["data"]["url"]) == ("1", url)
        assert event["data"]["protocol"] == "v2" and event["data"]["features"] == ["x0", "x1", "x2"]

        # `weir stack down` stops the model servers started under its state dir
        down = CliRunner().invoke(cli, ["stack", "down"], obj={"settings": settings})
        assert down.exit_code == 0, down.output
        assert "1 model server(s) stopped" in down.stdout
        with pytest.raises(httpx.TransportError):
            httpx.get(url + ready_path(name, "v2"), timeout=10)
    finally:
        stop_model_servers(settings)


def test_readme_examples(own_topics: Settings, tmp_path: Path, monkeypatch):
    register_two_versions(own_topics, "churn")
    monkeypatch.chdir(tmp_path)
    Path("records.csv").write_text(README_CSV)
    # nothing serves the README's URLs here, so the rollback serves version 1 again (a
    # model server found by its PID file under this state dir, stopped at the end)
    stack = StackSettings(cache_dir=own_topics.stack.cache_dir, state_dir=tmp_path / "state")
    own_topics = own_topics.model_copy(update={"stack": stack})
    try:
        for line in README_EXAMPLES.splitlines():
            argv = shlex.split(line, comments=True)
            assert argv[0] == "weir"
            result = run(own_topics, *argv[1:])
            assert result.exit_code == 0, f"{line}\n{result.output}"
    finally:
        stop_model_servers(own_topics)
    # the CSV's bad row was reported, the rollback moved churn back to version 1
    assert "line 4: feature x2 is not a finite number" in (
        run(own_topics, "produce", "--file", "records.csv", "--key-field", "customer").stderr
    )
    listed = run(own_topics, "models", "list", "--model", "churn").stdout
    assert any(" 1 " in row and "active" in row for row in listed.splitlines())

"""What a fault scenario sends and what it reads back, from the real topics.

:class:`Stream` produces messages at a steady rate in a thread (a producer of
its own whose delivery timeout outlasts every broker fault) and keeps, per
message id, when Kafka acknowledged it, to which partition, and what kind of
message it was (``good`` records must be scored, anything else must be
dead-lettered). Every message's Kafka key is its id, so a dead letter
(which keeps the original key) names the message it is about.

:class:`Tally` reads the predictions and dead-letter topics from their start
in a thread: predictions per record id (with the prediction's Kafka
timestamp, set by the worker when it produced it) and dead letters per key.
:func:`figures` turns both into the table's numbers.
"""

from __future__ import annotations

import base64
import itertools
import json
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import numpy as np
from confluent_kafka import (
    OFFSET_BEGINNING,
    Consumer,
    KafkaError,
    Message,
    Producer,
    TopicPartition,
)

from connectors.kafka import list_topics
from schemas import InputRecord, Label, new_event, to_kafka
from schemas.settings import Settings
from schemas.topics import Topic, topic_name

FEATURES = [f"x{i}" for i in range(8)]  # bench/_shared.py's model
Headers = list[tuple[str, str | bytes | None]]


@dataclass(frozen=True)
class Msg:
    """One message to produce: ``id`` is its Kafka key; ``kind`` says what must become of it."""

    id: str
    value: bytes
    headers: Headers
    kind: str = "good"
    label: int | None = None  # sent to the labels topic after the record, when set


def features_for(i: int) -> dict[str, float]:
    """Seeded features of record ``i``; x0 is never one of the fault server's magic values."""
    values = np.random.default_rng(i).normal(size=len(FEATURES)).round(6)
    return dict(zip(FEATURES, map(float, values), strict=True))


def record_msg(rid: str, features: dict[str, float], *, kind: str = "good") -> Msg:
    """A valid ``io.weir.record.v1`` (binary mode), labelled with the sign of x0."""
    rec = to_kafka(new_event(InputRecord(id=rid, features=features), source="faults"))
    label = int(features.get("x0", 0.0) > 0)
    headers: Headers = [(k, v) for k, v in rec.headers]
    return Msg(rid, rec.value, headers, kind, label)


def record_headers(rid: str, type_: str = "io.weir.record.v1") -> Headers:
    """Binary-mode CloudEvent headers of a record, around a value of the caller's making."""
    return [
        ("content-type", b"application/json"),
        ("ce_specversion", b"1.0"),
        ("ce_id", f"ev-{rid}".encode()),
        ("ce_source", b"faults"),
        ("ce_type", type_.encode()),
        ("ce_time", datetime.now(UTC).isoformat().encode()),
    ]


def raw_record(rid: str, body: str | bytes, kind: str, type_: str = "io.weir.record.v1") -> Msg:
    value = body.encode() if isinstance(body, str) else body
    return Msg(rid, value, record_headers(rid, type_), kind)


@dataclass
class Sent:
    at: float  # Kafka's timestamp of the acknowledged message, s
    partition: int
    kind: str


class Stream:
    """Produces ``make(i)`` for i = 0, 1, ... at ``rate``/s until stopped or ``limit``."""

    def __init__(
        self,
        settings: Settings,
        make: Callable[[int], Msg],
        *,
        rate: float,
        limit: int | None = None,
        topic: Topic = Topic.RECORDS,
        producer_config: dict[str, Any] | None = None,
    ) -> None:
        self.settings, self._make, self.rate, self.limit = settings, make, rate, limit
        self.topic = topic_name(settings.kafka, topic)
        self.labels_topic = topic_name(settings.kafka, Topic.LABELS)
        self.config = {
            "bootstrap.servers": settings.kafka.bootstrap_servers,
            "acks": "all",
            "enable.idempotence": True,
            "linger.ms": 5,
            "message.timeout.ms": 600_000,  # outlives every outage of the suite
            "log_level": 0,  # the broker faults are deliberate: no librdkafka noise
        } | (producer_config or {})
        self.sent: dict[str, Sent] = {}
        self.produced = 0
        self.failed: list[str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="fault-stream", daemon=True)

    def start(self) -> Stream:
        self._thread.start()
        return self

    def stop(self, timeout_s: float = 60.0) -> None:
        """Stop producing and wait (bounded) until what was produced is acknowledged."""
        self._stop.set()
        self._thread.join(timeout_s)

    @property
    def running(self) -> bool:
        return self._thread.is_alive()

    def finished(self) -> bool:
        return not self._thread.is_alive()

    def _run(self) -> None:
        producer = Producer(self.config)
        start = time.monotonic()
        for i in itertools.count():
            if self._stop.is_set() or (self.limit is not None and i >= self.limit):
                break
            self._produce(producer, self._make(i))
            self.produced = i + 1
            ahead = start + (i + 1) / self.rate - time.monotonic()
            if ahead > 0:
                time.sleep(ahead)  # pacing the load, not waiting for an outcome
        deadline = time.monotonic() + 120
        while producer.flush(1.0) and time.monotonic() < deadline:
            pass

    def _produce(self, producer: Producer, msg: Msg) -> None:
        def delivered(err: KafkaError | None, m: Message) -> None:
            if err is not None:
                self.failed.append(f"{msg.id}: {err}")
                return
            self.sent[msg.id] = Sent(m.timestamp()[1] / 1000, m.partition() or 0, msg.kind)

        while True:
            try:
                producer.produce(
                    self.topic,
                    msg.value,
                    msg.id.encode(),
                    headers=msg.headers,
                    on_delivery=delivered,
                )
                break
            except BufferError:
                producer.poll(0.1)
            except Exception as exc:  # too large, and the like: the message was never sent
                self.failed.append(f"{msg.id}: {exc}")
                return
        if msg.label is not None:
            label = to_kafka(new_event(Label(record_id=msg.id, label=msg.label), source="faults"))
            headers: Headers = [(k, v) for k, v in label.headers]
            producer.produce(self.labels_topic, label.value, label.key, headers=headers)
        producer.poll(0)


def produce_one(settings: Settings, topic: Topic, msg: Msg, **config: Any) -> None:
    """Produce one message and wait for Kafka's acknowledgement (raises if refused)."""
    errors: list[str] = []
    producer = Producer(
        {"bootstrap.servers": settings.kafka.bootstrap_servers, "acks": "all", "log_level": 3}
        | config
    )
    producer.produce(
        topic_name(settings.kafka, topic),
        msg.value,
        msg.id.encode(),
        headers=msg.headers,
        on_delivery=lambda err, _m: errors.append(str(err)) if err else None,
    )
    if producer.flush(30) or errors:
        raise RuntimeError(f"producing {msg.id} ({len(msg.value)} bytes): {errors or 'timeout'}")


@dataclass
class Seen:
    at: float  # Kafka timestamp of the output (when the worker produced it), s
    detail: str  # a prediction's version; a dead letter's error class
    topic: str = ""  # a dead letter's source topic


@dataclass
class Tally:
    """Reads predictions and dead letters from their start, in a thread."""

    settings: Settings
    predictions: dict[str, list[Seen]] = field(default_factory=dict)
    dead: dict[str, list[Seen]] = field(default_factory=dict)
    errors: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        k = self.settings.kafka
        self.pred_topic = topic_name(k, Topic.PREDICTIONS)
        self.dead_topic = topic_name(k, Topic.DEAD_LETTER)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="fault-tally", daemon=True)

    def start(self) -> Tally:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(30)

    def _run(self) -> None:
        consumer = Consumer(
            {
                "bootstrap.servers": self.settings.kafka.bootstrap_servers,
                "group.id": "faults-tally",  # assigned, never committed
                "enable.auto.commit": False,
                "fetch.wait.max.ms": 50,
                "log_level": 0,
            }
        )
        counts = list_topics(self.settings)
        consumer.assign(
            [
                TopicPartition(t, p, OFFSET_BEGINNING)
                for t in (self.pred_topic, self.dead_topic)
                for p in range(counts[t])
            ]
        )
        try:
            while not self._stop.is_set():
                for m in consumer.consume(500, timeout=0.2):
                    if m.error() is None:
                        self._take(m)
        finally:
            consumer.close()

    def _take(self, m: Message) -> None:
        at = m.timestamp()[1] / 1000
        try:
            body = json.loads(m.value() or b"")
        except ValueError as exc:
            self.errors.append(f"{m.topic()}: {exc}")
            return
        if m.topic() == self.pred_topic:
            seen = Seen(at, str(body.get("version")))
            self.predictions.setdefault(body["record_id"], []).append(seen)
            return
        key = (
            base64.b64decode(body["key_base64"]).decode(errors="replace")
            if body.get("key_base64")
            else f"(no key) {body.get('source_topic')}/{body.get('offset')}"
        )
        self.dead.setdefault(key, []).append(
            Seen(at, str(body.get("error_class")), str(body.get("source_topic")))
        )

    def dead_from(self, topic: str) -> dict[str, list[Seen]]:
        return {
            k: [s for s in v if s.topic == topic]
            for k, v in list(self.dead.items())
            if any(s.topic == topic for s in v)
        }

    def last_prediction(self) -> float | None:
        times = [s.at for v in list(self.predictions.values()) for s in v]
        return max(times) if times else None


@dataclass
class Figures:
    sent: int = 0
    scored: int = 0
    dead: int = 0
    missing: int = 0
    dupes: int = 0  # extra predictions of one record id
    dead_dupes: int = 0  # extra dead letters of one message
    bad_scored: int = 0  # messages that should have been dead-lettered, predicted instead
    good_dead: int = 0  # good records dead-lettered
    stall_s: float | None = None
    max_wait_s: float | None = None
    dead_classes: dict[str, int] = field(default_factory=dict)


def accounted(stream: Stream, tally: Tally) -> bool:
    """Every acknowledged message has a prediction or a dead letter (and the stream ended)."""
    if stream.running:
        return False
    sent = list(stream.sent)
    return all(rid in tally.predictions or rid in tally.dead for rid in sent)


def largest_gap(times: list[float], start: float, end: float) -> float:
    inside = sorted(t for t in times if start <= t <= end)
    edges = [start, *inside, end]
    return max((b - a for a, b in itertools.pairwise(edges)), default=0.0)


def figures(stream: Stream, tally: Tally, *, fault_at: float, now: float | None = None) -> Figures:
    """The numbers of one scenario, from what was sent and what came out."""
    now = time.time() if now is None else now
    records = stream.topic
    sent = dict(stream.sent)
    preds = dict(tally.predictions)
    dead = {k: v for k, v in tally.dead_from(records).items() if k in sent}
    f = Figures(sent=len(sent))
    f.scored = sum(1 for rid in sent if rid in preds)
    f.dead = len(dead)
    missing = [rid for rid in sent if rid not in preds and rid not in dead]
    f.missing = len(missing)
    f.dupes = sum(len(preds[rid]) - 1 for rid in sent if rid in preds)
    f.dead_dupes = sum(len(v) - 1 for v in dead.values())
    f.bad_scored = sum(1 for rid, s in sent.items() if s.kind != "good" and rid in preds)
    f.good_dead = sum(1 for rid, s in sent.items() if s.kind == "good" and rid in dead)
    for letters in dead.values():
        for s in letters:
            f.dead_classes[s.detail] = f.dead_classes.get(s.detail, 0) + 1
    times = [s.at for rid in sent if rid in preds for s in preds[rid]]
    if sent:
        end = max(times, default=now) if not missing else now
        f.stall_s = largest_gap(times, fault_at, max(end, fault_at))
        waits = []
        for rid, message in sent.items():
            outs = [o.at for o in preds.get(rid, []) + dead.get(rid, [])]
            waits.append((min(outs) if outs else now) - message.at)
        f.max_wait_s = max(waits)
    return f

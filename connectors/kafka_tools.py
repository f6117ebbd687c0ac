"""Kafka helpers for the command line: a topic reader without a consumer group, the
broker/topic preflight, and clients that keep librdkafka's own log lines quiet.

The CLI reports a Kafka failure itself, as one ``ServiceError`` line naming the
address and the setting; these helpers make sure librdkafka does not print a line
of its own for every reconnect attempt around it.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any, Literal

from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, KafkaException, TopicPartition
from confluent_kafka.admin import AdminClient

from connectors.kafka import (
    ConsumedMessage,
    EventProducer,
    decode_message,
    security_config,
    unreachable,
)
from connectors.process import wait_until
from schemas import (
    StackError,
    WeirError,
)
from schemas.settings import Settings
from schemas.topics import Topic, topic_name

READ_DEADLINE_S = 60.0  # reading a topic to its end offsets; a healthy local broker takes < 1 s
TOPIC_WAIT_S = 5.0  # a topic created a moment ago shows in the broker's metadata within ~1 s


def physical_topic(settings: Settings, name: str) -> str:
    """A logical name (``records``) becomes ``<prefix>.records``; other names pass as given."""
    logical = {t.value: t for t in Topic}
    return topic_name(settings.kafka, logical[name]) if name in logical else name


def broker_topics(settings: Settings, *, timeout_s: float = 10.0) -> dict[str, int]:
    """Topic name → partitions, like ``connectors.kafka.list_topics`` but without librdkafka's
    own log lines (one per reconnect attempt, every 50 ms), which would bury the one-line error."""
    client = AdminClient(_quiet_config(settings))
    try:
        meta = client.list_topics(timeout=timeout_s)
    except KafkaException as exc:
        raise unreachable(settings, "listing topics", exc.args[0]) from exc
    return {name: len(t.partitions) for name, t in meta.topics.items()}


def require_topics(settings: Settings, *names: str) -> dict[str, int]:
    """Every topic on the broker (name → partitions); fails when one of ``names`` is missing.

    Also the preflight of every command: a broker that does not answer raises
    ``ServiceError`` naming the address and the setting, before anything is sent.
    Topics created a moment ago may take a few seconds to show in the broker's
    metadata, so a missing one is looked for again until ``TOPIC_WAIT_S``.
    """
    found = broker_topics(settings)

    def complete() -> bool:
        nonlocal found
        if any(n not in found for n in names):
            found = broker_topics(settings)
        return all(n in found for n in names)

    try:
        wait_until(complete, timeout_s=TOPIC_WAIT_S, what="waiting for topics", interval_s=0.5)
    except StackError as err:
        missing = ", ".join(n for n in names if n not in found)
        raise WeirError(
            f"topic {missing} does not exist on {settings.kafka.bootstrap_servers} "
            f"(WEIR_KAFKA__TOPIC_PREFIX is {settings.kafka.topic_prefix!r}); "
            "run `weir topics create`"
        ) from err
    return found


def _quiet_config(settings: Settings) -> dict[str, Any]:
    return {
        "bootstrap.servers": settings.kafka.bootstrap_servers,
        "client.id": f"{settings.kafka.client_id}-cli",
        "log_level": 0,  # the CLI reports Kafka errors itself, as one line
    } | security_config(settings.kafka)


def quiet_producer(settings: Settings) -> EventProducer:
    """An EventProducer whose failures reach the user only as the one-line ServiceError."""
    return EventProducer(settings, log_level=0)


Start = Literal["beginning", "end", "committed"]


class TopicReader:
    """Every partition of one topic, read without joining a consumer group.

    Nothing waits for a group join or a rebalance, and the end offsets are taken
    when the reader opens, so :meth:`read_to_end` stops exactly at what was there.
    ``start="committed"`` begins where ``group_id`` last committed (or at the
    beginning); :meth:`commit` stores positions for that group.
    """

    def __init__(
        self,
        settings: Settings,
        topic: str,
        *,
        partitions: int,
        start: Start = "end",
        group_id: str | None = None,
    ) -> None:
        self._settings = settings
        self.topic = topic
        self._consumer = Consumer(
            _quiet_config(settings)
            | {
                "group.id": group_id or f"{settings.kafka.client_id}-cli-reader",
                "enable.auto.commit": False,
                "enable.partition.eof": True,
            }
        )
        tps = [TopicPartition(topic, p) for p in range(partitions)]
        try:
            marks = {tp.partition: self._consumer.get_watermark_offsets(tp, 10.0) for tp in tps}
            committed = self._consumer.committed(tps, 10.0) if start == "committed" else []
        except KafkaException as exc:
            self._consumer.close()
            raise unreachable(settings, f"opening {topic}", exc.args[0]) from exc
        self.end = {p: high for p, (_low, high) in marks.items()}
        self.next = {p: (low if start != "end" else high) for p, (low, high) in marks.items()}
        for tp in committed:
            if tp.offset >= 0:
                self.next[tp.partition] = max(tp.offset, marks[tp.partition][0])
        self._eof: set[int] = set()
        self._consumer.assign(
            [
                TopicPartition(topic, p, offset if start != "beginning" else OFFSET_BEGINNING)
                for p, offset in self.next.items()
            ]
        )

    @property
    def caught_up(self) -> bool:
        """Every partition read up to the end offsets seen when the reader opened."""
        return all(p in self._eof or self.next[p] >= end for p, end in self.end.items())

    def poll(self, timeout_s: float) -> ConsumedMessage | None:
        msg = self._consumer.poll(timeout_s)
        if msg is None:
            return None
        partition, offset = msg.partition() or 0, msg.offset() or 0
        err = msg.error()
        if err is not None:
            if err.code() == KafkaError._PARTITION_EOF:
                self._eof.add(partition)
                return None
            raise unreachable(self._settings, f"reading {self.topic}", err)
        self.next[partition] = offset + 1
        return decode_message(self._settings, msg)

    def read_to_end(self, deadline_s: float = READ_DEADLINE_S) -> Iterator[ConsumedMessage]:
        """Every message up to the end offsets; raises if the broker stalls past the deadline."""
        end = time.monotonic() + deadline_s
        while not self.caught_up:
            if time.monotonic() > end:
                raise unreachable(
                    self._settings, f"reading {self.topic} to its end", f"{deadline_s:.0f}s passed"
                )
            got = self.poll(0.5)
            if got is not None:
                yield got

    def follow(self, timeout_s: float | None) -> Iterator[ConsumedMessage]:
        """Messages as they come, until ``timeout_s`` (None: until interrupted)."""
        end = None if timeout_s is None else time.monotonic() + timeout_s
        while end is None or time.monotonic() < end:
            wait = 0.5 if end is None else min(0.5, max(0.0, end - time.monotonic()))
            got = self.poll(wait)
            if got is not None:
                yield got

    def commit(self) -> None:
        """Store the current positions for the reader's group."""
        offsets = [TopicPartition(self.topic, p, o) for p, o in self.next.items()]
        try:
            self._consumer.commit(offsets=offsets, asynchronous=False)
        except KafkaException as exc:
            raise unreachable(self._settings, f"committing {self.topic}", exc.args[0]) from exc

    def close(self) -> None:
        self._consumer.close()

    def __enter__(self) -> TopicReader:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()


def open_reader(
    settings: Settings, name: str, *, start: Start, group_id: str | None = None
) -> TopicReader:
    """A reader on ``name`` after checking that the broker answers and the topic exists."""
    partitions = require_topics(settings, name)[name]
    return TopicReader(settings, name, partitions=partitions, start=start, group_id=group_id)

"""Role state kept in Kafka: the compacted ``checkpoints`` topic, newest value per key.

A role (monitor, feedback, performance, retrainer) saves its state — river
detectors, the join window, the retraining policy — as one compressed
message per key every few seconds and on shutdown; a restarted or moved role
reads the topic to its end at start and resumes from the newest value instead
of relearning from zero. Values are zlib-compressed pickles of weir's own
objects, so whoever may write this topic may run code in the roles: give only
the roles' principal write access (docs/security.md).
"""

from __future__ import annotations

import logging
import pickle
import zlib
from typing import Any

from confluent_kafka import Consumer, KafkaException, TopicPartition

from connectors.kafka import EventProducer, base_config, unreachable
from schemas.settings import Settings
from schemas.topics import Topic, topic_name

log = logging.getLogger("weir.checkpoints")

MAX_BYTES = 900_000  # under the broker's default message.max.bytes (1 MiB) with headroom


class CheckpointStore:
    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        self._topic = topic_name(settings.kafka, Topic.CHECKPOINTS)
        self._producer: EventProducer | None = None

    @staticmethod
    def encode(state: Any) -> bytes:
        """The stored form of ``state``; call it where nothing mutates the state meanwhile."""
        return zlib.compress(pickle.dumps(state, protocol=pickle.HIGHEST_PROTOCOL), 1)

    def save(self, key: str, value: bytes) -> int:
        """Store an encoded state under ``key`` and wait for the broker; returns its size.

        A state too large for one message is not stored (the older checkpoint
        stays) and a warning says so; 0 is returned.
        """
        if len(value) > MAX_BYTES:
            log.warning(
                "checkpoint %s is %d bytes compressed, over %d: not saved",
                key,
                len(value),
                MAX_BYTES,
            )
            return 0
        if self._producer is None:
            self._producer = EventProducer(self._settings)
        self._producer.send_raw(self._topic, value, key.encode())
        return len(value)

    def load_all(self, prefix: str, *, timeout_s: float = 30.0) -> dict[str, Any]:
        """The newest state of every key that starts with ``prefix`` (read to the end)."""
        consumer = Consumer(
            base_config(self._settings)
            | {"group.id": "weir-checkpoints-reader", "enable.auto.commit": False}
        )
        try:
            meta = consumer.list_topics(self._topic, timeout=timeout_s).topics.get(self._topic)
            if meta is None or meta.error is not None:
                raise unreachable(self._settings, f"reading {self._topic}", "topic missing")
            found: dict[str, bytes] = {}
            for p in meta.partitions:
                marks = consumer.get_watermark_offsets(
                    TopicPartition(self._topic, p), timeout=timeout_s
                )
                low, high = marks if marks is not None else (None, None)
                if low is None or high is None:
                    raise unreachable(self._settings, f"reading {self._topic}", "no offsets")
                if high <= low:
                    continue
                consumer.assign([TopicPartition(self._topic, p, low)])
                position = low
                while position < high:
                    msg = consumer.poll(1.0)
                    if msg is None:
                        continue
                    if msg.error() is not None:
                        raise KafkaException(msg.error())
                    position = (msg.offset() or 0) + 1
                    key = (msg.key() or b"").decode(errors="replace")
                    if key.startswith(prefix):
                        value = msg.value()
                        if value is None:
                            found.pop(key, None)
                        else:
                            found[key] = value
        except KafkaException as err:
            raise unreachable(self._settings, f"reading {self._topic}", err) from err
        finally:
            consumer.close()
        states = {}
        for key, value in found.items():
            try:
                states[key] = pickle.loads(zlib.decompress(value))
            except Exception as err:  # a bad checkpoint is skipped: the role starts fresh
                log.warning(
                    "checkpoint %s cannot be read (%s); starting that state fresh", key, err
                )
        return states

"""Role state kept in Kafka: the compacted ``checkpoints`` topic, newest value per key.

A role (monitor, feedback, performance, retrainer) saves its state — river
detectors, the join window, the retraining policy — as one compressed
message per key every few seconds and on shutdown; a restarted or moved role
reads the topic to its end at start and resumes from the newest value instead
of relearning from zero. Values are zlib-compressed pickles of weir's own
objects, so whoever may write this topic may run code in the roles: give only
the roles' principal write access (docs/security.md).

A state larger than one message (a full join window of 50,000 records is
about 4 MB) is stored in parts: each part under ``<key>#part/<generation>/<i>``
first, then under ``<key>`` a small manifest naming the generation, the
number of parts, the size and a CRC-32. A reader takes the parts the newest
manifest names, so a save cut short leaves the previous checkpoint readable.
Once the manifest is stored, the parts of the generations before it are
deleted (tombstones), so compaction keeps one generation per key.
"""

from __future__ import annotations

import json
import logging
import pickle
import uuid
import zlib
from typing import Any

from confluent_kafka import Consumer, KafkaException, TopicPartition

from connectors.kafka import EventProducer, base_config, unreachable
from schemas.settings import Settings
from schemas.topics import Topic, topic_name

log = logging.getLogger("weir.checkpoints")

MAX_BYTES = 900_000  # under the broker's default message.max.bytes (1 MiB) with headroom
MAX_PARTS = 64  # a state over MAX_PARTS x MAX_BYTES (~57 MB compressed) is not stored
MANIFEST = b"weir-checkpoint-parts:"  # a zlib stream never starts so (its first byte is 0x78)
PARTS = "#part/"


def part_key(key: str, generation: str, index: int) -> str:
    return f"{key}{PARTS}{generation}/{index}"


class CheckpointStore:
    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        self._topic = topic_name(settings.kafka, Topic.CHECKPOINTS)
        self._producer: EventProducer | None = None
        self._parts: dict[str, set[str]] = {}  # key → part keys stored or read, to delete

    @staticmethod
    def encode(state: Any) -> bytes:
        """The stored form of ``state``; call it where nothing mutates the state meanwhile."""
        return CheckpointStore.compressed(CheckpointStore.pickled(state))

    @staticmethod
    def pickled(state: Any) -> bytes:
        """The first half of :meth:`encode`, the one that reads the state."""
        return pickle.dumps(state, protocol=pickle.HIGHEST_PROTOCOL)

    @staticmethod
    def compressed(pickled: bytes) -> bytes:
        """The second half of :meth:`encode`: may run in another thread (zlib lets go of
        the GIL)."""
        return zlib.compress(pickled, 1)

    def save(self, key: str, value: bytes) -> int:
        """Store an encoded state under ``key`` and wait for the broker; returns its size.

        A state larger than one message is stored in parts (module doc). One
        larger than ``MAX_PARTS`` messages is not stored (the older checkpoint
        stays) and a warning says so; 0 is returned.
        """
        parts = [value[i : i + MAX_BYTES] for i in range(0, len(value), MAX_BYTES)] or [b""]
        if len(parts) > MAX_PARTS:
            log.warning(
                "checkpoint %s is %d bytes compressed, over %d: not saved",
                key,
                len(value),
                MAX_PARTS * MAX_BYTES,
            )
            return 0
        if self._producer is None:
            self._producer = EventProducer(self._settings)
        known = self._parts.setdefault(key, set())  # parts of this key that may be stored
        current: set[str] = set()
        if len(parts) == 1:
            self._producer.send_raw(self._topic, value, key.encode())
        else:
            generation = uuid.uuid4().hex[:12]
            keys = [part_key(key, generation, i) for i in range(len(parts))]
            known.update(keys)  # so a save cut short has its parts deleted by the next one
            for name, part in zip(keys, parts, strict=True):
                self._producer.send_raw(self._topic, part, name.encode())
            manifest = {
                "generation": generation,
                "parts": len(parts),
                "bytes": len(value),
                "crc32": zlib.crc32(value),
            }
            self._producer.send_raw(
                self._topic, MANIFEST + json.dumps(manifest).encode(), key.encode()
            )
            current = set(keys)
        for name in sorted(known - current):  # the manifest (or whole value) is stored
            self._producer.send_raw(self._topic, None, name.encode())
        self._parts[key] = current
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
        for key in found:
            if PARTS in key:
                self._parts.setdefault(key.split(PARTS)[0], set()).add(key)
        for key, value in found.items():
            if PARTS in key:
                continue
            try:
                if value.startswith(MANIFEST):
                    value = _assembled(key, value, found)
                states[key] = pickle.loads(zlib.decompress(value))
            except Exception as err:  # a bad checkpoint is skipped: the role starts fresh
                log.warning(
                    "checkpoint %s cannot be read (%s); starting that state fresh", key, err
                )
        return states


def _assembled(key: str, manifest: bytes, found: dict[str, bytes]) -> bytes:
    """The state a manifest names, from its parts; ValueError when one is missing or
    the whole does not match the manifest's size and CRC-32."""
    m = json.loads(manifest[len(MANIFEST) :])
    names = [part_key(key, m["generation"], i) for i in range(m["parts"])]
    missing = [n for n in names if n not in found]
    if missing:
        raise ValueError(f"{len(missing)} of its {len(names)} parts missing")
    value = b"".join(found[n] for n in names)
    if len(value) != m["bytes"] or zlib.crc32(value) != m["crc32"]:
        raise ValueError("its parts do not match its manifest (size or CRC-32)")
    return value

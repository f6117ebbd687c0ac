"""Against the real broker and MinIO: CloudEvents through Kafka, topics, objects."""

from __future__ import annotations

import asyncio

import pytest

from connectors.kafka import (
    EventConsumer,
    EventProducer,
    delete_topics,
    ensure_topics,
    list_topics,
    read_at,
    topic_config,
)
from connectors.minio_store import ObjectNotFound, ObjectStore
from schemas import (
    InputRecord,
    Lineage,
    MalformedEventError,
    ModelVersionEvent,
    SchemaViolationError,
    ServiceError,
    new_event,
)
from schemas.settings import EventSettings, KafkaSettings, Settings
from schemas.topics import Topic, topic_name, topic_specs
from tests.samples import SAMPLES

pytestmark = pytest.mark.integration

DEADLINE_S = 60  # generous: a fresh consumer group joins in ~1-3 s on the local broker


def _with_mode(settings: Settings, mode: str) -> Settings:
    return settings.model_copy(update={"events": EventSettings(mode=mode)})


@pytest.mark.parametrize("mode", ["binary", "structured"])
def test_cloudevents_round_trip_through_kafka(live_stack: Settings, unique: str, mode: str):
    topic = topic_name(live_stack.kafka, Topic.RECORDS)
    producer = EventProducer(_with_mode(live_stack, mode))
    lineage = Lineage(runid=f"run-{unique}")
    sent = [
        new_event(p, source=f"test-{unique}", lineage=lineage)
        for p in SAMPLES
        if isinstance(p, InputRecord)
    ] + [
        new_event(
            InputRecord(id=f"{unique}-{i}", features={"x": float(i)}), source=f"test-{unique}"
        )
        for i in range(20)
    ]
    for event in sent:
        producer.produce(topic, event)
    producer.flush()

    got = {}
    with EventConsumer(live_stack, [topic], group_id=f"rt-{unique}") as consumer:
        for msg in consumer.take(10_000, deadline_s=DEADLINE_S, stop=lambda: len(got) == len(sent)):
            assert msg.error is None, msg.error
            if msg.event is not None and msg.event.source == f"test-{unique}":
                got[msg.event.id] = msg.event
    assert got == {e.id: e for e in sent}


def test_bad_bytes_come_back_as_typed_errors_with_raw_bytes(live_stack: Settings, unique: str):
    topic = topic_name(live_stack.kafka, Topic.RECORDS)
    producer = EventProducer(live_stack)
    bad_json = producer.send_raw(topic, b"\x00\xffgarbage", key=f"bad-{unique}".encode())
    nan = producer.send_raw(
        topic,
        b'{"id":"r","features":{"x":1e999}}',
        key=f"nan-{unique}".encode(),
        headers=[
            ("ce_specversion", b"1.0"),
            ("ce_id", f"nan-{unique}".encode()),
            ("ce_source", b"t"),
            ("ce_type", b"io.weir.record.v1"),
            ("content-type", b"application/json"),
        ],
    )
    found = {}
    with EventConsumer(live_stack, [topic], group_id=f"bad-{unique}") as consumer:
        for msg in consumer.take(10_000, deadline_s=DEADLINE_S, stop=lambda: len(found) == 2):
            if (msg.partition, msg.offset) in {
                (bad_json.partition, bad_json.offset),
                (nan.partition, nan.offset),
            }:
                found[(msg.partition, msg.offset)] = msg
    first = found[(bad_json.partition, bad_json.offset)].error
    assert isinstance(first, MalformedEventError)
    assert first.raw.value == b"\x00\xffgarbage"
    assert first.raw.origin.topic == topic and first.raw.origin.offset == bad_json.offset
    second = found[(nan.partition, nan.offset)].error
    assert isinstance(second, SchemaViolationError)
    assert second.event_id == f"nan-{unique}"


def test_topics_exist_with_their_partitions_and_models_is_compacted(live_stack: Settings):
    assert set(ensure_topics(live_stack).values()) == {"exists"}, "second create is a no-op"
    present = list_topics(live_stack)
    for spec in topic_specs(live_stack.kafka):
        assert present[spec.name] == spec.partitions
    models = topic_config(live_stack, topic_name(live_stack.kafka, Topic.MODELS))
    assert models["cleanup.policy"] == "compact"
    records = topic_config(live_stack, topic_name(live_stack.kafka, Topic.RECORDS))
    assert records["cleanup.policy"] == "delete"


def test_topic_prefix_creates_a_separate_set(live_stack: Settings, unique: str):
    other = live_stack.model_copy(
        update={
            "kafka": live_stack.kafka.model_copy(
                update={"topic_prefix": f"{live_stack.kafka.topic_prefix}-t{unique}"}
            )
        }
    )
    outcome = ensure_topics(other)
    assert sorted(outcome) == sorted(s.name for s in topic_specs(other.kafka))
    assert set(outcome.values()) == {"created"}
    # and a run deletes its own set, nothing else
    assert delete_topics(other, f"{other.kafka.topic_prefix}.") == sorted(outcome)
    left = set(list_topics(live_stack))
    assert not left & set(outcome)
    assert {s.name for s in topic_specs(live_stack.kafka)} <= left
    with pytest.raises(ValueError, match="give a prefix"):
        delete_topics(other, "")


def test_control_topic_event_keyed_by_model(live_stack: Settings, unique: str):
    topic = topic_name(live_stack.kafka, Topic.MODELS)
    event = new_event(
        ModelVersionEvent(
            action="activate", model=f"m{unique}", version="1", url="http://127.0.0.1:8081"
        ),
        source="test",
    )
    where = EventProducer(live_stack).send(topic, event)
    got = read_at(live_stack, where)
    assert got.event == event


def test_unreachable_broker_names_address_and_setting():
    settings = Settings(kafka=KafkaSettings(bootstrap_servers="127.0.0.1:1"))
    with pytest.raises(ServiceError, match=r"127\.0\.0\.1:1 .*WEIR_KAFKA__BOOTSTRAP_SERVERS"):
        list_topics(settings, timeout_s=2)


def test_object_round_trip_through_minio(live_stack: Settings, unique: str):
    store = ObjectStore(live_stack.minio)
    assert set(store.ensure_buckets().values()) == {"exists"}
    key = f"tests/{unique}/blob.bin"
    body = bytes(range(256)) * 64
    uri = store.put_bytes(live_stack.minio.data_bucket, key, body)
    assert uri == f"s3://{live_stack.minio.data_bucket}/{key}"
    assert store.get_bytes(live_stack.minio.data_bucket, key) == body
    assert list(store.list_keys(live_stack.minio.data_bucket, f"tests/{unique}/")) == [key]
    store.delete(live_stack.minio.data_bucket, key)
    with pytest.raises(ObjectNotFound):
        store.get_bytes(live_stack.minio.data_bucket, key)


def test_a_cut_dead_letter_keeps_its_whole_value_in_minio(live_stack: Settings, unique: str):
    from agents.letters import dead_letter
    from connectors.dead_letters import OversizeStore, whole_value
    from schemas import Origin, RawMessage
    from schemas.settings import MinioSettings

    value = unique.encode() + bytes(range(256)) * 1000  # 256 KB, over the 64 KiB inline
    raw = RawMessage(value, b"k", (), Origin("weir.records", 0, 1))
    event = dead_letter(live_stack, raw, "MalformedEvent", "not JSON")
    assert event.data.raw_truncated and event.data.raw_ref is None
    store = ObjectStore(live_stack.minio)
    done = asyncio.run(OversizeStore(live_stack).complete(event, value))
    assert done.id == event.id and done.data.raw_ref == (
        f"s3://{live_stack.minio.dead_letter_bucket}/{event.data.raw_sha256}"
    )
    assert whole_value(done.data, store) == value
    # MinIO away: the letter goes out cut, with its digest, and MinIO is left alone a while
    away = live_stack.model_copy(
        update={"minio": MinioSettings(endpoint="127.0.0.1:1", console_port=2)}
    )
    offline = OversizeStore(away)
    assert asyncio.run(offline.complete(event, value)) == event
    assert asyncio.run(offline.complete(event, value)) == event
    assert offline.failed == 2 and offline.stored == 0


def _newest_by_key(settings: Settings, prefix: str) -> dict[str, bytes | None]:
    """The newest value (None: a tombstone) of every checkpoint key starting with ``prefix``."""
    from confluent_kafka import Consumer, TopicPartition

    from connectors.kafka import base_config

    topic = topic_name(settings.kafka, Topic.CHECKPOINTS)
    consumer = Consumer(
        base_config(settings) | {"group.id": "t-newest", "enable.auto.commit": False}
    )
    newest: dict[str, bytes | None] = {}
    try:
        for p in consumer.list_topics(topic, timeout=30).topics[topic].partitions:
            low, high = consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=30)
            consumer.assign([TopicPartition(topic, p, low)])
            position = low
            while position < high:
                msg = consumer.poll(5.0)
                assert msg is not None and msg.error() is None, "the topic did not answer"
                position = (msg.offset() or 0) + 1
                key = (msg.key() or b"").decode()
                if key.startswith(prefix):
                    newest[key] = msg.value()
    finally:
        consumer.close()
    return newest


def test_a_checkpoint_over_one_message_is_stored_in_parts(live_stack: Settings, unique: str):
    import os

    from connectors.checkpoints import MAX_BYTES, CheckpointStore

    key = f"feedback/m{unique}/join"
    big = {"window": [os.urandom(1000) for _ in range(2500)]}  # ~2.5 MB, incompressible
    store = CheckpointStore(live_stack)
    size = store.save(key, store.encode(big))
    assert size > 2 * MAX_BYTES
    assert CheckpointStore(live_stack).load_all(key) == {key: big}
    stored = _newest_by_key(live_stack, key)
    parts = sorted(k for k, v in stored.items() if "#part/" in k and v is not None)
    assert len(parts) == 3, stored.keys()
    assert stored[key] is not None and stored[key].startswith(b"weir-checkpoint-parts:")

    # a save cut short (a part of a new generation, no manifest): the last one stays readable
    producer = EventProducer(live_stack)
    producer.send_raw(
        topic_name(live_stack.kafka, Topic.CHECKPOINTS), b"junk", f"{key}#part/x/0".encode()
    )
    assert CheckpointStore(live_stack).load_all(key) == {key: big}

    # a smaller state replaces it: every part of every generation read is deleted
    reader = CheckpointStore(live_stack)
    assert reader.load_all(key) == {key: big}
    assert reader.save(key, reader.encode({"window": []})) < MAX_BYTES
    stored = _newest_by_key(live_stack, key)
    assert {k: v for k, v in stored.items() if "#part/" in k and v is not None} == {}
    assert CheckpointStore(live_stack).load_all(key) == {key: {"window": []}}


def test_a_checkpoint_with_a_part_lost_is_skipped_not_half_read(
    live_stack: Settings, unique: str, caplog: pytest.LogCaptureFixture
):
    import os

    from connectors.checkpoints import CheckpointStore

    key = f"feedback/m{unique}/join"
    store = CheckpointStore(live_stack)
    store.save(key, store.encode([os.urandom(1000) for _ in range(1500)]))
    part = next(k for k, v in _newest_by_key(live_stack, key).items() if k.endswith("/1") and v)
    EventProducer(live_stack).send_raw(
        topic_name(live_stack.kafka, Topic.CHECKPOINTS), None, part.encode()
    )
    assert CheckpointStore(live_stack).load_all(key) == {}
    assert "parts missing" in caplog.text and key in caplog.text

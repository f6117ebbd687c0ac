"""Consumer lag of a consumer group on one topic, read with Kafka's admin API.

Blocking (confluent-kafka's AdminClient); the worker calls it in a thread from
a timer, off the scoring path. Lag per partition is the end offset minus the
group's committed offset; a partition the group has not committed yet counts
from the start of the log (the scoring agent reads from the earliest offset).
"""

from __future__ import annotations

from confluent_kafka import ConsumerGroupTopicPartitions, KafkaException, TopicPartition
from confluent_kafka.admin import AdminClient, OffsetSpec

from schemas import ServiceError

REQUEST_TIMEOUT_S = 5.0  # one admin round trip on a live broker takes milliseconds


def group_lag(client: AdminClient, group: str, topic: str, *, address: str) -> dict[int, int]:
    """``{partition: records not yet committed by group}`` for ``topic``.

    Raises :class:`ServiceError` when the broker at ``address`` does not answer.
    """
    return group_position(client, group, topic, address=address)[0]


def group_position(
    client: AdminClient, group: str, topic: str, *, address: str
) -> tuple[dict[int, int], dict[int, int]]:
    """``({partition: lag}, {partition: end offset})`` of ``group`` on ``topic`` (see
    :func:`group_lag`)."""
    try:
        metadata = client.list_topics(topic, timeout=REQUEST_TIMEOUT_S).topics[topic]
        if metadata.error is not None:
            raise KafkaException(metadata.error)
        tps = [TopicPartition(topic, p) for p in sorted(metadata.partitions)]
        request = [ConsumerGroupTopicPartitions(group, tps)]
        answer = client.list_consumer_group_offsets(request, request_timeout=REQUEST_TIMEOUT_S)
        committed = {
            tp.partition: tp.offset
            for tp in answer[group].result(timeout=REQUEST_TIMEOUT_S).topic_partitions
        }
        end = _offsets(client, tps, OffsetSpec.latest())
        missing = [tp for tp in tps if committed.get(tp.partition, -1) < 0]
        if missing:
            committed.update(_offsets(client, missing, OffsetSpec.earliest()))
    except (KafkaException, TimeoutError) as err:
        raise ServiceError(
            f"could not read the lag of group {group} on {topic}: {err!r}",
            service="kafka",
            address=address,
        ) from err
    return {p: max(0, end[p] - committed[p]) for p in sorted(end)}, end


def _offsets(client: AdminClient, tps: list[TopicPartition], spec: OffsetSpec) -> dict[int, int]:
    answer = client.list_offsets({tp: spec for tp in tps}, request_timeout=REQUEST_TIMEOUT_S)
    return {tp.partition: f.result(timeout=REQUEST_TIMEOUT_S).offset for tp, f in answer.items()}

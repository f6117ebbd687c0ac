"""Scoring first, against a real broker: an insight role waits between its batches while
the scoring group's lag says it is behind, and stops waiting once it has caught up."""

from __future__ import annotations

import asyncio
import time
from types import SimpleNamespace
from typing import Any

import pytest
from confluent_kafka import Consumer, TopicPartition

from connectors.kafka import EventProducer, base_config
from schemas.settings import Settings
from schemas.topics import Topic, topic_name
from streams.context import role_group
from streams.roles.scoring_first import attach_scoring_first
from tests.helpers import own_topics


class FakeApp:
    """What attach_scoring_first uses of a Faust app: a timer decorator (kept to call)."""

    def __init__(self) -> None:
        self.timers: list[Any] = []

    def timer(self, interval: float) -> Any:
        def keep(fn: Any) -> Any:
            self.timers.append(fn)
            return fn

        return keep


def commit_end(settings: Settings, group: str, topic: str) -> None:
    """Commit ``group``'s offsets at the end of every partition of ``topic``: caught up."""
    consumer = Consumer(base_config(settings) | {"group.id": group, "enable.auto.commit": False})
    try:
        parts = consumer.list_topics(topic, timeout=15).topics[topic].partitions
        ends = [
            TopicPartition(topic, p, consumer.get_watermark_offsets(TopicPartition(topic, p))[1])
            for p in parts
        ]
        consumer.commit(offsets=ends, asynchronous=False)
    finally:
        consumer.close()


def test_an_insight_role_waits_while_scoring_is_behind(live_stack: Settings, unique: str):
    with own_topics(live_stack, f"{live_stack.kafka.topic_prefix}-sf{unique}") as settings:
        scoring = settings.scoring.model_copy(
            update={"insight_share_behind": 0.25, "scoring_behind_records": 10}
        )
        settings = settings.model_copy(update={"scoring": scoring})
        records = topic_name(settings.kafka, Topic.RECORDS)
        producer = EventProducer(settings)
        for i in range(30):  # the scoring group has committed nothing: 30 behind
            producer.send_raw(records, b"{}", key=f"r{i}".encode())
        app, waits, cpu = FakeApp(), [], [0.0]

        async def sleep(seconds: float) -> None:
            waits.append(seconds)

        ctx = SimpleNamespace(settings=settings, role="feedback", app=app, scoring_first=True)
        before = attach_scoring_first(ctx, sleep=sleep, cpu=lambda: cpu[0], clock=time.monotonic)  # type: ignore[arg-type]
        assert before is not None and len(app.timers) == 1

        async def scenario() -> None:
            await before()  # the first batch samples the lag first: behind
            cpu[0] += 0.1  # the batch took 0.1 s of CPU
            await before()
            assert waits == [pytest.approx(0.3)], "0.1 s of work at a quarter of a core"
            commit_end(settings, role_group(settings, "scoring"), records)
            await app.timers[0]()  # the next sample: caught up
            cpu[0] += 0.1
            await before()
            assert len(waits) == 1, "no wait once scoring has caught up"

        asyncio.run(scenario())


def test_a_role_with_cores_of_its_own_the_scoring_role_and_share_one_never_wait(
    live_stack: Settings,
):
    def ctx(settings: Settings, role: str, scoring_first: bool = True) -> Any:
        return SimpleNamespace(
            settings=settings, role=role, app=FakeApp(), scoring_first=scoring_first
        )

    assert attach_scoring_first(ctx(live_stack, "feedback", scoring_first=False)) is None
    assert attach_scoring_first(ctx(live_stack, "scoring")) is None
    off = live_stack.scoring.model_copy(update={"insight_share_behind": 1.0})
    assert (
        attach_scoring_first(ctx(live_stack.model_copy(update={"scoring": off}), "monitor")) is None
    )
    assert attach_scoring_first(ctx(live_stack, "monitor")) is not None

"""Shared fixtures. Integration tests get the real local stack, started here if needed.

The session fixture brings Kafka and MinIO up (reusing a stack that is already
running) and, at the end, stops only what it started itself.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest

from connectors.kafka import delete_topics, ensure_topics
from schemas.settings import Settings
from streams.dev.stack import Stack


@pytest.fixture(scope="session")
def stack_settings() -> Settings:
    return Settings()


@pytest.fixture(scope="session")
def live_stack(stack_settings: Settings) -> Iterator[Settings]:
    """Settings pointing at the running stack, with topics under a prefix of this session.

    The prefix keeps a session's topics apart from the demo's and earlier runs'.
    Tests that need topics of their own put them under it too (``<session>-<tag>``),
    and every one of them is deleted at the end: a broker that keeps thousands of
    leftover partitions spends its heap on them, and its GC pauses grow.
    """
    stack = Stack(stack_settings)
    report = stack.up()
    kafka = stack_settings.kafka.model_copy(update={"topic_prefix": f"it-{uuid.uuid4().hex[:8]}"})
    session = stack_settings.model_copy(update={"kafka": kafka})
    ensure_topics(session)
    yield session
    delete_topics(session, session.kafka.topic_prefix)
    if report.started:
        stack.down(only=tuple(report.started))


@pytest.fixture
def unique() -> str:
    """A short unique suffix for consumer groups, keys and object names."""
    return uuid.uuid4().hex[:10]


@pytest.fixture
def busy_cores() -> Iterator[list[int]]:
    """Both cores kept busy by CPU hogs for the whole test (tests/load.py); their PIDs."""
    from tests.load import cpu_hog

    with cpu_hog() as pids:
        yield pids

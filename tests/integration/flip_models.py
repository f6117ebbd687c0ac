"""Test models whose outputs tell which version scored a record."""

from __future__ import annotations

from datetime import UTC, datetime

import numpy as np
from sklearn.linear_model import LogisticRegression

from connectors.kafka import EventProducer
from connectors.registry import ModelRegistry
from connectors.signing import signed
from schemas import InputRecord, Label, ModelVersionEvent, new_event
from schemas.model_card import ModelCard
from schemas.settings import Settings
from schemas.topics import Topic, topic_name

FEATURES = ["a", "b"]


def publish_flip_models(settings: Settings, model: str) -> None:
    """v1 predicts a > 0, v2 predicts a < 0: an output tells which version scored it."""
    rng = np.random.default_rng(3)
    x = rng.normal(size=(400, 2))
    registry = ModelRegistry.for_settings(settings)
    for version, y in (("1", x[:, 0] > 0), ("2", x[:, 0] < 0)):
        card = ModelCard(
            name=model,
            version=version,
            framework="sklearn",
            features=FEATURES,
            classes=[0, 1],
            created_at=datetime.now(UTC),
        )
        registry.publish(card, LogisticRegression().fit(x, y.astype(int)))


def expected_output(version: str, a: float) -> int:
    return int(a > 0) if version == "1" else int(a < 0)


def produce_records(
    settings: Settings,
    producer: EventProducer,
    unique: str,
    start: int,
    count: int,
    a_of: dict[str, float],
    *,
    labels_by: str | None = None,
) -> None:
    """Records ``<unique>-<start>`` on, their feature ``a`` kept in ``a_of``; with ``labels_by``,
    labels as that version would answer (so it is always right and the other always wrong)."""
    k = settings.kafka
    for i in range(start, start + count):
        a = ((i * 7919) % 2001 - 1000) / 100.0 or 0.5
        rid = f"{unique}-{i}"
        a_of[rid] = a
        record = InputRecord(id=rid, features={"a": a, "b": 1.0})
        producer.produce(topic_name(k, Topic.RECORDS), new_event(record, source="t"))
        if labels_by is not None:
            label = Label(record_id=rid, label=expected_output(labels_by, a))
            producer.produce(topic_name(k, Topic.LABELS), new_event(label, source="t"))
    producer.flush()


def activation(model: str, version: str, url: str) -> ModelVersionEvent:
    """The route that sends all of ``model``'s traffic to ``version`` at ``url`` (V1)."""
    return ModelVersionEvent(
        action="activate", model=model, version=version, url=url, protocol="v1", features=FEATURES
    )


def publish_route(
    settings: Settings, change: ModelVersionEvent, producer: EventProducer | None = None
) -> None:
    """Sign ``change`` with the stack's key and put it on the control topic, as the CLI does."""
    event = signed(settings, new_event(change, source="test"))
    (producer or EventProducer(settings)).send(topic_name(settings.kafka, Topic.MODELS), event)

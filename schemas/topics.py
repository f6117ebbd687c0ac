"""The topics weir uses: names (one configurable prefix), partitions and configs.

This is the single place that knows topic names; agents, the CLI, the
manifests' tests and ``weir topics create`` all read it from here.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum

from schemas.settings import KafkaSettings

_WEEK_MS = str(7 * 24 * 3600 * 1000)
_MONTH_MS = str(30 * 24 * 3600 * 1000)


class Topic(StrEnum):
    """Logical topic names; the physical name is ``<prefix>.<value>``."""

    RECORDS = "records"
    PREDICTIONS = "predictions"
    LABELS = "labels"
    OUTCOMES = "outcomes"
    ALERTS = "alerts"
    MODELS = "models"
    PIPELINE_RUNS = "pipeline-runs"
    DEAD_LETTER = "dead-letter"
    CHECKPOINTS = "checkpoints"


@dataclass(frozen=True)
class TopicSpec:
    topic: Topic
    name: str
    partitions: int
    replication_factor: int
    config: dict[str, str] = field(default_factory=dict)


def topic_name(kafka: KafkaSettings, topic: Topic) -> str:
    return f"{kafka.topic_prefix}.{topic.value}"


def topic_specs(kafka: KafkaSettings) -> list[TopicSpec]:
    """Every topic weir needs, with partitions and configs.

    ``models`` is compacted: the latest routing event per model survives, so a
    new worker rebuilds every route by reading it from the start. Data topics
    scale with ``record_partitions``; the dead-letter topic keeps a month.
    """
    wide = kafka.record_partitions
    layout: dict[Topic, tuple[int, dict[str, str]]] = {
        Topic.RECORDS: (wide, {"retention.ms": _WEEK_MS}),
        Topic.PREDICTIONS: (wide, {"retention.ms": _WEEK_MS}),
        Topic.LABELS: (wide, {"retention.ms": _WEEK_MS}),
        Topic.OUTCOMES: (wide, {"retention.ms": _WEEK_MS}),
        Topic.ALERTS: (1, {"retention.ms": _MONTH_MS}),
        Topic.MODELS: (
            1,
            {
                "cleanup.policy": "compact",
                "min.cleanable.dirty.ratio": "0.1",
                "segment.ms": "3600000",
            },
        ),
        Topic.PIPELINE_RUNS: (1, {"retention.ms": _MONTH_MS}),
        Topic.DEAD_LETTER: (wide, {"retention.ms": _MONTH_MS}),
        # the roles' state (detectors, join window, retraining policy), newest per key
        Topic.CHECKPOINTS: (1, {"cleanup.policy": "compact", "min.cleanable.dirty.ratio": "0.1"}),
    }
    return [
        TopicSpec(
            topic=t,
            name=topic_name(kafka, t),
            partitions=parts,
            replication_factor=kafka.replication_factor,
            config=cfg,
        )
        for t, (parts, cfg) in layout.items()
    ]

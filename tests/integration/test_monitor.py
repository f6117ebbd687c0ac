"""The monitor role as its own process, on the real broker: outliers found in batches.

Its outlier scorer takes a batch's records together (``agents/halfspace.py``);
this checks the role end to end: demo records in, with a few far out in every
feature among them, and an outlier alert for each of those and for nothing else.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from connectors.kafka import EventProducer
from schemas import InputRecord, new_event
from schemas.settings import ScoringSettings, Settings, StackSettings
from schemas.topics import Topic, topic_name
from streams.dev.localrun import Collector
from streams.synthetic import drifting_stream
from tests.helpers import own_topics, start_roles

pytestmark = pytest.mark.integration

START_S = 180  # the role imports river and joins its group on a busy 2-core machine
DRAIN_S = 120
OUTLIER = "io.weir.alert.outlier.v1"
FAR_AT = (1500, 2200, 2900)  # after the warm-up (one tree window) and the first windows


def test_the_monitor_role_flags_far_out_records_and_only_them(
    live_stack: Settings, unique: str, tmp_path: Path
):
    model = f"mon{unique}"
    with own_topics(live_stack, f"{live_stack.kafka.topic_prefix}-mon{unique}") as topics:
        settings = topics.model_copy(
            update={
                "scoring": ScoringSettings(model=model, worker_id=f"w-{model}"),
                "stack": StackSettings(cache_dir=topics.stack.cache_dir, state_dir=tmp_path),
            }
        )
        records = topic_name(settings.kafka, Topic.RECORDS)
        out = Collector(settings, [topic_name(settings.kafka, Topic.ALERTS)], f"check-{unique}")
        monitor = start_roles(settings, f"mon-{unique}", ("monitor",), name="monitor")
        try:
            # a new group reads from the start: the records may go in before it joins
            producer = EventProducer(settings)
            rows = list(drifting_stream(n=3500, drift_at=10**9, seed=11))
            for i, row in enumerate(rows):
                features = row.features
                if i in FAR_AT:
                    features = {k: 30.0 for k in features}  # far out in every feature
                event = new_event(InputRecord(id=f"{unique}-{i}", features=features), source="t")
                producer.produce(records, event)
            producer.flush(30)

            def flagged() -> list[str]:
                return [e.data.record_id for e in out.events(OUTLIER) if e.data.model == model]

            out.until(
                lambda: len(flagged()) >= len(FAR_AT),
                deadline_s=START_S + DRAIN_S,
                what=f"{len(FAR_AT)} outlier alerts",
            )
            out.poll_for(3.0)  # an alert for an ordinary record would come with them
        finally:
            out.close()
            monitor.stop()
    assert sorted(flagged()) == sorted(f"{unique}-{i}" for i in FAR_AT)
    assert all(e.data.score > e.data.threshold for e in out.events(OUTLIER))

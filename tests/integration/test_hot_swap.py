"""The dynamically controlled stream on real parts: two kserve.ModelServer processes,
a real Faust worker process, the real broker.

One worker run covers: a hot swap v1 → v2 under load (no record lost, each
scored exactly once, outputs prove which server scored), a swap to an endpoint
that is not ready (rejected, scoring continues), and a model server that goes
down mid-stream (records wait, nothing lost, scoring resumes).
"""

from __future__ import annotations

from collections import Counter

import pytest

from connectors.kafka import EventProducer
from connectors.process import free_port
from connectors.signing import signed
from schemas import InputRecord, ModelVersionEvent, new_event
from schemas.settings import KServeSettings, ScoringSettings, Settings, StackSettings
from schemas.topics import Topic, topic_name
from streams.dev.localrun import Collector, start_worker
from streams.servers.deployers import serve
from tests.integration.flip_models import FEATURES, expected_output, publish_flip_models

pytestmark = pytest.mark.integration

DEADLINE_S = 120  # worker start (~5 s) + scoring a few thousand records on 2 shared cores


def test_hot_swap_rejection_and_outage(live_stack: Settings, unique: str, tmp_path, capsys):
    model = f"swap{unique}"
    settings = live_stack.model_copy(
        update={
            "scoring": ScoringSettings(
                model=model,
                batch_size=50,
                batch_wait_s=0.05,
                backoff_max_s=1.0,
                control_ready_timeout_s=2.0,
            ),
            "kserve": KServeSettings(timeout_s=2.0, max_retries=1),
            "stack": StackSettings(cache_dir=live_stack.stack.cache_dir, state_dir=tmp_path),
        }
    )
    k = settings.kafka
    records_t, models_t = topic_name(k, Topic.RECORDS), topic_name(k, Topic.MODELS)
    publish_flip_models(settings, model)
    p1, p2 = free_port(), free_port()
    v1_server = serve(settings, model, "1", p1)
    v2_server = serve(settings, model, "2", p2)
    producer = EventProducer(settings)

    def control(action: str, version: str, port: int) -> None:
        change = ModelVersionEvent(
            action=action,
            model=model,
            version=version,
            url=f"http://127.0.0.1:{port}",
            protocol="v1",
            features=FEATURES,
        )
        producer.send(models_t, signed(settings, new_event(change, source="test")))

    features_of: dict[str, float] = {}

    def produce(start: int, count: int) -> None:
        for i in range(start, start + count):
            a = ((i * 7919) % 2001 - 1000) / 100.0 or 0.5
            features_of[f"{unique}-{i}"] = a
            producer.produce(
                records_t,
                new_event(InputRecord(id=f"{unique}-{i}", features={"a": a, "b": 1.0}), source="t"),
            )
        producer.flush()

    control("activate", "1", p1)
    worker = start_worker(settings, unique)
    out = Collector(
        settings,
        [
            topic_name(k, Topic.PREDICTIONS),
            topic_name(k, Topic.DEAD_LETTER),
            topic_name(k, Topic.ALERTS),
        ],
        group=f"check-{unique}",
    )

    def predictions() -> list:
        return [e for e in out.events("io.weir.prediction.v1") if e.data.model == model]

    def scored_ids() -> set[str]:
        return {p.data.record_id for p in predictions()}

    try:
        # --- hot swap under load
        produce(0, 1500)
        out.until(lambda: len(scored_ids()) >= 300, deadline_s=DEADLINE_S, what="first predictions")
        control("activate", "2", p2)
        swap_time = new_event(InputRecord(id="clock", features={"a": 0.0}), source="t").time
        produce(1500, 1500)
        out.until(lambda: len(scored_ids()) >= 3000, deadline_s=DEADLINE_S, what="all 3000 scored")

        preds = predictions()
        per_record = Counter(p.data.record_id for p in preds)
        assert set(per_record) == set(features_of), "every record has a prediction"
        assert max(per_record.values()) == 1, "each record is scored exactly once"
        for p in preds:
            assert p.data.output == expected_output(
                p.data.version, features_of[p.data.record_id]
            ), "the stamped version is the server that scored it"
        by_version = Counter(p.data.version for p in preds)
        assert by_version["1"] >= 300 and by_version["2"] > 0
        v2_times = sorted(p.time for p in preds if p.data.version == "2")
        v1_after = sum(1 for p in preds if p.data.version == "1" and p.time > swap_time)
        swap_latency = (v2_times[0] - swap_time).total_seconds()
        assert all(p.data.version == "2" for p in preds if p.time > v2_times[0]), (
            "once v2 serves, v1 serves no more"
        )

        # --- a swap to an endpoint that is not ready is rejected; scoring goes on with v2
        # (version 1 is in the registry: only its new server, on a dead port, is wrong)
        dead_port = free_port()
        dead_url = f"http://127.0.0.1:{dead_port}"
        control("activate", "1", dead_port)
        out.until(
            lambda: any(
                e.data.url == dead_url
                for e in out.events("io.weir.model.route.v1")
                if e.data.model == model
            ),
            deadline_s=DEADLINE_S,
            what="route decision for the dead endpoint",
        )
        decision = next(
            e.data for e in out.events("io.weir.model.route.v1") if e.data.url == dead_url
        )
        assert not decision.accepted and decision.active_version == "2"
        assert "not ready" in decision.reason
        produce(3000, 200)
        out.until(
            lambda: len(scored_ids()) >= 3200, deadline_s=DEADLINE_S, what="scoring after rejection"
        )
        assert {p.data.version for p in predictions()[-200:]} == {"2"}

        # --- the serving model server goes down mid-stream: records wait, none is lost
        v2_server.stop()
        produce(3200, 300)
        out.until(
            lambda: "records wait and retry" in worker.log_tail(200),
            deadline_s=DEADLINE_S,
            what="the worker to notice the outage",
        )
        assert len(scored_ids()) < 3500
        v2_server = serve(settings, model, "2", p2)
        out.until(
            lambda: len(scored_ids()) >= 3500, deadline_s=DEADLINE_S, what="scoring to resume"
        )
        final = Counter(p.data.record_id for p in predictions())
        assert len(final) == 3500 and max(final.values()) == 1
        dead = [e for e in out.events("io.weir.deadletter.v1") if e.data.source_topic == records_t]
        assert dead == [], "nothing was dead-lettered"
    finally:
        out.close()
        worker.stop()
        v1_server.stop()
        v2_server.stop()
    with capsys.disabled():
        print(
            f"\n[hot swap] v1={by_version['1']} v2={by_version['2']} of 3000; "
            f"control→first v2 prediction {swap_latency:.3f}s; "
            f"v1-scored after the control event: {v1_after}"
        )

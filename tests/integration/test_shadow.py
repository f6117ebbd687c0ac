"""Shadow mirroring on real parts: the scoring role mirrors every batch to the shadow route.

The scoring and feedback roles, real kserve.ModelServer processes for the flip
models (version 1 predicts a > 0, version 2 a < 0: an output tells which version
made it), the real broker. Version 1 serves, version 2 is the shadow: every
record gets one served prediction from v1 and one shadow prediction from v2,
labels join only the served one, and when the shadow's server dies the active
path goes on as before.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest

from connectors.kafka import EventProducer
from connectors.process import ServiceProcess, free_port, wait_until
from schemas import ModelVersionEvent
from schemas.settings import ScoringSettings, Settings, StackSettings
from schemas.topics import Topic, topic_name
from streams.dev.localrun import Collector
from streams.servers.deployers import serve
from tests.helpers import http_get, own_topics, start_roles
from tests.integration import slow_proxy
from tests.integration.flip_models import (
    FEATURES,
    activation,
    expected_output,
    produce_records,
    publish_flip_models,
    publish_route,
)

pytestmark = pytest.mark.integration

DEADLINE_S = 120


def shadow_roles(
    settings: Settings, unique: str, model: str, active_url: str, shadow_url: str
) -> tuple[ServiceProcess, ServiceProcess, int]:
    """Version 1 active at ``active_url``, version 2 the shadow at ``shadow_url``; the
    scoring and feedback roles, and the performance role with its live view on a port."""
    publish_route(settings, activation(model, "1", active_url))
    publish_route(
        settings,
        ModelVersionEvent(
            action="shadow",
            model=model,
            version="2",
            url=shadow_url,
            protocol="v1",
            features=FEATURES,
        ),
    )
    perf_port = free_port()
    worker = start_roles(settings, unique, ("scoring", "feedback"))
    performance = start_roles(
        settings.model_copy(update={"live": settings.live.model_copy(update={"port": perf_port})}),
        f"perf-{unique}",
        ("performance",),
        name="performance",
    )
    return worker, performance, perf_port


def live_accuracy(port: int) -> dict[str, dict]:
    """The performance role's rolling accuracies by version label ({} until it answers)."""
    r = http_get(f"http://127.0.0.1:{port}/status.json")
    if r is None or r.status_code != 200:
        return {}
    return {a["version"]: a for a in r.json()["accuracy"]}


def test_a_shadow_sees_every_record_and_a_dead_one_costs_nothing(
    live_stack: Settings, unique: str, tmp_path: Path
):
    with own_topics(live_stack, f"{live_stack.kafka.topic_prefix}-shd{unique}") as topics:
        shadow_run(topics, unique, tmp_path)


def shadow_run(topics: Settings, unique: str, tmp_path: Path) -> None:
    model = f"shd{unique}"
    settings = topics.model_copy(
        update={
            # room for every batch's shadow call: on a busy machine the shadow server is slow,
            # and with the default two slots later batches would (by design) not be mirrored
            "scoring": ScoringSettings(
                model=model, batch_size=50, batch_wait_s=0.05, shadow_in_flight=64
            ),
            "stack": StackSettings(cache_dir=topics.stack.cache_dir, state_dir=tmp_path),
        }
    )
    k = settings.kafka
    publish_flip_models(settings, model)
    p1, p2 = free_port(), free_port()
    v1, v2 = serve(settings, model, "1", p1), serve(settings, model, "2", p2)
    worker, performance, perf_port = shadow_roles(
        settings, unique, model, f"http://127.0.0.1:{p1}", f"http://127.0.0.1:{p2}"
    )
    out = Collector(
        settings,
        [topic_name(k, t) for t in (Topic.PREDICTIONS, Topic.OUTCOMES, Topic.ALERTS)],
        group=f"{k.topic_prefix}-{unique}",
    )
    producer = EventProducer(settings)
    a_of: dict[str, float] = {}

    def produce(start: int, count: int, *, labels: bool = False) -> None:
        labels_by = "1" if labels else None
        produce_records(settings, producer, unique, start, count, a_of, labels_by=labels_by)

    def predictions(shadow: bool) -> list:
        return [
            e.data
            for e in out.events("io.weir.prediction.v1")
            if e.data.model == model and e.data.shadow == shadow
        ]

    try:
        produce(0, 300, labels=True)
        out.until(
            lambda: len(predictions(False)) >= 300 and len(predictions(True)) >= 300,
            deadline_s=DEADLINE_S,
            what="served and shadow predictions of 300 records",
        )
        served, shadowed = predictions(False), predictions(True)
        assert {p.version for p in served} == {"1"} and {p.version for p in shadowed} == {"2"}
        assert {p.record_id for p in shadowed} == {p.record_id for p in served}
        for p in served + shadowed:
            assert p.output == expected_output(p.version, a_of[p.record_id]), "made by its version"
        # each label judges the served prediction and, apart, the shadow's: version 2
        # (the shadow) answers the opposite of version 1 here, so it is wrong every time
        out.until(
            lambda: len(out.events("io.weir.outcome.v1")) >= 600,
            deadline_s=DEADLINE_S,
            what="served and shadow outcomes of the 300 labelled records",
        )
        outcomes = [e.data for e in out.events("io.weir.outcome.v1") if e.data.model == model]
        served_o = [o for o in outcomes if not o.shadow]
        shadow_o = [o for o in outcomes if o.shadow]
        assert len(served_o) == len(shadow_o) == 300
        assert {o.version for o in served_o} == {"1"} and all(o.correct for o in served_o)
        assert {o.version for o in shadow_o} == {"2"} and not any(o.correct for o in shadow_o)
        assert {o.agrees for o in shadow_o} == {False} and {o.agrees for o in served_o} == {None}
        # the performance role shows the shadow's live accuracy beside the served version's
        accuracy: dict[str, dict] = {}

        def judged() -> bool:
            accuracy.update(live_accuracy(perf_port))
            return all(accuracy.get(v, {}).get("outcomes", 0) >= 300 for v in ("1", "2 (shadow)"))

        wait_until(judged, timeout_s=DEADLINE_S, what="the performance role's accuracies")
        assert accuracy["1"]["accuracy"] == 1.0 and accuracy["2 (shadow)"]["accuracy"] == 0.0
        assert accuracy["2 (shadow)"]["agreement"] == 0.0 and accuracy["1"]["agreement"] is None
        out.poll_for(1.0)
        assert out.events("io.weir.alert.performance.v1") == [], "a shadow serves nobody"

        # the shadow's server dies: the active path goes on, every record scored once
        v2.stop()
        produce(300, 300)
        out.until(lambda: len(predictions(False)) >= 600, deadline_s=DEADLINE_S, what="600 served")
        per_record = Counter(p.record_id for p in predictions(False))
        assert len(per_record) == 600 and max(per_record.values()) == 1
        assert {p.version for p in predictions(False)} == {"1"}
        assert "records not mirrored" in worker.log_file.read_text(errors="replace")
    finally:
        out.close()
        worker.stop()
        performance.stop()
        v1.stop()
        v2.stop()


def test_a_slow_shadow_costs_the_served_path_nothing_and_a_better_one_shows_it(
    live_stack: Settings, unique: str, tmp_path: Path
):
    with own_topics(live_stack, f"{live_stack.kafka.topic_prefix}-shs{unique}") as topics:
        slow_shadow_run(topics, unique, tmp_path)


def slow_shadow_run(topics: Settings, unique: str, tmp_path: Path) -> None:
    """Version 2 is the shadow behind a 2-second network, with the default two shadow
    slots; the labels are version 2's, so the shadow is the better version."""
    model = f"shs{unique}"
    settings = topics.model_copy(
        update={
            "scoring": ScoringSettings(model=model, batch_size=50, batch_wait_s=0.05),
            "stack": StackSettings(cache_dir=topics.stack.cache_dir, state_dir=tmp_path),
        }
    )
    k = settings.kafka
    publish_flip_models(settings, model)
    p1, p2 = free_port(), free_port()
    v1, v2 = serve(settings, model, "1", p1), serve(settings, model, "2", p2)
    proxy, slow_url = slow_proxy.start(tmp_path, "slow-shadow", f"http://127.0.0.1:{p2}", 2.0)
    worker, performance, perf_port = shadow_roles(
        settings, unique, model, f"http://127.0.0.1:{p1}", slow_url
    )
    out = Collector(
        settings, [topic_name(k, Topic.PREDICTIONS)], group=f"{k.topic_prefix}-{unique}"
    )
    producer = EventProducer(settings)
    a_of: dict[str, float] = {}

    def predictions(shadow: bool) -> list:
        return [
            e.data
            for e in out.events("io.weir.prediction.v1")
            if e.data.model == model and e.data.shadow == shadow
        ]

    try:
        produce_records(settings, producer, unique, 0, 600, a_of, labels_by="2")
        out.until(lambda: len(predictions(False)) >= 600, deadline_s=DEADLINE_S, what="600 served")
        served = predictions(False)
        per_record = Counter(p.record_id for p in served)
        assert len(per_record) == 600 and max(per_record.values()) == 1
        assert {p.version for p in served} == {"1"}, "the shadow never serves"
        for p in served:
            assert p.output == expected_output("1", a_of[p.record_id])
        # the slow shadow answers later, for the batches it had a slot for; the rest were
        # not mirrored (said in the log), never waited for
        out.until(lambda: len(predictions(True)) > 0, deadline_s=DEADLINE_S, what="a shadow answer")
        assert {p.version for p in predictions(True)} == {"2"}
        assert "records not mirrored" in worker.log_file.read_text(errors="replace")
        # the better shadow shows it in live accuracy, beside the served version
        accuracy: dict[str, dict] = {}

        def judged() -> bool:
            accuracy.update(live_accuracy(perf_port))
            return "1" in accuracy and "2 (shadow)" in accuracy

        wait_until(judged, timeout_s=DEADLINE_S, what="served and shadow accuracy")
        assert accuracy["2 (shadow)"]["accuracy"] == 1.0 and accuracy["1"]["accuracy"] == 0.0
    finally:
        out.close()
        worker.stop()
        performance.stop()
        proxy.stop()
        v1.stop()
        v2.stop()

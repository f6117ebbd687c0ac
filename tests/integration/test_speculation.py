"""Speculative serving on real parts: two versions at once, one behind a slow network.

Real kserve.ModelServer processes for the flip models (version 1 predicts
a > 0, version 2 a < 0: an output tells which version made it), the scoring
role, the real broker. A slow proxy (``tests/integration/slow_proxy.py``)
holds every prediction call to one member for 3 s: the deadline (300 ms) holds,
the fast member's answer serves, the slow member's answers are counted late on
``/metrics``, and every record is scored exactly once. Then the slow one is
the other version and the decider is ``majority``; then the speculation is
cleared and the active route serves alone.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from connectors.kafka import EventProducer
from connectors.process import free_port, wait_until
from schemas import ModelVersionEvent, SpeculativeMember
from schemas.settings import LiveSettings, ScoringSettings, Settings, StackSettings
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

DEADLINE_S = 180
SLOW_S = 3.0


def test_the_deadline_holds_with_a_slow_member_and_late_answers_are_counted(
    live_stack: Settings, unique: str, tmp_path: Path
):
    with own_topics(live_stack, f"{live_stack.kafka.topic_prefix}-spc{unique}") as topics:
        speculation_run(topics, unique, tmp_path)


def speculation_run(topics: Settings, unique: str, tmp_path: Path) -> None:
    model = f"spc{unique}"
    live_port = free_port()
    settings = topics.model_copy(
        update={
            "scoring": ScoringSettings(model=model, batch_size=50, batch_wait_s=0.05),
            "live": LiveSettings(port=live_port),
            "stack": StackSettings(cache_dir=topics.stack.cache_dir, state_dir=tmp_path),
        }
    )
    k = settings.kafka
    publish_flip_models(settings, model)
    p1, p2 = free_port(), free_port()
    fast = {"1": f"http://127.0.0.1:{p1}", "2": f"http://127.0.0.1:{p2}"}
    servers = [serve(settings, model, "1", p1), serve(settings, model, "2", p2)]
    proxies = [slow_proxy.start(tmp_path, f"slow-{v}", fast[v], SLOW_S) for v in ("1", "2")]
    slow = {"1": proxies[0][1], "2": proxies[1][1]}

    def speculate(name: str, urls: dict[str, str], decider: str) -> ModelVersionEvent:
        return ModelVersionEvent(
            action="speculate",
            model=model,
            version=name,
            members=[
                SpeculativeMember(version=v, url=u, protocol="v1", features=FEATURES)
                for v, u in urls.items()
            ],
            deadline_ms=300,
            decider=decider,
        )

    publish_route(settings, activation(model, "1", fast["1"]))
    worker = start_roles(settings, unique, ("scoring",))
    out = Collector(
        settings,
        [topic_name(k, t) for t in (Topic.PREDICTIONS, Topic.ALERTS)],
        group=f"{k.topic_prefix}-{unique}",
    )
    producer = EventProducer(settings)
    a_of: dict[str, float] = {}

    def predictions(first: int, last: int) -> list:
        wanted = {f"{unique}-{i}" for i in range(first, last)}
        return [
            e.data
            for e in out.events("io.weir.prediction.v1")
            if e.data.model == model and e.data.record_id in wanted
        ]

    def accepted(name: str) -> None:
        out.until(
            lambda: any(
                e.data.accepted and e.data.version == name
                for e in out.events("io.weir.model.route.v1")
                if e.data.model == model
            ),
            deadline_s=DEADLINE_S,
            what=f"the scoring role taking {name}",
        )

    def late(version: str) -> float:
        r = http_get(f"http://127.0.0.1:{live_port}/metrics")
        if r is None or r.status_code != 200:
            return 0.0
        for family in text_string_to_metric_families(r.text):
            for sample in family.samples:
                if (
                    sample.name == "weir_speculative_late_total"
                    and sample.labels.get("version") == version
                ):
                    return sample.value
        return 0.0

    def score(first: int, last: int) -> list:
        produce_records(settings, producer, unique, first, last - first, a_of)
        out.until(
            lambda: len(predictions(first, last)) >= last - first,
            deadline_s=DEADLINE_S,
            what=f"predictions of records {first}..{last - 1}",
        )
        found = predictions(first, last)
        for p in found:
            assert p.output == expected_output(p.version, a_of[p.record_id]), "made by its version"
        return found

    try:
        ready = f"http://127.0.0.1:{live_port}/readyz"
        wait_until(
            lambda: (r := http_get(ready)) is not None and r.status_code == 200,
            timeout_s=DEADLINE_S,
            what="the scoring role ready",
        )
        # 1. version 2 is slow: version 1 answers within the deadline and serves
        publish_route(settings, speculate("spec-a", {"1": fast["1"], "2": slow["2"]}, "first"))
        accepted("spec-a")
        first = score(0, 200)
        assert {(p.version, p.decider, p.answers) for p in first} == {("1", "first", 1)}
        wait_until(lambda: late("2") >= 200, timeout_s=DEADLINE_S, what="version 2's late answers")

        # 2. now version 1 is slow and a majority decides what answered in time: version 2
        publish_route(settings, speculate("spec-b", {"1": slow["1"], "2": fast["2"]}, "majority"))
        accepted("spec-b")
        second = score(200, 400)
        assert {(p.version, p.decider, p.answers) for p in second} == {("2", "majority", 1)}
        assert {p.url for p in second} == {fast["2"]}
        wait_until(lambda: late("1") >= 200, timeout_s=DEADLINE_S, what="version 1's late answers")

        # 3. the speculation cleared: the active route alone
        clear = ModelVersionEvent(action="clear-speculative", model=model, version="spec-b")
        publish_route(settings, clear)
        accepted("spec-b")
        out.until(
            lambda: any(
                "cleared" in e.data.reason
                for e in out.events("io.weir.model.route.v1")
                if e.data.model == model
            ),
            deadline_s=DEADLINE_S,
            what="the speculation cleared",
        )
        third = score(400, 500)
        assert {(p.version, p.decider, p.answers) for p in third} == {("1", None, None)}

        per_record = Counter(
            e.data.record_id for e in out.events("io.weir.prediction.v1") if e.data.model == model
        )
        assert len(per_record) == 500 and max(per_record.values()) == 1, "each scored once"
    finally:
        out.close()
        worker.stop()
        for proc, _url in proxies:
            proc.stop()
        for server in servers:
            server.stop()

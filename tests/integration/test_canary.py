"""Canary contests on real parts: a better canary is promoted, a worse one rolled back.

The scoring, feedback, performance and retrainer roles under one supervisor,
real kserve.ModelServer processes for the flip models (version 1 predicts
a > 0, version 2 a < 0: an output tells which version made it), the real broker.
A person puts a canary on (a signed route, as ``weir models publish --action
canary`` does); from then on no person acts: the performance role judges the
canary on live labels and the retrainer carries each verdict out as signed
route events.

1. Version 1 active, version 2 on canary at 20 %, labels that version 2 gets
   right: version 2 steps to 50 % and is promoted.
2. Version 2 active, version 1 on canary at 20 %, the same labels: version 1
   is rolled back.

Every record is scored exactly once, by the version that owned it when it was
scored: a record whose hash bucket is above a canary weight is scored by the
canary's version only after the route event that gave it that share.
"""

from __future__ import annotations

import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import pytest

from agents.routing import _bucket
from connectors.kafka import EventProducer
from connectors.process import free_port, wait_until
from schemas import ModelVersionEvent
from schemas.settings import (
    CanarySettings,
    LiveSettings,
    RetrainingSettings,
    ScoringSettings,
    Settings,
    StackSettings,
    settings_env,
)
from schemas.topics import Topic, topic_name
from streams.dev.localrun import Collector
from streams.servers.deployers import serve
from tests.helpers import http_get, own_topics, start_roles
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
WEIR = str(Path(sys.executable).parent / "weir")
POLICY = CanarySettings(min_outcomes=50, max_outcomes=1000, steps=(0.5,), error_budget=0.02)


def test_a_better_canary_is_promoted_and_a_worse_one_rolled_back_by_nobody(
    live_stack: Settings, unique: str, tmp_path: Path
):
    with own_topics(live_stack, f"{live_stack.kafka.topic_prefix}-can{unique}") as topics:
        canary_run(topics, unique, tmp_path)


def canary_run(topics: Settings, unique: str, tmp_path: Path) -> None:
    model = f"can{unique}"
    live_port = free_port()
    settings = topics.model_copy(
        update={
            "scoring": ScoringSettings(model=model, batch_size=20, batch_wait_s=0.02),
            "canary": POLICY,
            # no retraining runs: the first version's errors raise alerts, and the
            # contest, not a pipeline, is under test
            "retraining": RetrainingSettings(enabled=False),
            "live": LiveSettings(port=live_port),
            # the contest checkpointed every second, for `weir models list` to show it
            "monitor": topics.monitor.model_copy(update={"checkpoint_interval_s": 1.0}),
            "stack": StackSettings(cache_dir=topics.stack.cache_dir, state_dir=tmp_path),
        }
    )
    k = settings.kafka
    publish_flip_models(settings, model)
    p1, p2 = free_port(), free_port()
    url = {"1": f"http://127.0.0.1:{p1}", "2": f"http://127.0.0.1:{p2}"}
    servers = [serve(settings, model, "1", p1), serve(settings, model, "2", p2)]

    def canary(version: str, weight: float) -> ModelVersionEvent:
        return ModelVersionEvent(
            action="canary",
            model=model,
            version=version,
            url=url[version],
            protocol="v1",
            weight=weight,
            features=FEATURES,
        )

    publish_route(settings, activation(model, "1", url["1"]))
    worker = start_roles(settings, unique, ("scoring", "feedback", "performance", "retrainer"))
    out = Collector(
        settings,
        [topic_name(k, t) for t in (Topic.PREDICTIONS, Topic.ALERTS, Topic.MODELS)],
        group=f"{k.topic_prefix}-{unique}",
    )
    producer = EventProducer(settings)
    a_of: dict[str, float] = {}

    def produce(start: int, count: int) -> None:
        """Records and labels that version 2 gets right and version 1 gets wrong."""
        produce_records(settings, producer, unique, start, count, a_of, labels_by="2")

    produced = [0]  # records so far; their ids are <unique>-0, -1, ...

    def stream_until(condition: Callable[[], bool], what: str) -> int:
        """Produce a stream (50 records, then half a second of reading) until ``condition()``;
        returns the index of the first record produced after it held."""
        deadline = time.monotonic() + DEADLINE_S
        while not condition():
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out after {DEADLINE_S}s waiting for {what}")
            produce(produced[0], 50)
            produced[0] += 50
            out.poll_for(0.5)
        return produced[0]

    def verdicts() -> list:
        return [e.data for e in out.events("io.weir.canary.verdict.v1") if e.data.model == model]

    def routes() -> list:
        return [e for e in out.events("io.weir.model.version.v1") if e.data.model == model]

    def predictions() -> list:
        return [e for e in out.events("io.weir.prediction.v1") if e.data.model == model]

    def decisions() -> list:
        return [e.data for e in out.events("io.weir.model.route.v1") if e.data.model == model]

    def status() -> dict:
        r = http_get(f"http://127.0.0.1:{live_port}/status.json")
        return r.json() if r is not None and r.status_code == 200 else {}

    try:
        wait_until(lambda: status().get("ready"), timeout_s=DEADLINE_S, what="roles ready")
        publish_route(settings, canary("2", 0.2))
        # 1. a better canary: step to 50 %, then promoted, with no person acting
        stream_until(lambda: bool(verdicts()), "the first verdict")
        # between looks, `weir models list` shows where the contest stands (from the
        # performance role's checkpoint)
        listed: list[str] = []

        def list_shows_contest() -> bool:
            run = subprocess.run(
                [WEIR, "models", "list", "--model", model],
                env={**settings_env(settings), "COLUMNS": "400"},  # one line per note
                capture_output=True,
                text=True,
                timeout=120,
                check=False,
            )
            listed[:] = [run.stdout]
            return run.returncode == 0 and "outcomes 100.0% vs active 0.0%" in run.stdout

        wait_until(list_shows_contest, timeout_s=DEADLINE_S, what="the contest in models list")
        assert "canary 50%" in listed[0] and "look 1: " in listed[0], listed[0]
        stream_until(
            lambda: (
                any(v.verdict == "promote" for v in verdicts())
                and any(e.data.action == "activate" and e.data.version == "2" for e in routes())
            ),
            "version 2 promoted from canary",
        )
        steps = [(v.verdict, v.weight, v.next_weight) for v in verdicts()]
        assert steps[0] == ("step", 0.2, 0.5) and steps[-1] == ("promote", 0.5, None)
        assert set(steps) == {("step", 0.2, 0.5), ("promote", 0.5, None)}
        promote = verdicts()[-1]
        assert promote.canary_correct == promote.canary_outcomes >= 100
        assert promote.active_correct == 0 and promote.low > 0
        by_action = {e.data.action: e for e in routes() if e.data.alert_id}
        step_at, promoted_at = by_action["canary"].time, by_action["activate"].time
        assert by_action["activate"].data.metrics["canary_accuracy"] == 1.0
        assert "clear-canary" in by_action, "a promotion clears the canary slot"
        # the scoring role checked the retrainer's signature and took the route
        out.until(
            lambda: any(
                d.accepted and d.action == "activate" and d.version == "2" for d in decisions()
            ),
            deadline_s=DEADLINE_S,
            what="the scoring role's decision on the promotion",
        )
        wait_until(
            lambda: (status().get("routes") or [{}])[0].get("active") == "2",
            timeout_s=DEADLINE_S,
            what="version 2 active in the scoring role",
        )

        # 2. a worse canary: the old version back on canary is rolled back
        publish_route(settings, canary("1", 0.2))
        second = produced[0]
        stream_until(
            lambda: any(v.verdict == "rollback" and v.version == "1" for v in verdicts()),
            "version 1 rolled back from canary",
        )
        rollback = [v for v in verdicts() if v.version == "1"]
        assert [v.verdict for v in rollback] == ["rollback"]
        assert rollback[0].high < -0.02 and rollback[0].active_version == "2"
        wait_until(
            lambda: (status().get("routes") or [{}])[0].get("canary", "?") is None,
            timeout_s=DEADLINE_S,
            what="the canary cleared in the scoring role",
        )
        assert status()["routes"][0]["active"] == "2"
        third = produced[0]
        produce(third, 200)  # after the rollback: version 2 alone
        total = produced[0] = third + 200
        out.until(
            lambda: len({e.data.record_id for e in predictions()}) >= total,
            deadline_s=DEADLINE_S,
            what=f"all {total} records scored",
        )

        # every record scored once, by the version that owned it when it was scored
        scored = predictions()
        per_record = Counter(e.data.record_id for e in scored)
        assert len(per_record) == total and max(per_record.values()) == 1
        for e in scored:
            p, bucket, i = e.data, _bucket(e.data.record_id), int(e.data.record_id.split("-")[-1])
            assert p.output == expected_output(p.version, a_of[p.record_id]), "made by its version"
            if p.version == "2" and bucket >= 0.2 and i < second:  # past the first canary share
                assert e.time >= (step_at if bucket < 0.5 else promoted_at), p.record_id
            if i >= second:  # version 2 active; version 1 only on its canary share, then not at all
                assert p.version == "2" or (bucket < 0.2 and i < third), p.record_id
        page = status()
        assert page["contest"] is None and page["accuracy"]
    finally:
        out.close()
        worker.stop()
        for server in servers:
            server.stop()

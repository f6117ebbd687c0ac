"""The live view without a broker: agent outcomes in, metrics and status JSON out."""

from __future__ import annotations

import asyncio
import base64
from datetime import timedelta
from types import SimpleNamespace
from typing import Any

from aiohttp.test_utils import TestClient, TestServer
from prometheus_client.parser import text_string_to_metric_families

from agents.detectors import ErrorRateMonitor
from agents.routing import RoutingTable
from agents.scoring import BatchOutcome
from schemas import (
    DeadLetter,
    DriftAlert,
    ModelVersionEvent,
    PipelineRunEvent,
    Prediction,
    RouteDecision,
    new_event,
)
from schemas.settings import LiveSettings, ScoringSettings, Settings
from streams.live import LiveStatus, LiveView, merge_status
from streams.metrics import merge_expositions
from streams.status_page import build_app
from tests.samples import FIXED_TIME

SETTINGS = Settings(
    scoring=ScoringSettings(model="churn", worker_id="w-7"),
    live=LiveSettings(throughput_window_s=5.0, recent=3),
)
V1, V2 = "http://127.0.0.1:8081", "http://127.0.0.1:8082"


class FakeClock:
    def __init__(self) -> None:
        self.t = 100.0

    def __call__(self) -> float:
        return self.t


def view() -> tuple[LiveView, FakeClock]:
    clock = FakeClock()
    return LiveView(SETTINGS, clock=clock, now=lambda: FIXED_TIME), clock


def prediction(i: int, version: str, latency_ms: float) -> Prediction:
    url = V1 if version == "1" else V2
    return Prediction(
        record_id=f"r{i}", model="churn", version=version, url=url, output=1, latency_ms=latency_ms
    )


def dead_letter(error_class: str) -> DeadLetter:
    return DeadLetter(
        raw_base64=base64.b64encode(b"{").decode(), error_class=error_class, reason="x"
    )


def outcome(v1: int, v2: int, dead: list[str]) -> BatchOutcome:
    """One batch as the scorer returns it: one model call per version, then dead letters."""
    made = BatchOutcome(dead_letters=[new_event(dead_letter(c), source="t") for c in dead])
    made.add_call([new_event(prediction(i, "1", 12.0), source="t") for i in range(v1)])
    made.add_call([new_event(prediction(i, "2", 30.0), source="t") for i in range(v1, v1 + v2)])
    return made


def sample(live: LiveView, name: str, **labels: str) -> float | None:
    return live.metrics.registry.get_sample_value(name, labels)


def test_a_batch_outcome_updates_counters_latency_and_status():
    live, _ = view()
    live.record_batch(
        outcome(6, 3, ["SchemaViolation", "NotJSON", "NotJSON"]), consumed=12, seconds=0.2
    )
    assert sample(live, "weir_records_consumed_total", model="churn") == 12
    assert sample(live, "weir_predictions_total", model="churn", version="1") == 6
    assert sample(live, "weir_predictions_total", model="churn", version="2") == 3
    assert sample(live, "weir_dead_letters_total", error_class="NotJSON") == 2
    assert sample(live, "weir_dead_letters_total", error_class="SchemaViolation") == 1
    # one observation per model call (a route's share of the batch), in seconds
    assert sample(live, "weir_model_call_seconds_count", model="churn", version="1") == 1
    assert sample(live, "weir_model_call_seconds_sum", model="churn", version="1") == 0.012
    assert sample(live, "weir_model_call_seconds_sum", model="churn", version="2") == 0.03
    assert sample(live, "weir_scoring_batch_seconds_count", model="churn") == 1
    status = live.snapshot(ready=True)
    assert status.records_consumed == 12
    assert status.predictions == {"1": 6, "2": 3}
    assert status.dead_letters == 3
    assert (status.worker, status.model, status.ready) == ("w-7", "churn", True)


def test_throughput_is_records_per_second_over_the_window():
    live, clock = view()
    live.record_batch(outcome(10, 0, []), consumed=10, seconds=0.01)
    clock.t += 2.0
    live.record_batch(outcome(15, 0, []), consumed=15, seconds=0.01)
    assert live.snapshot(ready=True).throughput_rps == 25 / 5.0
    clock.t += 4.0  # the first batch is now older than the 5 s window
    assert live.snapshot(ready=True).throughput_rps == 15 / 5.0
    clock.t += 10.0
    assert live.snapshot(ready=True).throughput_rps == 0.0


def activate(version: str, action: str = "activate", weight: float | None = None):
    url = V1 if version == "1" else V2
    return ModelVersionEvent(
        action=action, model="churn", version=version, url=url, protocol="v1", weight=weight
    )


def test_route_gauges_follow_the_routing_table():
    live, _ = view()
    table = RoutingTable()
    table.apply(activate("1"), ready=True)
    live.record_routes(table)
    assert sample(live, "weir_model_active_version", model="churn", version="1") == 1
    table.apply(activate("2", "canary", weight=0.25), ready=True)
    table.apply(activate("2", "shadow"), ready=True)
    live.record_routes(table)
    assert sample(live, "weir_model_canary_weight", model="churn", version="2") == 0.25
    assert sample(live, "weir_model_shadow_version", model="churn", version="2") == 1
    table.apply(activate("2"), ready=True)  # promoting the canary ends it
    live.record_routes(table)
    assert sample(live, "weir_model_active_version", model="churn", version="1") == 0
    assert sample(live, "weir_model_active_version", model="churn", version="2") == 1
    assert sample(live, "weir_model_canary_weight", model="churn", version="2") == 0
    [route] = live.snapshot(ready=True).routes
    assert (route.active, route.canary, route.shadow) == ("2", None, "2")


def test_emitted_events_fill_alerts_swaps_and_runs_newest_first():
    live, _ = view()
    drift = DriftAlert(alert_id="a-1", model="churn", stream="x0", detector="ADWIN", records_seen=9)
    live.record_event(new_event(drift, source="t", now=lambda: FIXED_TIME))
    decision = RouteDecision(
        model="churn",
        action="activate",
        version="3",
        url=V1,
        accepted=False,
        reason="endpoint not ready; keeping version 2",
        active_version="2",
        worker="w-7",
    )
    live.record_event(new_event(decision, source="t"))
    for status in ("requested", "started", "succeeded"):
        run = PipelineRunEvent(
            run_id="run-1", model="churn", status=status, pipeline="p", produced_version="3"
        )
        live.record_event(new_event(run, source="t"))
    live.record_event(new_event(dead_letter("WrongTopic"), source="t"))
    live.record_event(new_event(prediction(1, "1", 1.0), source="t"))  # not shown: no-op

    assert sample(live, "weir_alerts_total", type="io.weir.alert.drift.v1") == 1
    assert sample(live, "weir_retraining_runs_total", status="succeeded") == 1
    assert sample(live, "weir_dead_letters_total", error_class="WrongTopic") == 1
    status = live.snapshot(ready=True)
    [alert] = status.alerts
    assert (alert.kind, alert.at, alert.summary) == ("drift", FIXED_TIME, "drift on x0 (ADWIN)")
    # recent=3 keeps the last three, newest first: the rejected decision fell off
    assert [(h.kind, h.summary, h.ok) for h in status.swaps] == [
        ("run", "run-1 succeeded", True),
        ("run", "run-1 started", None),
        ("run", "run-1 requested", None),
    ]
    assert status.retraining_runs == {"requested": 1, "started": 1, "succeeded": 1}


def test_the_same_route_decision_in_a_row_is_one_entry_with_a_count():
    live, _ = view()
    refresh = RouteDecision(
        model="churn",
        action="activate",
        version="online",
        url=V1,
        accepted=True,
        reason="activate online",
        active_version="online",
        worker="w-7",
    )
    times = [FIXED_TIME + timedelta(seconds=s) for s in range(5)]
    for at in times:  # an online learner's snapshots, each a newer one of the same version
        live.record_event(new_event(refresh, source="t", now=lambda at=at: at))
    run = PipelineRunEvent(run_id="run-1", model="churn", status="started", pipeline="p")
    live.record_event(new_event(run, source="t", now=lambda: times[-1]))
    live.record_event(new_event(refresh, source="t", now=lambda: times[-1]))
    swaps = live.snapshot(ready=True).swaps
    assert [(h.kind, h.times) for h in swaps] == [("route", 1), ("run", 1), ("route", 5)]
    assert (swaps[2].since, swaps[2].at) == (times[0], times[-1])


def test_rolling_accuracy_comes_from_the_error_rate_monitor():
    live, _ = view()
    errors = ErrorRateMonitor(window=4)
    for correct in (True, False, True, True, True):
        errors.update("1", correct)
    live.record_accuracy("1", errors.accuracy("1"), errors.outcomes_seen("1"))
    live.record_accuracy("2", errors.accuracy("2"), errors.outcomes_seen("2"))  # none yet
    assert sample(live, "weir_rolling_accuracy", model="churn", version="1") == 0.75
    [acc] = live.snapshot(ready=True).accuracy
    assert (acc.version, acc.accuracy, acc.outcomes) == ("1", 0.75, 5)


def test_the_learner_counts_what_it_learnt_and_what_it_shed():
    live, _ = view()
    live.record_learner(learnt=480, light=0, shed=20)
    live.record_learner(learnt=500, light=120, shed=0)  # 120 of the 500 by light members only
    assert sample(live, "weir_learner_outcomes_total", model="churn", fate="learnt") == 860
    assert sample(live, "weir_learner_outcomes_total", model="churn", fate="light_only") == 120
    assert sample(live, "weir_learner_outcomes_total", model="churn", fate="shed") == 20


def role_view(role: str = "scoring") -> Any:
    """What the live view reads of a role process: its LiveView, readiness and name."""
    return SimpleNamespace(
        live=LiveView(SETTINGS, role=role), ready=asyncio.Event(), role=role, problems={}
    )


def test_the_http_endpoints_serve_page_status_metrics_and_health():
    state = role_view()
    state.live.record_batch(outcome(4, 0, []), consumed=4, seconds=0.01)

    async def scenario() -> None:
        async with TestClient(TestServer(build_app(state))) as client:
            assert (await client.get("/healthz")).status == 200
            assert (await client.get("/readyz")).status == 503
            state.ready.set()
            assert (await client.get("/readyz")).status == 200
            state.problems["broker"] = "broker at 127.0.0.1:9092 does not answer"
            answer = await client.get("/readyz")
            assert answer.status == 503 and "does not answer" in await answer.text()
            down = LiveStatus.model_validate_json(await (await client.get("/status.json")).text())
            assert not down.ready and down.problems == [state.problems["broker"]]
            del state.problems["broker"]
            page = await client.get("/")
            assert page.content_type == "text/html"
            assert "status.json" in await page.text()
            status = LiveStatus.model_validate_json(await (await client.get("/status.json")).text())
            assert status.ready and status.predictions == {"1": 4}
            metrics = await client.get("/metrics")
            assert metrics.content_type == "text/plain"
            families = {f.name: f for f in text_string_to_metric_families(await metrics.text())}
            [predicted] = [
                s for s in families["weir_predictions"].samples if s.name.endswith("_total")
            ]
            assert (predicted.labels, predicted.value) == ({"model": "churn", "version": "1"}, 4)

    asyncio.run(scenario())


def test_each_worker_has_its_own_registry():
    a, b = role_view(), role_view()
    a.live.record_batch(outcome(2, 0, []), consumed=2, seconds=0.01)
    assert sample(a.live, "weir_records_consumed_total", model="churn") == 2
    assert sample(b.live, "weir_records_consumed_total", model="churn") is None


def test_views_of_several_roles_merge_into_one():
    scoring, perf, retrainer = (
        role_view("scoring"),
        role_view("performance"),
        role_view("retrainer"),
    )
    scoring.live.record_batch(outcome(4, 1, []), consumed=5, seconds=0.01)
    scoring.live.record_lag("weir.records", {0: 3, 1: 4})
    perf.live.record_accuracy("1", 0.9, 100)
    parts = {
        "scoring": scoring.live.snapshot(ready=True),
        "performance": perf.live.snapshot(ready=True),
        "retrainer": retrainer.live.snapshot(ready=False),
    }
    merged = merge_status(parts, recent=5)
    assert merged.roles == ["scoring", "performance", "retrainer"]
    assert not merged.ready  # one role is not ready yet
    assert merged.predictions == {"1": 4, "2": 1} and merged.records_consumed == 5
    assert merged.consumer_lag == 7  # the scoring role's lag, not a sum over roles
    assert [(a.version, a.accuracy) for a in merged.accuracy] == [("1", 0.9)]


def test_metrics_of_several_roles_merge_with_a_role_label():
    scoring, perf = role_view("scoring"), role_view("performance")
    scoring.live.record_batch(outcome(4, 0, []), consumed=4, seconds=0.01)
    perf.live.record_accuracy("1", 0.5, 10)
    text = merge_expositions(
        {
            "scoring": scoring.live.metrics.exposition(),
            "performance": perf.live.metrics.exposition(),
        }
    ).decode()
    families = {f.name: f for f in text_string_to_metric_families(text)}
    [consumed] = [s for s in families["weir_records_consumed"].samples if s.value]
    assert consumed.labels == {"role": "scoring", "model": "churn"} and consumed.value == 4
    [accuracy] = families["weir_rolling_accuracy"].samples
    assert accuracy.labels == {"role": "performance", "model": "churn", "version": "1"}

"""Routing state folds control events: activate, canary, shadow, rollback, rejections."""

from __future__ import annotations

from agents.routing import RoutingTable
from schemas import ModelVersionEvent


def ev(action: str, version: str, port: int = 8081, **kw) -> ModelVersionEvent:
    return ModelVersionEvent(
        action=action, model="churn", version=version, url=f"http://127.0.0.1:{port}", **kw
    )


def test_activate_then_route():
    table = RoutingTable()
    assert table.route("churn", "r1") is None
    d = table.apply(ev("activate", "1"), ready=True)
    assert d.accepted and d.active_version == "1"
    route = table.route("churn", "r1")
    assert route is not None and (route.version, route.url) == ("1", "http://127.0.0.1:8081")


def test_not_ready_endpoint_is_rejected_and_current_route_kept():
    table = RoutingTable()
    table.apply(ev("activate", "1"), ready=True)
    d = table.apply(ev("activate", "2", port=9999), ready=False)
    assert not d.accepted
    assert "not ready" in d.reason
    assert d.active_version == "1"
    assert table.route("churn", "r1").version == "1"


def test_rollback_returns_to_an_earlier_version_and_trims_history():
    table = RoutingTable()
    table.apply(ev("activate", "1"), ready=True)
    table.apply(ev("activate", "2", port=8082), ready=True)
    table.apply(ev("activate", "3", port=8083), ready=True)
    assert table.previous("churn").version == "2"
    d = table.apply(ev("rollback", "1"), ready=True)
    assert d.accepted and d.active_version == "1"
    assert table.route("churn", "x").version == "1"
    assert table.previous("churn") is None


def test_rollback_to_a_server_that_is_down_is_refused():
    table = RoutingTable()
    table.apply(ev("activate", "1"), ready=True)
    table.apply(ev("activate", "2", port=8082), ready=True)
    d = table.apply(ev("rollback", "1"), ready=False)
    assert not d.accepted and d.active_version == "2"


def test_compaction_keeps_what_decides_the_route():
    # activate/rollback share the model key; canary and shadow have their own
    assert ev("activate", "1").partition_key == ev("rollback", "1").partition_key == "churn"
    assert ev("canary", "2", weight=0.5).partition_key == "churn:canary"
    # a worker that only sees the compacted tail (last rollback) ends on the same route
    full, tail = RoutingTable(), RoutingTable()
    for e in [ev("activate", "1"), ev("activate", "2", port=8082), ev("rollback", "1")]:
        full.apply(e, ready=True)
    tail.apply(ev("rollback", "1"), ready=True)
    assert full.route("churn", "r") == tail.route("churn", "r")


def test_canary_takes_about_its_weight_stably_per_record():
    table = RoutingTable()
    table.apply(ev("activate", "1"), ready=True)
    table.apply(ev("canary", "2", port=8082, weight=0.2), ready=True)
    picks = [table.route("churn", f"r{i}").version for i in range(5000)]
    share = picks.count("2") / len(picks)
    assert 0.17 < share < 0.23
    assert [table.route("churn", f"r{i}").version for i in range(50)] == picks[:50]
    # promoting the canary clears it
    table.apply(ev("activate", "2", port=8082), ready=True)
    assert table.get("churn").canary is None
    assert {table.route("churn", f"r{i}").version for i in range(200)} == {"2"}


def test_replaying_the_same_events_gives_the_same_state():
    events = [ev("activate", "1"), ev("activate", "2", port=8082), ev("rollback", "1")]
    a, b = RoutingTable(), RoutingTable()
    for e in events:
        a.apply(e, ready=True)
        b.apply(e, ready=True)
    assert a.models == b.models

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
    # promoting the canary: a canary of the active version serves nothing ...
    promote = ev("activate", "2", port=8082)
    table.apply(promote, ready=True)
    assert {table.route("churn", f"r{i}").version for i in range(200)} == {"2"}
    # ... and the clear published with the activate empties the slot
    for change in promote.implied()[1:]:
        assert table.apply(change, ready=False).accepted  # a clear probes no endpoint
    assert table.get("churn").canary is None


def test_a_batch_is_split_as_its_records_are_routed_one_by_one():
    table = RoutingTable()
    ids = [f"r{i}" for i in range(500)]
    assert table.split("churn", ids) == [None] * 500  # no route yet: every record waits
    table.apply(ev("activate", "1"), ready=True)
    assert table.split("churn", ids) == [table.route("churn", r) for r in ids]
    table.apply(ev("canary", "2", port=8082, weight=0.3), ready=True)
    split = table.split("churn", ids)
    assert split == [table.route("churn", r) for r in ids]
    assert {r.version for r in split if r is not None} == {"1", "2"}


def test_a_canary_or_shadow_can_be_cleared():
    table = RoutingTable()
    table.apply(ev("activate", "1"), ready=True)
    table.apply(ev("canary", "2", port=8082, weight=1.0), ready=True)
    table.apply(ev("shadow", "3", port=8083), ready=True)
    assert table.route("churn", "r").version == "2"
    clear = ModelVersionEvent(action="clear-canary", model="churn", version="2")
    assert clear.partition_key == "churn:canary" and clear.url is None
    assert table.apply(clear, ready=False).reason == "canary 2 cleared"
    assert table.route("churn", "r").version == "1"
    shadow = ModelVersionEvent(action="clear-shadow", model="churn", version="3")
    assert shadow.partition_key == "churn:shadow"
    table.apply(shadow, ready=False)
    assert table.get("churn").shadow is None
    assert table.apply(clear, ready=False).reason == "no canary to clear"


def test_compacted_replay_in_any_partition_order_gives_the_live_routes():
    """Live: canary 2, promoted (activate 2 + clear), then activate 3. After compaction only
    the last event of each key is left, and the keys' partitions replay in any order."""
    live = RoutingTable()
    history = [
        ev("activate", "1"),
        ev("canary", "2", port=8082, weight=0.3),
        *ev("activate", "2", port=8082).implied(),
        *ev("activate", "3", port=8083).implied(),
    ]
    for change in history:
        live.apply(change, ready=True)
    latest = {change.partition_key: change for change in history}
    for order in (list(latest.values()), list(reversed(latest.values()))):
        replayed = RoutingTable()
        for change in order:
            replayed.apply(change, ready=True)
        assert replayed.get("churn").canary is live.get("churn").canary is None
        assert replayed.route("churn", "r") == live.route("churn", "r")
        assert {replayed.route("churn", f"r{i}").version for i in range(300)} == {"3"}


def test_replaying_the_same_events_gives_the_same_state():
    events = [ev("activate", "1"), ev("activate", "2", port=8082), ev("rollback", "1")]
    a, b = RoutingTable(), RoutingTable()
    for e in events:
        a.apply(e, ready=True)
        b.apply(e, ready=True)
    assert a.models == b.models


def test_a_refresh_moves_its_versions_route_wherever_a_slot_holds_it():
    table = RoutingTable()
    table.apply(ev("activate", "online", port=8081), ready=True)
    table.apply(ev("shadow", "online", port=8082), ready=True)
    d = table.apply(ev("refresh", "online", port=8090), ready=True)
    assert d.accepted and d.active_version == "online"
    routes = table.get("churn")
    assert routes.active is not None and routes.shadow is not None
    assert routes.active.url == routes.shadow.url == "http://127.0.0.1:8090"
    assert routes.history == ()  # the same version at a new place: nothing to roll back to
    again = table.apply(ev("refresh", "online", port=8090), ready=True)
    assert again.accepted and "already at" in again.reason and table.changes == 3


def test_a_refresh_never_changes_which_version_serves():
    """A learner's refresh that reaches the topic just after a promotion changes nothing:
    version 2 keeps serving (an activate there would have put the learner back)."""
    table = RoutingTable()
    table.apply(ev("activate", "online", port=8081), ready=True)
    table.apply(ev("activate", "2", port=8082), ready=True)
    before = table.models.copy()
    d = table.apply(ev("refresh", "online", port=8090), ready=True)
    assert d.accepted and d.active_version == "2" and "no route of online" in d.reason
    assert table.models == before and not table.holds("churn", "online")
    assert table.idle_refresh(ev("refresh", "online", port=8090))
    assert not table.idle_refresh(ev("refresh", "2", port=8090)), "version 2 is held"
    assert not table.idle_refresh(ev("activate", "online", port=8090)), "only a refresh idles"
    # a refresh of a held version whose server is not ready is refused; the route stays
    refused = table.apply(ev("refresh", "2", port=9999), ready=False)
    assert not refused.accepted and table.get("churn").active.url == "http://127.0.0.1:8082"


def test_compacted_replay_with_refreshes_gives_the_live_routes():
    """Refreshes have a key per version; the topic's one partition replays the events
    compaction keeps in their order, and every prefix of the history folds alike."""
    history = [
        ev("activate", "1"),
        ev("activate", "online", port=8085),  # a take-over
        ev("refresh", "online", port=8086),
        ev("refresh", "online", port=8087),
        ev("activate", "2", port=8082),  # promoted
        ev("refresh", "online", port=8088),  # lost the race: changes nothing
        ev("shadow", "online", port=8089),  # back to challenging
        ev("refresh", "online", port=8090),
    ]
    assert history[2].partition_key == "churn:refresh:online"
    for n in range(1, len(history) + 1):
        live, replayed = RoutingTable(), RoutingTable()
        for change in history[:n]:
            live.apply(change, ready=True)
        latest = {change.partition_key: i for i, change in enumerate(history[:n])}
        for i in sorted(latest.values()):
            replayed.apply(history[i], ready=True)
        assert replayed.get("churn").active == live.get("churn").active
        assert replayed.get("churn").shadow == live.get("churn").shadow
    assert live.get("churn").active.version == "2"
    assert live.get("churn").shadow.url == "http://127.0.0.1:8090"

"""The canary contest: the interval, the looks, the verdicts and how they become routes."""

from __future__ import annotations

import asyncio
import random
from dataclasses import replace

import pytest
from pydantic import ValidationError

from agents.canary import CanaryJudge, difference_interval, routes_for, wilson
from agents.retraining import Retrainer
from agents.routing import RoutingTable
from schemas import CanaryVerdict, ModelVersionEvent, new_event
from schemas.settings import CanarySettings, Settings

POLICY = CanarySettings(
    min_outcomes=100, max_outcomes=2000, steps=(0.25, 0.5), confidence=0.95, error_budget=0.02
)


def routes(canary: str = "2", weight: float = 0.1, active: str = "1") -> RoutingTable:
    table = RoutingTable()
    for event in (
        ModelVersionEvent(
            action="activate", model="m", version=active, url="http://a", features=["x"]
        ),
        ModelVersionEvent(
            action="canary",
            model="m",
            version=canary,
            url="http://c",
            weight=weight,
            features=["x"],
        ),
    ):
        table.apply(event, ready=True)
    return table


def test_intervals_match_the_published_examples():
    # Newcombe (1998), Statistics in Medicine 17, table II, example (a): 56/70 - 48/80,
    # method 10 (hybrid score): 0.0524 to 0.3339; Wilson for 81/263: 0.2553 to 0.3662.
    low, high = difference_interval(56, 70, 48, 80, alpha=0.05)
    assert (round(low, 4), round(high, 4)) == (0.0524, 0.3339)
    low, high = wilson(81, 263, 1.959964)
    assert (round(low, 4), round(high, 4)) == (0.2553, 0.3662)
    assert difference_interval(0, 10, 10, 10, alpha=0.05)[0] >= -1.0


def feed(judge: CanaryJudge, table: RoutingTable, rates: dict[str, float], n: int, seed: int = 0):
    """Outcomes as the routes split records (weight share to the canary); the verdicts seen."""
    rng = random.Random(seed)
    verdicts = []
    for _ in range(n):
        judge.follow(table.get("m"))
        r = table.get("m")
        version = r.canary.version if rng.random() < r.canary_weight else r.active.version
        found = judge.update(version, rng.random() < rates[version])
        if found is not None:
            verdicts.append(found)
            applied = routes_for(found, table.get("m"))
            assert not isinstance(applied, str)
            for event in applied:
                table.apply(event, ready=True)
    return verdicts


def test_a_better_canary_steps_up_through_the_weights_and_is_promoted():
    judge, table = CanaryJudge("m", POLICY), routes()
    verdicts = feed(judge, table, {"1": 0.55, "2": 0.9}, 6000)
    assert [(v.verdict, v.weight, v.next_weight) for v in verdicts] == [
        ("step", 0.1, 0.25),
        ("step", 0.25, 0.5),
        ("promote", 0.5, None),
    ]
    assert table.get("m").active.version == "2" and table.get("m").serving_canary is None
    first = verdicts[0]
    assert first.canary_outcomes == 100 and first.look == 1 and first.low > -0.02
    assert first.evidence["canary_accuracy"] > first.evidence["active_accuracy"]


def test_a_worse_canary_is_rolled_back_at_the_first_look_that_shows_it():
    judge, table = CanaryJudge("m", POLICY), routes()
    verdicts = feed(judge, table, {"1": 0.9, "2": 0.5}, 4000)
    assert [v.verdict for v in verdicts] == ["rollback"]
    assert verdicts[0].high < -0.02
    assert table.get("m").serving_canary is None and table.get("m").active.version == "1"


def test_an_equal_canary_that_is_never_shown_as_good_is_rolled_back_at_the_limit():
    policy = POLICY.model_copy(update={"error_budget": 0.0})
    judge, table = CanaryJudge("m", policy), routes()
    verdicts = feed(judge, table, {"1": 0.8, "2": 0.8}, 40_000, seed=3)
    assert [v.verdict for v in verdicts][-1] == "rollback"
    assert verdicts[-1].canary_outcomes == 2000 and "not shown as good" in verdicts[-1].reason
    assert table.get("m").serving_canary is None


def test_the_contest_covers_one_pair_of_versions_and_restarts_with_a_new_canary():
    judge, table = CanaryJudge("m", POLICY), routes()
    judge.follow(table.get("m"))
    assert judge.update("7", True) is None  # neither version of the contest
    for _ in range(99):
        assert judge.update("2", True) is None
    assert judge.contest.looks == 0 and judge.contest.canary_outcomes == 99
    assert judge.update("2", True) is None and judge.contest.standing == "gathering"
    judge.follow(routes(canary="3").get("m"))
    assert judge.contest.canary == "3" and judge.contest.canary_outcomes == 0
    judge.follow(RoutingTable().get("m"))
    assert judge.contest is None and judge.update("3", True) is None


def test_the_contest_survives_a_checkpoint():
    judge, table = CanaryJudge("m", POLICY), routes()
    feed(judge, table, {"1": 0.8, "2": 0.8}, 500)
    again = CanaryJudge("m", POLICY)
    again.restore(judge.checkpoint())
    assert again.contest == judge.contest
    again.follow(table.get("m"))
    assert again.contest == judge.contest  # same routes: the same contest goes on


def verdict(kind: str = "promote", version: str = "2", weight: float = 0.1) -> CanaryVerdict:
    return CanaryVerdict(
        alert_id="verdict-1",
        model="m",
        version=version,
        active_version="1",
        verdict=kind,
        weight=weight,
        next_weight=0.5 if kind == "step" else None,
        canary_outcomes=200,
        canary_correct=180,
        active_outcomes=1800,
        active_correct=990,
        low=0.3,
        high=0.4,
        confidence=0.95,
        error_budget=0.02,
        look=1,
        reason="not worse",
    )


def test_a_verdict_applies_only_to_the_routes_it_was_judged_on():
    table = routes()
    assert "not the canary" in routes_for(verdict(version="3"), table.get("m"))
    assert "weight is 0.1 now, not 0.25" in routes_for(verdict(weight=0.25), table.get("m"))
    assert "not the active" in routes_for(verdict(), routes(active="0").get("m"))
    promote = routes_for(verdict(), table.get("m"))
    assert [(e.action, e.version) for e in promote] == [("activate", "2"), ("clear-canary", "2")]
    assert promote[0].url == "http://c" and promote[0].features == ["x"]
    assert promote[0].metrics["canary_accuracy"] == 0.9 and promote[0].alert_id == "verdict-1"
    step = routes_for(verdict("step"), table.get("m"))
    assert [(e.action, e.weight) for e in step] == [("canary", 0.5)]
    assert [e.action for e in routes_for(verdict("rollback"), table.get("m"))] == ["clear-canary"]


def test_the_retrainer_publishes_a_verdict_and_refuses_a_stale_one():
    emitted: list = []

    async def emit(kind, event):
        emitted.append((kind, event))

    retrainer = Retrainer(Settings(), routes(), None, emit)  # type: ignore[arg-type]
    done = asyncio.run(retrainer.on_verdict(new_event(verdict(), source="t")))
    assert done.startswith("canary 2 promote")
    assert [(k, e.data.action) for k, e in emitted] == [
        ("models", "activate"),
        ("models", "clear-canary"),
    ]
    assert emitted[0][1].lineage.alertid == "verdict-1"
    emitted.clear()
    why = asyncio.run(retrainer.on_verdict(new_event(verdict(version="9"), source="t")))
    assert "not the canary" in why and emitted == []


def test_policy_checks_its_steps_and_looks():
    with pytest.raises(ValidationError, match="rising weights"):
        CanarySettings(steps=(0.5, 0.25))
    with pytest.raises(ValidationError, match="at least min_outcomes"):
        CanarySettings(min_outcomes=500, max_outcomes=100)
    assert CanarySettings(min_outcomes=200, max_outcomes=5000).looks == 25
    with pytest.raises(ValidationError, match="next_weight"):
        verdict("step").model_copy(update={"next_weight": None}).model_validate(
            {**verdict("step").model_dump(), "next_weight": None}
        )


def test_a_verdict_is_sent_once_until_the_routes_follow_or_it_is_due_again():
    judge, table = CanaryJudge("m", POLICY), routes()
    judge.follow(table.get("m"))
    sent = []
    for i in range(800):  # the routes never follow: a retrainer that is not there
        found = judge.update("2" if i % 2 else "1", i % 2 == 1)
        if found is not None:
            sent.append((found.verdict, found.look))
    assert sent == [("step", 1), ("step", 4)]  # again after RESEND_LOOKS looks
    judge.follow(routes(weight=0.5).get("m"))  # the step carried out: the next one is new
    assert judge.contest.sent is None and judge.contest.weight == 0.5


def test_models_list_notes_the_contest_of_the_canary_it_shows():
    from streams.cli.models import _route_notes

    table = routes(weight=0.25)
    judge = CanaryJudge("m", POLICY)
    feed(judge, table, {"1": 0.5, "2": 1.0}, 150)
    contest = judge.contest
    assert contest is not None
    notes = _route_notes(table.get("m"), contest)
    assert notes["2"][0] == "canary 25% http://c (v2)"
    assert f"{contest.canary_outcomes} outcomes 100.0% vs active" in notes["2"][1]
    assert f"look {contest.looks}: {contest.standing}" in notes["2"][1]
    other = replace(contest, canary="9")  # a contest of another canary is not shown
    assert len(_route_notes(table.get("m"), other)["2"]) == 1

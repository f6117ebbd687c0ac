"""The embedded online learner: learning from outcomes, taking over, and embedded routes
folded, loaded and scored in-process (registry faked, river real)."""

from __future__ import annotations

import asyncio
import pickle
import random
from datetime import timedelta

import httpx
import pytest
from pydantic import ValidationError

from agents.control import Controller, RegistryCheck
from agents.learner import OnlineLearner, resume_from
from agents.routing import RoutingTable
from agents.scoring import Scorer
from connectors.embedded import ModelClient
from connectors.kserve_client import ModelServerError
from connectors.minio_store import ObjectNotFound
from connectors.registry import (
    ArtifactRefused,
    LoadedModel,
    ModelRegistry,
    lean_pickle,
    snapshot_number,
)
from connectors.signing import load_signer, sign
from schemas import ModelVersionEvent, Outcome, ServiceError, new_event
from schemas.model_card import ModelCard
from schemas.payloads import embedded_target, embedded_url
from schemas.settings import KServeSettings, LearnerSettings, ScoringSettings, Settings
from tests.samples import FIXED_TIME, TEST_CONTROL
from tests.unit.test_scoring import raw_record
from tests.unit.test_signing import control_msg

SETTINGS = Settings(
    scoring=ScoringSettings(model="churn"),
    kserve=KServeSettings(max_retries=0),
    control=TEST_CONTROL,
)
LEARNER = LearnerSettings(enabled=True, kind="hoeffding", min_outcomes=100, window=400)


def concept(x: dict[str, float], flipped: bool, where: float = 0.0) -> int:
    """a > 0.5; flipped where b >= ``where`` (everywhere by default, and without b)."""
    return int((x["a"] > 0.5) != (flipped and x.get("b", 1.0) >= where))


def outcomes(
    n: int, *, flipped: bool, served: str = "1", seed: int = 0, start: int = 0, where: float = 0.0
):
    """Served outcomes of a model that learnt the unflipped concept."""
    rnd = random.Random(seed)
    for i in range(start, start + n):
        x = {"a": rnd.random(), "b": rnd.random()}
        label = concept(x, flipped, where)
        output = concept(x, False)
        yield Outcome(
            record_id=f"r{i}",
            model="churn",
            version=served,
            output=output,
            label=label,
            correct=output == label,
            features=x,
        )


def test_it_learns_prequentially_from_served_outcomes_only():
    learner = OnlineLearner(LEARNER, "churn")
    right = [learner.learn(o) for o in outcomes(2000, flipped=False)]
    assert learner.learnt == 2000 and learner.features == ("a", "b")
    assert sum(right[-500:]) / 500 > 0.9  # a simple concept, learnt
    assert learner.recent_accuracy is not None and learner.recent_accuracy > 0.8
    plain = next(outcomes(1, flipped=False, start=9000))
    assert learner.learn(plain.model_copy(update={"shadow": True})) is None
    assert learner.learn(plain.model_copy(update={"model": "other"})) is None
    assert learner.learn(plain.model_copy(update={"features": None})) is None
    assert learner.featureless == 1, "counted: the feedback role may not be putting them on"
    assert learner.learn(plain.model_copy(update={"features": {"a": 0.1}})) is None
    assert learner.skipped == 1 and learner.learnt == 2000


def test_it_takes_over_from_a_stale_version_and_only_then():
    learner = OnlineLearner(LEARNER, "churn")
    takes = []
    for o in outcomes(1500, flipped=False):  # the served version is right: no take-over
        learner.learn(o)
        takes.append(learner.take_over())
    assert not any(takes)
    found, after = None, 0
    for o in outcomes(3000, flipped=True, seed=1, start=1500):
        learner.learn(o)
        after += 1
        found = learner.take_over()
        if found:
            break
    assert found is not None, "the learner never took over from a version that is always wrong"
    assert found.served_version == "1" and found.pairs >= LEARNER.min_outcomes
    assert found.only_learner_right > found.only_served_right
    assert found.p <= 1 - LEARNER.confidence
    assert found.learner_accuracy > found.served_accuracy
    assert after < 1000, f"took {after} outcomes after the drift"
    assert "beats version 1" in found.reason and found.evidence["mcnemar_p"] == found.p
    assert found.last_record == f"r{1500 + after - 1}" and found.last_record in found.reason
    taking = embedded_url("churn", "online.1")
    learner.took_over(taking)
    assert learner.activating
    assert not learner.refused(embedded_url("churn", "online.0")), "another route's refusal"
    learner.follow("1")  # the routes do not show the take-over yet
    assert learner.activating
    # late outcomes of the version it took over from are not paired: no second take-over
    for o in outcomes(600, flipped=True, seed=3, start=4000):
        learner.learn(o)
        assert learner.take_over() is None
    assert learner.pairs == 0
    # its own snapshot serves now: nothing is compared, nothing taken over
    learner.follow("online")
    assert not learner.activating
    for o in outcomes(500, flipped=True, served="online", seed=2, start=5000):
        learner.learn(o)
        assert learner.take_over() is None
    assert learner.pairs == 0 and learner.paired_with is None
    # a newly promoted version is paired against afresh
    learner.follow("7")
    learner.learn(next(outcomes(1, flipped=True, served="7", start=6000)))
    assert learner.paired_with == "7" and learner.pairs == 1
    # late outcomes of a version that no longer serves are not paired
    learner.learn(next(outcomes(1, flipped=True, served="1", start=6001)))
    assert learner.paired_with == "7" and learner.pairs == 1
    # a version promoted before its take-over showed ends the wait for it
    learner.took_over(embedded_url("churn", "online.2"))
    assert learner.activating
    learner.follow("8")
    assert not learner.activating
    assert not learner.refused(embedded_url("churn", "online.2")), "it no longer waits"
    # a version rolled back to may be beaten again
    learner.follow("1")
    learner.learn(next(outcomes(1, flipped=True, served="1", start=6002)))
    assert learner.paired_with == "1"


def take_over_after_drift(learner: OnlineLearner, *, alarm: str | None) -> tuple[int, object]:
    """Outcomes after the drift until ``learner`` takes over (and the take-over), with a
    performance alert on ``alarm`` heard just after the drift, or none."""
    for o in outcomes(1500, flipped=False):
        learner.learn(o)
        assert learner.take_over() is None
    # a drift on half the records: the served version is still right on the rest
    drifted = outcomes(3000, flipped=True, seed=1, start=1500, where=0.5)
    for after, o in enumerate(drifted, start=1):
        learner.learn(o)
        if after == 20 and alarm is not None:  # the performance role needs a few outcomes
            learner.alarmed(alarm)
        found = learner.take_over()
        if found:
            return after, found
    raise AssertionError("no take-over")


def routes_with(active: ModelVersionEvent, *shadow: ModelVersionEvent) -> RoutingTable:
    table = RoutingTable()
    for change in (active, *shadow):
        table.apply(change, ready=True)
    return table


def test_a_version_promoted_meanwhile_is_never_replaced_by_a_stale_route():
    """The learner's fold lags while it learns: by the time its snapshot is stored, the
    retrainer may have promoted version 2. A take-over won against version 1 does not
    stand, and a refresh of its own route (it served until then) is not sent; a refresh
    that is sent and loses the race anyway changes nothing (not an activate)."""
    learner = OnlineLearner(LEARNER, "churn")
    _, take = take_over_after_drift(learner, alarm=None)
    assert take.served_version == "1"
    v1 = ModelVersionEvent(action="activate", model="churn", version="1", url="http://h:1")
    v2 = ModelVersionEvent(action="activate", model="churn", version="2", url="http://h:2")
    mine = ModelVersionEvent(
        action="activate",
        model="churn",
        version=LEARNER.name,
        url=embedded_url("churn", f"{LEARNER.name}.3"),
        protocol="embedded",
    )
    assert learner.take_over_stands(routes_with(v1).get("churn"), take)
    (activate, clear) = learner.route_events(routes_with(v1).get("churn"), "online.4", take)
    assert (activate.action, activate.version, clear.action) == (
        "activate",
        "online",
        "clear-canary",
    )

    after_promotion = routes_with(mine, v2).get("churn")  # it served; then 2 was promoted
    assert not learner.take_over_stands(after_promotion, take)
    (event,) = learner.route_events(after_promotion, "online.4", None)
    assert (event.action, event.version) == ("shadow", "online")  # back to challenging
    serving = routes_with(v2, mine).get("churn")  # it serves: a refresh
    (event,) = learner.route_events(serving, "online.4", None)
    assert (event.action, event.url) == ("refresh", embedded_url("churn", "online.4"))
    # a refresh sent from routes a promotion has overtaken since leaves version 2 serving
    raced = routes_with(mine, v2)
    assert raced.apply(event, ready=True).accepted
    assert raced.get("churn").active.version == "2"


def test_an_alert_on_the_served_version_lets_the_pairs_since_it_decide():
    settings = LEARNER.model_copy(update={"window": 1000, "min_outcomes": 200})
    plain_after, plain = take_over_after_drift(OnlineLearner(settings, "churn"), alarm=None)
    after, found = take_over_after_drift(OnlineLearner(settings, "churn"), alarm="1")
    assert after < plain_after, (after, plain_after)
    assert found.after_alert and not plain.after_alert
    assert settings.alert_min_outcomes <= found.pairs <= after - 20  # pairs since the alert
    # evidence enough against a version known to be degraded, not against a healthy one
    assert (1 - settings.confidence) / 3 < found.p <= 1 - settings.alert_confidence
    assert "since a performance alert on it" in found.reason
    assert found.evidence["after_alert"] == 1.0 and plain.evidence["after_alert"] == 0.0
    # an alert on another version, or on the learner's own, changes nothing
    for other in ("2", settings.name):
        again_after, again = take_over_after_drift(OnlineLearner(settings, "churn"), alarm=other)
        assert (again_after, again.after_alert) == (plain_after, False)


def test_an_alert_lasts_while_its_version_is_the_one_paired_with():
    learner = OnlineLearner(LEARNER, "churn")
    learner.follow("1")
    for o in outcomes(300, flipped=False):
        learner.learn(o)
    learner.alarmed("1")
    # version 2 is promoted before the alert's pairs decide: it is judged afresh, no alert
    learner.follow("2")
    for o in outcomes(400, flipped=True, served="2", seed=4, start=300):
        learner.learn(o)
        found = learner.take_over()
        assert found is None or not found.after_alert


def test_a_refused_take_over_sends_the_learner_back_to_challenging():
    learner = OnlineLearner(LEARNER, "churn")
    learner.follow("1")
    for o in outcomes(1500, flipped=False):
        learner.learn(o)
    found = None
    for o in outcomes(1000, flipped=True, seed=1, start=1500):
        learner.learn(o)
        found = found or learner.take_over()
    assert found is not None
    url = embedded_url("churn", "online.1")
    learner.took_over(url)
    assert learner.activating and learner.pairs == 0
    # the control fold refused it (say, a signing-key mismatch): version 1 still serves
    assert learner.refused(url)
    assert not learner.activating
    learner.follow("1")
    again = None
    for o in outcomes(1000, flipped=True, seed=4, start=3000):
        learner.learn(o)
        again = again or learner.take_over()
    assert learner.paired_with == "1"
    assert again is not None and again.served_version == "1", "it challenges version 1 again"


def test_a_learner_far_behind_skips_to_the_newest_outcomes():
    learner = OnlineLearner(LEARNER.model_copy(update={"max_lag_s": 5.0}), "churn")
    batch = list(outcomes(300, flipped=False))
    ages = [20.0 - i * 0.1 for i in range(300)]  # 20 s behind at first, 0.1 s at the end
    learnt = [learner.learn(o, age_s=age) for o, age in zip(batch, ages, strict=True)]
    stale = sum(age > 5.0 for age in ages)
    assert learner.shed == stale and learner.learnt == 300 - stale
    assert all(r is None for r in learnt[:stale]) and None not in learnt[stale:]
    assert learner.next_card(FIXED_TIME).metrics["shed"] == stale
    every = OnlineLearner(LEARNER.model_copy(update={"max_lag_s": 0.0}), "churn")
    assert every.learn(batch[0], age_s=3600.0) is not None and every.shed == 0, "0: learn all"


def test_a_learner_behind_learns_with_its_light_members_until_it_is_near_the_head():
    s = LEARNER.model_copy(update={"kind": "arf+linear", "light_lag_s": 1.0, "max_lag_s": 5.0})
    learner = OnlineLearner(s, "churn")
    batch = list(outcomes(400, flipped=False))
    # on time, then 2 s behind, catching up to 0.7 s (still light: not yet within 0.5 s),
    # then to 0.1 s (whole again), and 6 s behind (shed)
    ages = [0.0] * 100 + [2.0] * 100 + [0.7] * 50 + [0.1] * 50 + [6.0] * 100
    forest, taught = learner.estimator.members["arf"], []
    forest_learn = forest.learn_one
    forest.learn_one = lambda x, y, **kw: taught.append(y) or forest_learn(x, y, **kw)
    lightened = []
    for o, age in zip(batch, ages, strict=True):
        learner.learn(o, age_s=age)
        lightened.append(learner.estimator.lightened)
    assert lightened[:100] == [False] * 100 and lightened[100:250] == [True] * 150
    assert lightened[250:300] == [False] * 50
    assert learner.light_only == 150 and learner.shed == 100 and learner.learnt == 300
    assert len(taught) == 150, "the forest learnt only the outcomes learnt whole"
    card = learner.next_card(FIXED_TIME)
    assert (card.metrics["light_only"], card.metrics["shed"]) == (150, 100)
    plain = OnlineLearner(LEARNER.model_copy(update={"light_lag_s": 1.0}), "churn")  # hoeffding
    assert plain.learn(batch[0], age_s=2.0) is not None and plain.light_only == 0, "whole"
    never = OnlineLearner(s.model_copy(update={"light_lag_s": 0.0}), "churn")
    never.learn(batch[0], age_s=4.0)
    assert never.light_only == 0 and not never.estimator.lightened


def test_a_warm_learner_starts_from_the_archived_rows_and_pairs_none_of_them():
    rnd = random.Random(5)
    rows = [{"a": rnd.random(), "b": rnd.random()} for _ in range(1500)]
    warm = OnlineLearner(LEARNER, "churn")
    assert warm.warm((x, concept(x, False)) for x in rows) == 1500
    assert warm.learnt == 1500 and warm.features == ("a", "b") and warm.pairs == 0
    assert warm.due  # a first snapshot is stored at once
    cold = OnlineLearner(LEARNER, "churn")
    first = list(outcomes(100, flipped=False, seed=6))
    warm_right = sum(bool(warm.learn(o)) for o in first)
    cold_right = sum(bool(cold.learn(o)) for o in first)
    assert warm_right >= 95 and warm_right > cold_right
    assert warm.warm([({"b": 0.1}, 1)]) == 0 and warm.skipped == 1  # a row without its features


def served_by_snapshot(o: Outcome, number: int, *, right: bool) -> Outcome:
    """``o`` as answered by the learner's snapshot ``online.<number>``."""
    output = o.label if right else 1 - int(o.label)
    return o.model_copy(
        update={
            "version": "online",
            "url": embedded_url("churn", f"online.{number}"),
            "output": output,
            "correct": right,
        }
    )


def test_a_snapshot_the_live_learner_outruns_is_refreshed_early():
    s = LEARNER.model_copy(update={"publish_every": 5000, "refresh_min": 100})
    learner = OnlineLearner(s, "churn")
    for o in outcomes(1000, flipped=False):
        learner.learn(o)
    learner.published(1)
    # its snapshot serves and is as good as the live learner: no refresh before publish_every
    for o in outcomes(400, flipped=False, seed=7, start=1000):
        learner.learn(
            served_by_snapshot(
                o, 1, right=bool(learner.estimator.predict_one(o.features) == o.label)
            )
        )
    assert not learner.due
    # a stale snapshot (wrong) while the live learner is right: refreshed early
    learner.published(2)
    stale = list(outcomes(150, flipped=False, seed=8, start=2000))
    for o in stale[:99]:
        learner.learn(served_by_snapshot(o, 2, right=False))
    assert not learner.due, "fewer than refresh_min answers of the snapshot"
    for o in stale[99:]:
        learner.learn(served_by_snapshot(o, 2, right=False))
    assert learner.due and learner.since_publish == 150
    # answers of an older snapshot (still loading elsewhere) say nothing of the newest
    learner.published(3)
    for o in outcomes(300, flipped=False, seed=9, start=3000):
        learner.learn(served_by_snapshot(o, 2, right=False))
    assert not learner.due


def test_take_over_can_be_turned_off():
    learner = OnlineLearner(LEARNER.model_copy(update={"take_over": False}), "churn")
    for o in outcomes(3000, flipped=True):
        learner.learn(o)
        assert learner.take_over() is None


def test_snapshot_cards_count_up_and_name_the_learner():
    learner = OnlineLearner(LEARNER.model_copy(update={"publish_every": 100}), "churn")
    with pytest.raises(ValueError, match="learnt nothing"):
        learner.next_card(FIXED_TIME)
    for o in outcomes(100, flipped=False):
        learner.learn(o)
    assert learner.due
    card = learner.next_card(FIXED_TIME)
    assert card.version == "online.1" and card.framework == "river"
    assert card.features == ["a", "b"] and card.metrics["learnt"] == 100
    assert card.learner is not None and card.learner["family"] == "river-hoeffding"
    learner.published(1)
    assert not learner.due and learner.next_card(FIXED_TIME).version == "online.2"
    assert snapshot_number("online", "online.12") == 12
    assert snapshot_number("online", "3") is None and snapshot_number("online", "other.2") is None


def test_embedded_urls_fit_only_the_embedded_protocol():
    url = embedded_url("churn", "online.3")
    assert embedded_target(url) == ("churn", "online.3")
    ok = ModelVersionEvent(
        action="activate", model="churn", version="online", url=url, protocol="embedded"
    )
    assert ok.targets[0][2] == "embedded"
    for bad in (
        {"url": url, "protocol": "v2"},
        {"url": "http://127.0.0.1:8081", "protocol": "embedded"},
        {"url": embedded_url("other", "online.3"), "protocol": "embedded"},
        {"url": "embedded://churn/", "protocol": "embedded"},
    ):
        with pytest.raises(ValidationError):
            ModelVersionEvent(action="activate", model="churn", version="online", **bad)


def test_a_newer_snapshot_of_the_active_version_keeps_the_history():
    table = RoutingTable()
    v1 = ModelVersionEvent(
        action="activate", model="churn", version="1", url="http://127.0.0.1:8081", features=["a"]
    )
    table.apply(v1, ready=True)
    for n in (1, 2, 3):
        snap = ModelVersionEvent(
            action="activate",
            model="churn",
            version="online",
            url=embedded_url("churn", f"online.{n}"),
            protocol="embedded",
            features=["a"],
        )
        assert table.apply(snap, ready=True).accepted
    routes = table.get("churn")
    assert routes.active is not None and routes.active.registry_version == "online.3"
    assert [r.version for r in routes.history] == ["1"]  # one version that kept learning


class FakeRegistry:
    """The registry as the scoring process sees it: cards and river snapshots by version."""

    def __init__(self, estimator: object) -> None:
        self.estimator = estimator
        self.state = "up"
        self.loads: list[str] = []
        self.kept: set[str] | None = None  # the snapshots still stored (None: every one)

    load_or_newer = ModelRegistry.load_or_newer
    newer_snapshot = ModelRegistry.newer_snapshot
    snapshot_numbers = ModelRegistry.snapshot_numbers

    def version_names(self, model: str) -> list[str]:
        return sorted(self.kept or ())

    def card(self, version: str) -> ModelCard:
        return ModelCard(
            name="churn",
            version=version,
            framework="river",
            features=["a", "b"],
            created_at=FIXED_TIME,
        )

    def checked_card(self, model: str, version: str) -> ModelCard:
        if self.state == "away":
            raise ServiceError("connection refused", service="minio", address="127.0.0.1:1")
        if not version.startswith("online.") or (
            self.kept is not None and version not in self.kept
        ):
            raise ObjectNotFound("NoSuchKey", service="minio", address="127.0.0.1:1")
        return self.card(version)

    def load(self, model: str, version: str) -> LoadedModel:
        card = self.checked_card(model, version)
        if self.state == "refused":
            raise ArtifactRefused("its card is unsigned", service="minio", address="x")
        self.loads.append(version)
        return LoadedModel(card=card, estimator=self.estimator)

    def uri(self, model: str, version: str) -> str:
        return f"s3://models/{model}/{version}/"


def trained() -> object:
    learner = OnlineLearner(LEARNER, "churn")
    for o in outcomes(3000, flipped=True):
        learner.learn(o)
    return learner.estimator


def embedded_event(n: int, minutes: int = 0, **kw):
    change = ModelVersionEvent(
        action="activate",
        model="churn",
        version="online",
        url=embedded_url("churn", f"online.{n}"),
        protocol="embedded",
        features=["a", "b"],
        **kw,
    )
    at = FIXED_TIME + timedelta(minutes=minutes)
    return sign(load_signer(SETTINGS), new_event(change, source="learner", now=lambda: at))


def embedded_fold(registry: FakeRegistry) -> tuple[ModelClient, RoutingTable, Controller]:
    """A scoring worker's client and control fold over ``registry``; no HTTP call is made."""
    nowhere = httpx.MockTransport(lambda r: httpx.Response(599))
    client = ModelClient(SETTINGS.kserve, lambda: registry, transport=nowhere)  # type: ignore[arg-type,return-value]
    table = RoutingTable()
    control = Controller(
        SETTINGS,
        table,
        client,
        now=lambda: FIXED_TIME,
        registry=RegistryCheck(registry),  # type: ignore[arg-type]
    )
    return client, table, control


def test_an_embedded_route_is_folded_loaded_and_scored_in_process():
    registry = FakeRegistry(trained())
    client, table, control = embedded_fold(registry)

    async def go():
        decision = await control.handle(control_msg(embedded_event(1), 0), replaying=False)
        scorer = Scorer(SETTINGS, table, client, now=lambda: FIXED_TIME)
        batch = [raw_record(i, {"a": i / 10 + 0.05, "b": 0.5}) for i in range(10)]
        return decision, await scorer.score(batch)

    decision, scored = asyncio.run(go())
    assert decision is not None and decision.data.accepted, decision
    assert len(scored.predictions) == 10 and not scored.dead_letters
    for i, p in enumerate(scored.predictions):
        assert p.data.version == "online" and p.data.url == embedded_url("churn", "online.1")
        assert p.data.output == concept({"a": i / 10 + 0.05}, True)  # the flipped concept it learnt
        assert p.data.scores is not None
    assert registry.loads == ["online.1"]  # loaded once, for the readiness check, then kept


def test_embedded_routes_refuse_unknown_snapshots_and_wait_for_minio():
    registry = FakeRegistry(trained())
    client = ModelClient(SETTINGS.kserve, lambda: registry)  # type: ignore[arg-type,return-value]
    url = embedded_url("churn", "online.2")

    async def predict(u: str = url):
        return await client.embedded.predict(u, "churn", [[0.9, 0.1]])

    registry.state = "away"
    with pytest.raises(ModelServerError) as away:
        asyncio.run(predict())
    assert away.value.unavailable  # the records wait and retry, never skipped
    registry.state = "refused"
    client.embedded._minio._paused_until = 0.0
    with pytest.raises(ModelServerError) as refused:
        asyncio.run(predict())
    assert not refused.value.retriable and refused.value.status == 403
    registry.state = "up"
    with pytest.raises(ModelServerError) as missing:
        asyncio.run(predict(embedded_url("churn", "3")))
    assert missing.value.status == 404 and not missing.value.retriable
    with pytest.raises(ModelServerError, match=r"not a route of churn"):
        asyncio.run(predict(embedded_url("other", "online.2")))
    assert asyncio.run(predict()).labels == [0]


def test_a_replayed_take_over_of_a_pruned_snapshot_serves_the_newest_one():
    """The learner's take-over (an activate) names the snapshot it took over with; its
    later snapshots only refresh the route, and the learner keeps the newest few. A
    worker replaying the control topic then meets an activate of a pruned snapshot: the
    newest snapshot of the same learner stands in, and the refreshes after it apply."""
    registry = FakeRegistry(trained())
    registry.kept = {"online.7", "online.8"}
    _, table, control = embedded_fold(registry)
    refresh = embedded_event(8, minutes=1).model_copy(
        update={"data": embedded_event(8).data.model_copy(update={"action": "refresh"})}
    )
    for offset, event in enumerate((embedded_event(4), sign(load_signer(SETTINGS), refresh))):
        asyncio.run(control.handle(control_msg(event, offset), replaying=True))
    assert control.held == {}
    active = table.get("churn").active
    assert active is not None and active.registry_version == "online.8"
    assert registry.loads == ["online.8"], "the pruned online.4's stand-in, loaded once"
    registry.kept = {"online.9"}
    missing = asyncio.run(
        control.handle(control_msg(embedded_event(12, minutes=2), 2), replaying=False)
    )
    assert missing is not None and not missing.data.accepted, "no newer one: refused"
    assert "not in the registry" in missing.data.reason


def test_continuous_labels_stop_the_learner_instead_of_growing_it():
    learner = OnlineLearner(LEARNER, "churn")
    base = next(outcomes(1, flipped=False))
    for i in range(300):
        learner.learn(base.model_copy(update={"label": i / 7, "output": 0.0, "correct": False}))
    assert learner.stopped is not None and "continuous" in learner.stopped
    assert learner.learnt == 256 and len(learner.classes) == 256


def test_the_fold_refusing_a_take_over_route_names_the_url_the_learner_waits_on():
    """The learner role hears its own fold's decisions (``attach_control(on_decision=)``):
    a refusal must carry the url it took over with, or it would wait for ever."""
    registry = FakeRegistry(trained())
    registry.state = "refused"  # a snapshot whose signature does not check out
    _, _, control = embedded_fold(registry)
    learner = OnlineLearner(LEARNER, "churn")
    learner.took_over(embedded_url("churn", "online.4"))
    decision = asyncio.run(control.handle(control_msg(embedded_event(4), 0), replaying=False))
    assert decision is not None and not decision.data.accepted, decision
    assert learner.refused(decision.data.url) and not learner.activating


def test_a_snapshot_holds_the_leading_member_and_a_light_one_is_due_sooner():
    s = LEARNER.model_copy(update={"kind": "arf+linear", "publish_every": 500})
    learner = OnlineLearner(s, "churn")
    for o in outcomes(300, flipped=False):
        learner.learn(o)
    assert not learner.light and learner.min_gap_s == s.publish_min_s
    held: list[object] = []
    blob = learner.snapshot_blob(lambda m: held.append(m) or pickle.dumps(m))
    leader = learner.estimator.leader
    assert held == [learner.estimator.members[leader]], "the leader only, not the pair"
    snapshot = pickle.loads(blob)
    for o in outcomes(50, flipped=False, seed=3, start=300):
        assert snapshot.predict_one(o.features) == learner.estimator.predict_one(o.features)
    card = learner.next_card(FIXED_TIME)
    assert card.learner is not None and card.learner["holds"] == leader
    learner.published(1)
    # the size of that member's snapshot sets the cadence of its next ones
    light = len(blob) <= s.light_bytes
    assert learner.light is light
    every = s.light_publish_every if light else s.publish_every
    for o in outcomes(every - 1, flipped=False, seed=4, start=400):
        learner.learn(o)
    assert not learner.due
    learner.learn(next(outcomes(1, flipped=False, seed=5, start=900)))
    assert learner.due


def test_the_light_cadence_follows_the_member_a_snapshot_would_hold():
    learner = OnlineLearner(LEARNER.model_copy(update={"kind": "arf+linear"}), "churn")
    for o in outcomes(300, flipped=False):
        learner.learn(o)
    pair = learner.estimator
    sizes = {"arf": 5_000_000, "linear": 1_700}
    for name, size in sizes.items():
        pair.leader = name
        learner.snapshot_blob(lambda m, size=size: b"x" * size)
    pair.leader = "linear"
    assert learner.light and learner.min_gap_s == LEARNER.light_publish_min_s
    pair.leader = "arf"
    assert not learner.light and learner.min_gap_s == LEARNER.publish_min_s
    off = OnlineLearner(LEARNER.model_copy(update={"light_bytes": 0}), "churn")
    for o in outcomes(100, flipped=False):
        off.learn(o)
    off.snapshot_blob(lambda m: b"x")
    assert not off.light, "light_bytes=0: every snapshot at publish_every"


def test_the_saved_state_holds_every_member_under_a_name_of_its_own():
    learner = OnlineLearner(LEARNER.model_copy(update={"kind": "arf+linear"}), "churn")
    for o in outcomes(200, flipped=False):
        learner.learn(o)
    card = learner.state_card(FIXED_TIME)
    assert card.version == "online.state" and card.metrics["learnt"] == 200
    assert card.learner is not None and card.learner["state"] is True
    assert "holds" not in card.learner and card.learner["members"] == "arf,linear,steady"
    assert snapshot_number("online", card.version) is None, "not a snapshot"
    # saved every publish_every outcomes, whatever the snapshots' cadence
    assert not learner.state_due
    for o in outcomes(300, flipped=False, seed=2, start=200):
        learner.learn(o)
    assert learner.state_due and learner.since_state == 500
    learner.published(1)
    assert learner.state_due, "a snapshot is not the whole state"
    learner.state_saved()
    assert not learner.state_due


def test_a_model_of_one_piece_saves_no_state_apart_from_its_snapshots():
    learner = OnlineLearner(LEARNER, "churn")  # hoeffding: a snapshot is the whole model
    for o in outcomes(600, flipped=False):
        learner.learn(o)
    assert not learner.splits and not learner.state_due and learner.since_state == 600


def learnt_pair(n: int, kind: str = "arf+linear") -> OnlineLearner:
    learner = OnlineLearner(LEARNER.model_copy(update={"kind": kind}), "churn")
    for o in outcomes(n, flipped=False):
        learner.learn(o)
    return learner


def stored(learner: OnlineLearner, *, state: bool) -> LoadedModel:
    """What the registry would give back: the card, and the pickle of what it holds."""
    if state:
        card, blob = learner.state_card(FIXED_TIME), pickle.dumps(learner.estimator)
    else:
        card, blob = learner.next_card(FIXED_TIME), learner.snapshot_blob(pickle.dumps)
    return LoadedModel(card=card, estimator=pickle.loads(blob))


def test_a_restart_goes_on_from_the_state_or_else_a_snapshot_put_back_in_a_pair():
    s = LEARNER.model_copy(update={"kind": "arf+linear"})
    learner = learnt_pair(300)
    state = stored(learner, state=True)
    for o in outcomes(150, flipped=True, seed=2, start=300):
        learner.learn(o)
    newer = stored(learner, state=False)  # a snapshot after the last saved state

    # light snapshots go out five times as often as the state is saved: the state, which
    # holds every member, wins over a snapshot of the leader that learnt a little more
    resume, notes = resume_from(s, state, (7, newer))
    assert resume is not None and resume.what == "its saved state" and notes == []
    assert resume.card.metrics["learnt"] == 300
    assert set(resume.estimator.members) == {"arf", "linear", "steady"}
    # with no state, the snapshot's member goes back into a pair of the kind, leading
    resume, notes = resume_from(s, None, (7, newer))
    assert resume is not None and resume.what == "snapshot 7" and notes == []
    pair, leader = resume.estimator, learner.estimator.leader
    assert set(pair.members) == {"arf", "linear", "steady"} and pair.leader == leader
    for o in outcomes(50, flipped=True, seed=3, start=500):
        want = learner.estimator.members[leader].predict_one(o.features)
        assert pair.predict_one(o.features) == want
    pair.learn_one({"a": 0.2, "b": 0.4}, 1)  # and it learns on, every member
    assert resume_from(s, None, None) == (None, [])


def test_a_state_left_over_is_passed_over_for_a_newer_snapshot_of_the_whole_model():
    """A model of one piece saves no state (its snapshot is all of it); a state saved
    before that (an older weir saved one for every kind) must not win over what came
    after it."""
    one = learnt_pair(200, kind="hoeffding")
    left_over = stored(one, state=True)
    for o in outcomes(300, flipped=True, seed=2, start=200):
        one.learn(o)
    resume, notes = resume_from(LEARNER, left_over, (9, stored(one, state=False)))
    assert resume is not None and resume.what == "snapshot 9"
    assert resume.card.metrics["learnt"] == 500 and "the whole model, is newer" in notes[0]
    assert type(resume.estimator) is type(one.estimator)


def test_a_restart_after_a_change_of_kind_uses_nothing_of_the_old_kind():
    old = learnt_pair(200)
    forest = LEARNER.model_copy(update={"kind": "arf"})
    resume, notes = resume_from(forest, stored(old, state=True), (3, stored(old, state=False)))
    assert resume is None and len(notes) == 2
    assert "river-arf+linear, not river-arf (WEIR_LEARNER__KIND)" in notes[0]
    one = learnt_pair(200, kind="hoeffding")
    resume, _ = resume_from(LEARNER, None, (4, stored(one, state=False)))
    assert resume is not None and resume.what == "snapshot 4"
    assert type(resume.estimator) is type(one.estimator), "a model of one piece, as stored"


def test_a_snapshot_leaves_the_random_generators_state_out_and_predicts_the_same():
    """river keeps a Mersenne Twister in every leaf and every Gaussian estimator of a tree:
    a snapshot, which only predicts, stores fresh generators in their place."""
    import random as stdlib_random

    from river import forest

    arf = forest.ARFClassifier(seed=3, n_models=3)
    for o in outcomes(2000, flipped=False, where=0.4):
        arf.learn_one(o.features, o.label)
    whole, slim = pickle.dumps(arf), lean_pickle(arf)
    assert len(slim) * 5 < len(whole), (len(slim), len(whole))
    served = pickle.loads(slim)
    for o in outcomes(300, flipped=True, seed=9, where=0.4):
        assert served.predict_one(o.features) == arf.predict_one(o.features)
        assert served.predict_proba_one(o.features) == arf.predict_proba_one(o.features)
    generators = [m.rng for m in served.models]
    assert all(type(g) is stdlib_random.Random for g in generators)
    assert len({g.random() for g in generators}) == len(generators), "each one its own"
    served.learn_one({"a": 0.3, "b": 0.2}, 1)  # a model restored from it learns on

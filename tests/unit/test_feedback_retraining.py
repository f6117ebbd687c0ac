"""Joining predictions and labels, and turning alerts into runs and live versions."""

from __future__ import annotations

import asyncio
import pickle
import zlib
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import timedelta

import pytest

from agents.detectors import DriftSignal
from agents.feedback import FeedbackJoiner
from agents.retraining import Retrainer, RetrainPolicy
from agents.routing import RoutingTable
from schemas import (
    DriftAlert,
    Event,
    InputRecord,
    Label,
    ModelVersionEvent,
    OutlierAlert,
    PerformanceAlert,
    Prediction,
    new_event,
)
from schemas.payloads import embedded_url
from schemas.settings import Settings
from streams.roles.alerts import drift_alert
from tests.samples import FIXED_TIME, performance_alert


def pred(rid: str, output: int, version: str = "1") -> Prediction:
    return Prediction(
        record_id=rid,
        model="m",
        version=version,
        url="http://127.0.0.1:1",
        output=output,
        latency_ms=1.0,
    )


def test_label_after_prediction_joins_both_ways():
    j = FeedbackJoiner()
    assert not j.on_record(InputRecord(id="r1", features={"a": 1.0})).training_rows
    assert not j.on_prediction(pred("r1", 1)).outcomes
    out = j.on_label(Label(record_id="r1", label=1), FIXED_TIME)
    assert [(o.version, o.correct) for o in out.outcomes] == [("1", True)]
    assert out.training_rows[0].features == {"a": 1.0} and out.training_rows[0].label == 1
    assert out.training_rows[0].time == FIXED_TIME
    # the archived row keeps what served it: a run judges a learner by these answers
    assert (out.training_rows[0].served_version, out.training_rows[0].served) == ("1", 1)


def test_a_learning_joiner_puts_features_and_the_route_on_served_outcomes():
    j = FeedbackJoiner(with_features=True)
    j.on_record(InputRecord(id="r9", features={"a": 9.0}))
    j.on_prediction(pred("r9", 1))
    (outcome,) = j.on_label(Label(record_id="r9", label=1), FIXED_TIME).outcomes
    assert outcome.features == {"a": 9.0} and outcome.url == "http://127.0.0.1:1"
    plain = FeedbackJoiner()
    plain.on_record(InputRecord(id="r9", features={"a": 9.0}))
    plain.on_prediction(pred("r9", 1))
    (outcome,) = plain.on_label(Label(record_id="r9", label=1), FIXED_TIME).outcomes
    assert outcome.features is None and outcome.url is None


def test_label_before_prediction_is_joined_late():
    j = FeedbackJoiner()
    j.on_label(Label(record_id="r2", label=0), FIXED_TIME)
    rows = j.on_record(InputRecord(id="r2", features={"a": 2.0})).training_rows
    assert len(rows) == 1
    assert rows[0].served is None and rows[0].served_version is None  # not served yet
    outcome = j.on_prediction(pred("r2", 1, version="2")).outcomes
    assert [(o.version, o.correct) for o in outcome] == [("2", False)]
    # the outcome speaks for when the label was given, not for when the join happened
    assert outcome[0].labelled_at == rows[0].time == FIXED_TIME
    given = FIXED_TIME - timedelta(minutes=3)  # a label that carries its own timestamp
    j.on_record(InputRecord(id="r6", features={"a": 6.0}))
    j.on_prediction(pred("r6", 1))
    late = j.on_label(Label(record_id="r6", label=1, timestamp=given), FIXED_TIME)
    assert [o.labelled_at for o in late.outcomes] == [r.time for r in late.training_rows] == [given]


def test_a_shadow_prediction_is_judged_apart_and_never_replaces_the_served_one():
    shadow = pred("r3", 0, version="2").model_copy(update={"shadow": True})
    j = FeedbackJoiner()
    j.on_record(InputRecord(id="r3", features={"a": 3.0}))
    assert not j.on_prediction(pred("r3", 1)).outcomes
    assert not j.on_prediction(shadow).outcomes
    out = j.on_label(Label(record_id="r3", label=1), FIXED_TIME)
    assert sorted((o.version, o.shadow, o.correct, o.agrees) for o in out.outcomes) == [
        ("1", False, True, None),
        ("2", True, False, False),  # the shadow said 0 where the served version said 1
    ]
    # a shadow answer that comes after its record was joined and let go is still judged
    j.on_record(InputRecord(id="r4", features={"a": 4.0}))
    j.on_prediction(pred("r4", 1))
    j.on_label(Label(record_id="r4", label=1), FIXED_TIME)
    late = j.on_prediction(pred("r4", 1, version="2").model_copy(update={"shadow": True}))
    assert [(o.shadow, o.correct, o.agrees) for o in late.outcomes] == [(True, True, True)]
    # the shadow's answer first, even before the label: judged once the served one is in
    j.on_record(InputRecord(id="r5", features={"a": 5.0}))
    assert not j.on_prediction(
        pred("r5", 0, version="2").model_copy(update={"shadow": True})
    ).outcomes
    assert not j.on_label(Label(record_id="r5", label=0), FIXED_TIME).outcomes
    both = j.on_prediction(pred("r5", 0)).outcomes
    assert sorted((o.shadow, o.correct, o.agrees) for o in both) == [
        (False, True, None),
        (True, True, True),
    ]
    assert j.evicted_unlabelled == 0


def test_window_evicts_oldest_and_counts_what_was_never_labelled():
    j = FeedbackJoiner(window=3)
    for i in range(5):
        j.on_record(InputRecord(id=f"r{i}", features={"a": 0.0}))
    assert j.evicted_unlabelled == 2
    assert not j.on_label(Label(record_id="r0", label=1), FIXED_TIME).training_rows


def _half_joined(j: FeedbackJoiner) -> FeedbackJoiner:
    """Records r0..r5 in every state of a join: alone, served, labelled, shadowed, let go."""
    for i in range(6):
        j.on_record(InputRecord(id=f"r{i}", features={"a": float(i)}))
    j.on_prediction(pred("r1", 1))
    j.on_label(Label(record_id="r2", label=0), FIXED_TIME)
    j.on_prediction(pred("r3", 1))
    j.on_prediction(pred("r3", 0, version="2").model_copy(update={"shadow": True}))
    j.on_prediction(pred("r4", 1))
    j.on_label(Label(record_id="r4", label=1), FIXED_TIME)  # joined and let go
    return j


def _rest(j: FeedbackJoiner) -> list[tuple[str, bool]]:
    """What the records still pending and the late shadow of the one let go come out as."""
    out = []
    for i in range(6):
        result = j.on_label(Label(record_id=f"r{i}", label=1), FIXED_TIME)
        out += [(o.record_id, o.correct) for o in result.outcomes]
    late = j.on_prediction(pred("r4", 0, version="2").model_copy(update={"shadow": True}))
    return out + [(o.record_id, o.correct) for o in late.outcomes]


def test_the_join_window_survives_a_checkpoint_and_reads_one_written_before():
    from dataclasses import replace

    from connectors.checkpoints import CheckpointStore

    j = _half_joined(FeedbackJoiner(with_features=True))
    again = pickle.loads(zlib.decompress(CheckpointStore.encode(j)))
    assert list(again._pending) == list(j._pending)
    assert again._pending == j._pending and again._labels == j._labels
    expected = [("r1", True), ("r3", True), ("r3", False), ("r4", False)]
    assert _rest(_half_joined(FeedbackJoiner(with_features=True))) == expected
    assert _rest(again) == expected
    # a checkpoint of before 2026-12-01: the window's entries and its models pickled as such
    old = _half_joined(FeedbackJoiner(with_features=True))
    full = {"r1": pred("r1", 1), "r3": pred("r3", 1), "r4": pred("r4", 1)}
    shadow = {"r3": pred("r3", 0, version="2").model_copy(update={"shadow": True})}
    state = dict(old.__dict__)
    state["_pending"] = OrderedDict(
        (k, replace(e, prediction=full.get(k), shadow=shadow.get(k)))
        for k, e in old._pending.items()
    )
    state["_labels"] = OrderedDict(
        (k, (Label(record_id=k, label=v[0].label), full[k])) for k, v in old._labels.items()
    )
    before = FeedbackJoiner.__new__(FeedbackJoiner)
    before.__setstate__(state)  # as pickle restores one
    assert _rest(before) == expected
    # a checkpoint of 2026-12-01 to 03: the window's entries as rows, the labels as they were
    rows = _half_joined(FeedbackJoiner(with_features=True))
    state = dict(rows.__dict__)
    state["_pending"] = [
        (k, e.features, e.prediction, e.label, e.label_time, e.archived, e.judged, e.shadow)
        for k, e in rows._pending.items()
    ]
    before = FeedbackJoiner.__new__(FeedbackJoiner)
    before.__setstate__(state)
    assert before._pending == j._pending and _rest(before) == expected


def test_a_checkpointed_window_keeps_each_feature_set_and_pickles_no_named_tuple():
    from connectors.checkpoints import CheckpointStore

    j = FeedbackJoiner(with_features=True)
    j.on_record(InputRecord(id="a", features={"x": 1.0, "y": 2.0}))
    j.on_record(InputRecord(id="b", features={"y": 3.0, "x": 4.0}))  # the same names, in turn
    j.on_record(InputRecord(id="c", features={"z": 5.0}))
    j.on_prediction(pred("d", 1))  # a prediction whose record has not come
    j.on_label(Label(record_id="e", label=0), FIXED_TIME)
    names, rows = j.__getstate__()["_pending"]
    assert names == [("x", "y"), ("y", "x"), ("z",)]
    assert all(type(v) is tuple for row in rows for v in row[3:] if isinstance(v, tuple))
    again = pickle.loads(zlib.decompress(CheckpointStore.encode(j)))
    assert again._pending == j._pending
    assert list(again._pending["b"].features or {}) == ["y", "x"]
    assert again._pending["e"].label_time == FIXED_TIME


class Clock:
    def __init__(self) -> None:
        self.t = 0.0

    def __call__(self) -> float:
        return self.t


def test_policy_dedupes_runs_one_at_a_time_and_cools_down():
    clock = Clock()
    policy = RetrainPolicy(cooldown_s=60, retry_after_s=10, monotonic=clock)
    perf = "io.weir.alert.performance.v1"
    assert policy.consider(perf, "a1", "m").start
    assert "already handled" in policy.consider(perf, "a1", "m").reason
    during = policy.consider(perf, "a2", "m")
    assert not during.start and during.held and "under way" in during.reason
    assert policy.consider(perf, "a3", "other").start, "models are independent"
    policy.finished("m", promoted=True)
    clock.t = 30
    assert "cooling down for 30s" in policy.consider(perf, "a4", "m").reason
    clock.t = 61
    assert policy.consider(perf, "a5", "m").start
    assert not policy.consider("io.weir.alert.outlier.v1", "a6", "x").start
    # a run that promoted nothing only holds the next one back for retry_after_s
    policy.finished("m", promoted=False)
    clock.t = 65
    assert "cooling down for 6s" in policy.consider(perf, "a7", "m").reason
    clock.t = 72
    assert policy.consider(perf, "a8", "m").start


@dataclass
class FakeResult:
    status: str
    version: str | None
    metrics: dict[str, float] = field(default_factory=dict)
    reason: str = ""
    storage_uri: str | None = None


class FixedDeployer:
    """Serves every version at one URL and retires nothing."""

    def deploy(self, model: str, version: str) -> str:
        return "http://127.0.0.1:9999"

    def retire_unrouted(self, model: str, *, besides: str) -> list[str]:
        return []


def run_alert(
    result: FakeResult | list[FakeResult],
    alert,
    settings: Settings | None = None,
    *,
    while_gathering: Callable[[RoutingTable], None] | None = None,
    while_folding: Callable[[RoutingTable], None] | None = None,
    while_running: list[Callable[[RoutingTable], None]] = (),
    compared_with: str = "1",
    requests: list | None = None,
) -> tuple[list, list]:
    """Run the retrainer on ``alert`` with ``result`` as the pipeline's answer (a list: one
    per pipeline run, in order); the routes may change ``while_gathering`` the rows,
    ``while_folding`` the control events sent until the rows were in, or while the
    pipeline runs (``while_running[i]`` during the i-th run), and the first run compares
    with ``compared_with``. ``requests`` collects the pipeline requests."""
    results = list(result) if isinstance(result, list) else [result]
    emitted: list = []
    deployed: list = []

    class Deployer:
        def deploy(self, model: str, version: str) -> str:
            deployed.append((model, version))
            return "http://127.0.0.1:9999"

        def retire_unrouted(self, model: str, *, besides: str) -> list[str]:
            # asked once the version it deployed is out, and only then
            assert deployed[-1] == (model, besides)
            assert [k for k, e in emitted][-1] == "pipeline-runs"
            deployed.append(("retire", model, besides))
            return []

    async def emit(kind: str, event) -> None:
        emitted.append((kind, event))

    table = RoutingTable()
    table.apply(
        ModelVersionEvent(action="activate", model="m", version="1", url="http://127.0.0.1:1"),
        ready=True,
    )
    requests = [] if requests is None else requests

    def pipeline(settings, request):
        requests.append(request)
        if len(requests) <= len(while_running):
            while_running[len(requests) - 1](table)
        return results[min(len(requests), len(results)) - 1]

    async def gather(model: str, since, rows: int) -> None:
        if while_gathering is not None:
            while_gathering(table)

    async def routes_folded() -> bool:
        if while_folding is not None:
            while_folding(table)
        return True

    retrainer = Retrainer(
        settings or Settings(),
        table,
        Deployer(),
        emit,
        run_pipeline=pipeline,
        now=lambda: FIXED_TIME + timedelta(seconds=1),
        gather_rows=gather,
        routes_folded=routes_folded,
    )
    retrainer._features = lambda model, version: ["a"]  # registry lookup, not under test here

    async def go() -> None:
        event = alert if isinstance(alert, Event) else new_event(alert, source="t")
        await retrainer.on_alert(event)
        await asyncio.gather(*retrainer.tasks)

    asyncio.run(go())
    assert requests[0].current_version == compared_with
    retired = [d for d in deployed if d[0] == "retire"]
    served = [d for d in deployed if d[0] != "retire"]
    assert retired == [("retire", m, v) for m, v in served], "old servers retired after each"
    return emitted, served


@pytest.mark.parametrize("kind", ["performance", "drift"])
@pytest.mark.parametrize("behind_s", [None, 0, 180])
def test_a_run_trains_on_rows_labelled_after_what_raised_the_alert(kind: str, behind_s):
    """A performance role (or the monitor) running ``behind_s`` behind raises its alert that
    long after the outcome's label (or the record) that tipped it. The run asks for the rows
    labelled from that time on (the data's clock, as the archive counts and the pipeline
    chooses them); from the alert's own time, it waited for rows that were in already, or for
    rows that would never come once the stream had ended. An alert without the time (from an
    older role) counts from its own."""
    raised = FIXED_TIME + timedelta(minutes=10)
    evidence = None if behind_s is None else raised - timedelta(seconds=behind_s)
    if kind == "performance":
        alert, settings = performance_alert("al-e"), None
    else:
        alert = drift_alert("m", DriftSignal("x0", "ADWIN", 900, 0.1, 0.6))
        settings = Settings.model_validate({"retraining": {"drift_starts_runs": True}})
    alert = alert.model_copy(update={"evidence_until": evidence})
    requests: list = []
    run_alert(
        FakeResult("not-promoted", None),
        new_event(alert, source="t", now=lambda: raised),
        settings,
        requests=requests,
    )
    assert [r.since for r in requests] == [evidence or raised]


def test_a_drift_alert_names_the_time_of_the_record_that_raised_it():
    signal = DriftSignal("x0", "ADWIN", 900, 0.1, 0.6)
    alert = drift_alert("m", signal, version="2", at=FIXED_TIME)
    assert (alert.evidence_until, alert.version, alert.records_seen) == (FIXED_TIME, "2", 900)
    assert drift_alert("m", signal).evidence_until is None


def learner_takes_over(table: RoutingTable) -> None:
    url = embedded_url("m", "online.3")
    change = ModelVersionEvent(
        action="activate", model="m", version="online", url=url, protocol="embedded"
    )
    table.apply(change, ready=True)


@pytest.mark.parametrize("when", ["while_gathering", "while_folding"])
def test_a_run_compares_with_what_serves_once_its_rows_are_in(when: str):
    """The online learner took over while the run gathered rows, or just before they were
    in (its route event is folded when the run asks for the routes up to now): the candidate
    has to beat the learner's snapshot, which it would replace, not the version the alert
    was about."""
    emitted, deployed = run_alert(
        FakeResult("succeeded", "2"),
        performance_alert("al-l"),
        compared_with="online.3",
        **{when: learner_takes_over},
    )
    assert deployed == [("m", "2")]
    routes = [e.data for k, e in emitted if k == "models"]
    assert (routes[0].action, routes[0].version) == ("activate", "2")  # replaces the learner


def test_a_take_over_while_the_run_trains_makes_it_compare_again():
    """The learner took over while the pipeline compared its candidate with version 1:
    the candidate beat a version that no longer serves, so the run compares again, with
    the learner's snapshot, and only that answer can promote."""
    requests: list = []
    emitted, deployed = run_alert(
        [
            FakeResult("succeeded", "2", reason="beat 1"),
            FakeResult("succeeded", "3", reason="beat online.3"),
        ],
        performance_alert("al-r"),
        while_running=[learner_takes_over],
        requests=requests,
    )
    assert [r.current_version for r in requests] == ["1", "online.3"]
    assert deployed == [("m", "3")]
    done = emitted[-1][1].data
    assert (done.status, done.produced_version) == ("succeeded", "3")
    assert done.reason.startswith("compared again: online.3 began serving while candidate 2")
    assert done.reason.endswith("beat online.3")
    assert [e.data.status for k, e in emitted if k == "pipeline-runs"].count("started") == 1


def test_a_second_comparison_that_loses_promotes_nothing():
    emitted, deployed = run_alert(
        [FakeResult("succeeded", "2"), FakeResult("not-promoted", None, reason="p 0.4")],
        performance_alert("al-s"),
        while_running=[learner_takes_over],
    )
    assert deployed == [] and not [e for k, e in emitted if k == "models"]
    done = emitted[-1][1].data
    assert done.status == "not-promoted"
    assert "compared again" in done.reason and done.reason.endswith("p 0.4")


def learner_refreshes(table: RoutingTable) -> None:
    """The serving learner routes to its next snapshot: the same version, learning on."""
    table.apply(
        ModelVersionEvent(
            action="activate",
            model="m",
            version="online",
            url=embedded_url("m", "online.4"),
            protocol="embedded",
        ),
        ready=True,
    )


def test_a_learners_newer_snapshot_is_not_another_version():
    """While the learner serves, it routes to a new snapshot every few hundred outcomes;
    a run compared with an older one (the pipeline takes the newest it finds) stands."""
    requests: list = []
    emitted, deployed = run_alert(
        FakeResult("succeeded", "2", reason="beat online.4"),
        performance_alert("al-u"),
        while_folding=learner_takes_over,
        while_running=[learner_refreshes],
        compared_with="online.3",
        requests=requests,
    )
    assert len(requests) == 1 and deployed == [("m", "2")]
    assert emitted[-1][1].data.reason == "beat online.4"


def test_routes_that_keep_moving_under_the_run_promote_nothing():
    """Compared twice and another version began serving both times: no third run."""

    def operator_activates_5(table: RoutingTable) -> None:
        table.apply(
            ModelVersionEvent(action="activate", model="m", version="5", url="http://h:5"),
            ready=True,
        )

    requests: list = []
    emitted, deployed = run_alert(
        [FakeResult("succeeded", "2"), FakeResult("succeeded", "3")],
        performance_alert("al-t"),
        while_running=[learner_takes_over, operator_activates_5],
        requests=requests,
    )
    assert len(requests) == 2 and deployed == []
    done = emitted[-1][1].data
    assert done.status == "not-promoted"
    assert "5 began serving while candidate 3 was compared with online.3" in done.reason


def test_successful_run_deploys_and_activates_with_lineage():
    alert = PerformanceAlert(
        alert_id="al-1",
        model="m",
        version="1",
        metric="accuracy",
        value=0.8,
        window=500,
        detector="DDM",
    )
    emitted, deployed = run_alert(FakeResult("succeeded", "2", {"candidate_accuracy": 0.95}), alert)
    assert deployed == [("m", "2")]
    kinds = [(k, e.data.status if k == "pipeline-runs" else e.data.action) for k, e in emitted]
    assert kinds == [
        ("pipeline-runs", "requested"),
        ("pipeline-runs", "started"),
        ("models", "activate"),
        ("models", "clear-canary"),  # an activate means all traffic
        ("pipeline-runs", "succeeded"),
    ]
    activate = emitted[2][1]
    assert activate.data.version == "2" and activate.data.url == "http://127.0.0.1:9999"
    assert activate.data.alert_id == "al-1" and activate.data.run_id == emitted[0][1].data.run_id
    assert activate.lineage.alertid == "al-1" and activate.lineage.modelversion == "2"


def test_a_canary_rollout_puts_the_new_version_on_canary_not_live():
    alert = performance_alert("al-c")
    settings = Settings.model_validate(
        {"retraining": {"rollout": "canary"}, "canary": {"initial_weight": 0.2}}
    )
    emitted, _ = run_alert(FakeResult("succeeded", "2"), alert, settings)
    routes = [e.data for k, e in emitted if k == "models"]
    assert [(r.action, r.version, r.weight) for r in routes] == [("canary", "2", 0.2)]
    assert emitted[-1][1].data.status == "succeeded"


def test_not_promoted_run_reports_why_and_changes_nothing():
    alert = DriftAlert(
        alert_id="al-2",
        model="m",
        stream="x0",
        detector="ADWIN",
        records_seen=10,
    )
    drift_runs = Settings.model_validate({"retraining": {"drift_starts_runs": True}})
    emitted, deployed = run_alert(
        FakeResult("not-promoted", None, reason="0.90 < 0.91"), alert, drift_runs
    )
    assert deployed == []
    assert [e.data.status for _, e in emitted] == ["requested", "started", "not-promoted"]
    assert emitted[-1][1].data.reason == "0.90 < 0.91"


def test_feature_drift_informs_and_a_performance_alert_starts_the_run():
    emitted: list = []

    async def emit(kind, event):
        emitted.append((kind, event))

    retrainer = Retrainer(Settings(), RoutingTable(), None, emit)  # type: ignore[arg-type]
    drift = DriftAlert(alert_id="d-1", model="m", stream="x0", detector="ADWIN", records_seen=9)
    decision = asyncio.run(retrainer.on_alert(new_event(drift, source="t")))
    assert not decision.start and "feature drift informs" in decision.reason
    # not dropped silently: a run event answers the alert with the reason
    [(kind, answer)] = emitted
    assert (kind, answer.data.status, answer.data.alert_id) == (
        "pipeline-runs",
        "not-started",
        "d-1",
    )
    assert "feature drift informs" in answer.data.reason
    assert retrainer.policy.consider("io.weir.alert.performance.v1", "p-1", "m").start


def test_a_model_still_degraded_after_a_promotion_waits_only_the_retry_time():
    clock = Clock()
    policy = RetrainPolicy(cooldown_s=300, retry_after_s=30, monotonic=clock)
    perf = "io.weir.alert.performance.v1"
    assert policy.consider(perf, "a1", "m").start
    policy.finished("m", promoted=True)
    clock.t = 40
    assert "cooling down for 260s" in policy.consider(perf, "a2", "m").reason
    assert policy.consider(perf, "a3", "m", persistent=True).start  # past the 30 s retry
    saved = policy.checkpoint()
    again = RetrainPolicy(cooldown_s=300, retry_after_s=30, monotonic=clock)
    again.restore(saved)
    assert again.checkpoint() == saved


def test_waits_are_counted_in_outcomes_from_the_alert_that_started_the_run():
    clock = Clock()
    policy = RetrainPolicy(
        cooldown_s=300,
        retry_after_s=30,
        cooldown_outcomes=5000,
        retry_after_outcomes=1500,
        monotonic=clock,
    )
    perf = "io.weir.alert.performance.v1"
    assert policy.consider(perf, "a1", "m", outcomes=10_000).start
    clock.t = 1000.0  # any time: a count decides, at any rate of records
    policy.finished("m", promoted=True)
    early = policy.consider(perf, "a2", "m", outcomes=14_000)
    assert not early.start and early.answer and "1000 more labelled outcomes" in early.reason
    assert policy.consider(perf, "a3", "m", outcomes=11_600, persistent=True).start, "retry only"
    policy.finished("m", promoted=False)  # from 11,600: a retry 1,500 outcomes on
    assert "100 more labelled outcomes" in policy.consider(perf, "a4", "m", outcomes=13_000).reason
    assert policy.consider(perf, "a5", "m", outcomes=13_100).start
    policy.finished("m", promoted=False)
    # the performance role's count started again (its state was lost): the marks of the
    # old count are dropped, and the wait in seconds from the run's end decides
    assert "30s more" in policy.consider(perf, "a6", "m", outcomes=40).reason
    clock.t = 1031.0
    assert policy.consider(perf, "a6b", "m", outcomes=41).start
    policy.finished("m", promoted=True)
    # an alert without a count (feature drift, when it starts runs) waits in seconds
    drift = RetrainPolicy(cooldown_s=300, retry_after_s=30, monotonic=clock, cooldown_outcomes=10)
    assert drift.consider(perf, "d1", "m", outcomes=100).start
    drift.finished("m", promoted=True)
    assert "cooling down for 300s" in drift.consider(perf, "d2", "m").reason
    assert drift.consider(perf, "d3", "m", outcomes=110).start, "10 outcomes after d1"
    saved = policy.checkpoint()
    again = RetrainPolicy(cooldown_s=300, retry_after_s=30, monotonic=clock)
    again.restore(saved)
    assert again.checkpoint() == saved
    assert "more labelled outcomes" in again.consider(perf, "a7", "m", outcomes=42).reason


def test_runs_that_promote_nothing_gather_more_rows_next_time():
    policy = RetrainPolicy(cooldown_s=0, retry_after_s=0)
    perf = "io.weir.alert.performance.v1"
    assert policy.rows_to_collect("m", 600, 2000) == 600
    for expected in (1200, 2000, 2000):
        assert policy.consider(perf, f"a{expected}{policy.misses('m')}", "m").start
        policy.finished("m", promoted=False)
        assert policy.rows_to_collect("m", 600, 2000) == expected
    assert policy.rows_to_collect("other", 600, 2000) == 600, "per model"
    assert policy.rows_to_collect("m", 0, 2000) == 0, "collecting off stays off"
    assert policy.rows_to_collect("m", 3000, 2000) == 3000, "never fewer than asked"
    saved = policy.checkpoint()
    assert policy.consider(perf, "b", "m").start
    policy.finished("m", promoted=True)
    assert policy.rows_to_collect("m", 600, 2000) == 600, "a promotion starts afresh"
    again = RetrainPolicy(cooldown_s=0)
    again.restore(saved)
    assert again.misses("m") == 3


def held_alert_runs(first: FakeResult) -> tuple[list, list[str]]:
    """Two alerts for one model, the second while the first's run is under way."""
    emitted: list = []
    alerts_run: list[str] = []
    results = [first, FakeResult("succeeded", "2", {"candidate_accuracy": 0.95})]

    async def emit(kind: str, event) -> None:
        emitted.append((kind, event))

    def pipeline(settings, request):
        alerts_run.append(request.alert_id)
        return results.pop(0)

    table = RoutingTable()
    table.apply(
        ModelVersionEvent(action="activate", model="m", version="1", url="http://127.0.0.1:1"),
        ready=True,
    )
    retrainer = Retrainer(Settings(), table, FixedDeployer(), emit, run_pipeline=pipeline)
    retrainer._features = lambda model, version: ["a"]

    async def go() -> None:
        alert = performance_alert
        assert (await retrainer.on_alert(new_event(alert("false-alarm"), source="t"))).start
        held = await retrainer.on_alert(new_event(alert("real-drift"), source="t"))
        assert held.held and not held.start
        while retrainer.tasks:  # the held alert's run is created when the first one ends
            await asyncio.gather(*list(retrainer.tasks))

    asyncio.run(go())
    return emitted, alerts_run


def test_alert_held_during_a_run_that_promoted_nothing_starts_the_next_run():
    emitted, alerts_run = held_alert_runs(FakeResult("not-promoted", None, reason="no gain"))
    assert alerts_run == ["false-alarm", "real-drift"]
    activations = [e.data for kind, e in emitted if kind == "models" and e.data.url]
    assert [(a.version, a.alert_id) for a in activations] == [("2", "real-drift")]


def test_alert_held_during_a_run_that_promoted_a_version_is_dropped():
    emitted, alerts_run = held_alert_runs(FakeResult("succeeded", "2", {"candidate_accuracy": 1}))
    assert alerts_run == ["false-alarm"], "the held alert was about the replaced version"
    routed = [(e.data.action, e.data.version) for kind, e in emitted if kind == "models"]
    assert routed == [("activate", "2"), ("clear-canary", "2")]


def test_the_retrainer_gathers_more_after_a_miss_and_cools_down_in_outcomes():
    emitted: list = []
    gathered: list[int] = []
    results = [FakeResult("not-promoted", None, reason="no gain"), FakeResult("succeeded", "2")]

    async def emit(kind: str, event) -> None:
        emitted.append((kind, event))

    async def gather(model: str, since, wanted: int) -> None:
        gathered.append(wanted)

    table = RoutingTable()
    table.apply(
        ModelVersionEvent(action="activate", model="m", version="1", url="http://127.0.0.1:1"),
        ready=True,
    )
    retrainer = Retrainer(
        Settings(),
        table,
        FixedDeployer(),
        emit,
        run_pipeline=lambda settings, request: results.pop(0),
        gather_rows=gather,
    )
    retrainer._features = lambda model, version: ["a"]
    cooldown = Settings().retraining.cooldown_outcomes

    async def go():
        for alert_id, at in (("first", 5000), ("held", 6000)):
            await retrainer.on_alert(
                new_event(performance_alert(alert_id, outcomes=at), source="t")
            )
        while retrainer.tasks:
            await asyncio.gather(*list(retrainer.tasks))
        # the held alert's run promoted version 2: a new alert waits, counted from "held"
        late = performance_alert("late", outcomes=6000 + cooldown - 10)
        return await retrainer.on_alert(new_event(late, source="t"))

    late = asyncio.run(go())
    assert gathered == [600, 1200], "the second run gathered twice the rows"
    assert not late.start and "10 more labelled outcomes" in late.reason
    answer = emitted[-1][1].data
    assert answer.status == "not-started" and answer.alert_id == "late"


def test_outlier_alerts_do_not_start_runs():
    async def emit(kind, event):
        raise AssertionError("nothing should be emitted")

    retrainer = Retrainer(Settings(), RoutingTable(), None, emit)  # type: ignore[arg-type]
    alert = OutlierAlert(alert_id="o", model="m", record_id="r", score=1.0, threshold=0.9)
    decision = asyncio.run(retrainer.on_alert(new_event(alert, source="t")))
    assert not decision.start

"""The adaptation benchmark's simulation (bench/adaptation.py): mechanics that can go wrong.

No broker: the benchmark simulates Kafka. A threshold rule stands in for the
pipeline's learner so each test runs in well under a second; the online
learner is weir's own (``agents.learner.OnlineLearner``) with a Hoeffding tree,
river's fastest kind, on a few thousand records.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from agents.detectors import PerformanceSignal
from agents.learner import OnlineLearner
from bench.adaptation import (
    Data,
    LearnerLoop,
    LoopConfig,
    RiverSnapshot,
    SeedResult,
    Served,
    StreamSpec,
    WeirLoop,
    row_cells,
    serve,
    summarise,
    target_lines,
)
from connectors.mcnemar import mcnemar_p
from schemas import Outcome
from schemas.settings import LearnerSettings


class Threshold:
    """Predicts 1 when x0 exceeds ``cut``: the old concept cuts at 0.5, the new at 0.8."""

    def __init__(self, cut: float) -> None:
        self.cut = cut

    def predict(self, x: np.ndarray) -> np.ndarray:
        return (x[:, 0] > self.cut).astype(int)


def drifting(n: int, drift_at: int) -> Data:
    x = np.random.default_rng(0).uniform(0, 1, size=(n, 1))
    cut = np.where(np.arange(n) < drift_at, 0.5, 0.8)
    y = (x[:, 0] > cut).astype(int)
    return Data(x, y, [{"x0": float(v)} for v in x[:, 0]])


def fit_new_concept(x: np.ndarray, y: np.ndarray) -> Threshold:
    """Learns the cut as the midpoint between the classes (exact on clean rows)."""
    return Threshold((x[y == 0, 0].max() + x[y == 1, 0].min()) / 2)


class Never:
    def update(self, version: str, correct: bool) -> PerformanceSignal | None:
        return None


class AlertAt:
    """Signals on the listed outcomes of version "1" (1-based counts)."""

    def __init__(self, *at: int) -> None:
        self.at, self.seen = set(at), 0

    def update(self, version: str, correct: bool) -> PerformanceSignal | None:
        if version != "1":
            return None
        self.seen += 1
        if self.seen not in self.at:
            return None
        return PerformanceSignal(version, "stub", 0.0, 1, self.seen, 0.0)


LOOP = LoopConfig(rate=100.0, run_s=5.0, deploy_s=2.0, collect_rows=200, archive_interval_s=2.0)


def test_oracle_and_static_serve_from_their_records_and_a_silent_detector_changes_nothing() -> None:
    data, first = drifting(3000, 1000), Threshold(0.5)
    data.x[999, 0] = data.x[1000, 0] = 0.6  # class 1 before the drift, 0 after: the two disagree
    data.y[999], data.y[1000] = 1, 0
    oracle = serve(data, 100, [(100, "1", first), (1000, "oracle", Threshold(0.8))])
    assert oracle[100:1000].all() and oracle[1000:].all()  # the new model from record 1000 on
    static = serve(data, 100, [(100, "1", first)])
    assert static[:1000].sum() == 900 and not static[1000:].all()

    quiet = WeirLoop(data, first, 100, LOOP, monitor=Never(), fit=fit_new_concept).simulate()
    assert (quiet.correct == static).all()
    assert quiet.alerts == [] and quiet.runs == [] and [s.record for s in quiet.swaps] == [100]


def test_an_alert_becomes_a_run_that_swaps_after_gather_run_and_deploy() -> None:
    data = drifting(4000, 1000)
    alert_outcome = 1000  # record 1099: the loop's first outcome is record 100
    served = WeirLoop(
        data, Threshold(0.5), 100, LOOP, monitor=AlertAt(alert_outcome), fit=fit_new_concept
    ).simulate()
    assert served.alerts == [1099]
    (run,) = served.runs
    # rows 1100..1299 archived by the flush at 14 s (record 1400); + run 5 s + deploy 2 s
    assert run.promoted and run.fetched_at == 1400 and run.done_at == 1400 + 700
    assert [s.record for s in served.swaps] == [100, 2100]
    assert served.correct[2100:].mean() > 0.99 > served.correct[1000:2100].mean()


def test_alerts_before_the_drift_count_as_false_alarms_and_a_run_on_them_is_not_promoted() -> None:
    data = drifting(5000, 5000)  # no drift within the stream: it is all stable
    served = WeirLoop(
        data, Threshold(0.5), 100, LOOP, monitor=AlertAt(500), fit=fit_new_concept
    ).simulate()
    assert [r.promoted for r in served.runs] == [False]  # same concept: McNemar cannot show it
    spec = StreamSpec("stable", "", 5000, None, 5000, lambda seed: iter(()), None)
    systems: dict[str, Served] = {
        "static": served,
        "oracle swap": served,
        "ARF (river)": served,
        "weir loop @100/s": served,
    }
    result = SeedResult("stable", 0, systems, 0.0)
    loop = next(s for s in summarise(spec, [result]) if s.system == "weir loop @100/s")
    assert loop.false_alarms == 1 and loop.stable_records == 4900
    assert loop.fa_per_100k is not None and round(loop.fa_per_100k, 1) == 20.4


# light_bytes=0: every snapshot at publish_every (a Hoeffding tree's is light, see below)
ONLINE = LearnerSettings(
    kind="hoeffding", seed=0, publish_every=500, window=300, min_outcomes=100, light_bytes=0
)


def test_the_learner_system_feeds_online_learner_outcomes_and_it_takes_over_after_the_drift(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    seen: list[Outcome] = []
    followed: list[str | None] = []  # the active route it was told of, before each outcome
    real_learn, real_follow = OnlineLearner.learn, OnlineLearner.follow

    def learn(self: OnlineLearner, outcome: Outcome) -> bool | None:
        seen.append(outcome)
        return real_learn(self, outcome)

    def follow(self: OnlineLearner, active: str | None) -> None:
        followed.append(active)
        real_follow(self, active)

    monkeypatch.setattr(OnlineLearner, "learn", learn)
    monkeypatch.setattr(OnlineLearner, "follow", follow)
    data = drifting(3000, 1000)
    loop = LearnerLoop(data, Threshold(0.5), 100, LOOP, ONLINE, embed_s=1.0, monitor=Never())
    served = loop.simulate()

    # warmed on the 100 records version 1 was trained on (no outcomes), then every outcome
    assert isinstance(loop.online, OnlineLearner) and loop.online.learnt == 100 + 2900
    assert [o.record_id for o in seen] == [str(i) for i in range(100, 3000)]
    assert seen[0].features == {"x0": data.x[100, 0]} and seen[0].version == "1"
    (first, *_) = served.take_overs
    assert 1000 < first < 1500  # after the drift, not before: version 1 is exact until then
    # the snapshot published at the take-over serves one second (100 records) later, as
    # "online": what the performance role and the learner then see
    swap = served.swaps[1]
    assert swap.record == first + 100 and swap.version.startswith("online.")
    assert seen[swap.record - 100].version == "online" and seen[first + 1 - 100].version == "1"
    # the routes said "online" from the take-over on, while version 1 still served
    assert followed[first - 100] == "1" and followed[first + 1 - 100] == "online"
    assert len(followed) == len(seen)
    # while it serves: refreshed early once the live learner beats the take-over's snapshot
    # on refresh_min (100) of its answers (+ the 100-record load), then every publish_every
    gaps = [s.record - swap.record for s in served.swaps[2:]]
    assert 100 + 100 - 5 <= gaps[0] < 500 and np.diff(gaps[1:]).tolist() == [500, 500]
    assert served.correct[first + 100 :].mean() > 0.93 > served.correct[1000:first].mean()
    assert loop.snapshot is not None and loop.snapshot.estimator is not loop.online.estimator
    assert served.runs == [] and served.alerts == []  # the silent detector started no run


def test_light_snapshots_serve_every_light_publish_every_outcomes() -> None:
    light = ONLINE.model_copy(update={"light_bytes": 262_144})  # the default
    loop = LearnerLoop(drifting(3000, 1000), Threshold(0.5), 100, LOOP, light, monitor=Never())
    served = loop.simulate()
    # a Hoeffding tree's snapshot is a few KB: once the first one was stored, a snapshot
    # serves every light_publish_every (100) outcomes, not every publish_every (500)
    gaps = np.diff([s.record for s in served.swaps[3:]]).tolist()
    assert gaps and set(gaps) == {light.light_publish_every}
    assert loop.online.light and loop.online.min_gap_s == light.light_publish_min_s
    # and serves embed_light_s (0.25 s: 25 records at 100/s) after it is published
    assert served.swaps[1].record == served.take_overs[0] + 25


def test_while_its_snapshot_loads_the_old_versions_outcomes_call_for_no_second_take_over() -> None:
    data = drifting(3000, 1000)
    slow = LearnerLoop(data, Threshold(0.5), 100, LOOP, ONLINE, embed_s=4.0, monitor=Never())
    served = slow.simulate()
    # version 1 serves 400 more records while the snapshot loads; the learner follows the
    # published routes (online), so it pairs none of them and takes over once
    (take,) = served.take_overs
    assert served.swaps[1].record == take + 400 and served.swaps[1].version.startswith("online.")
    assert slow.online.pairs == 0 and slow.online.paired_with is None


class Fixed:
    def __init__(self, label: int) -> None:
        self.label = label

    def predict_one(self, x: dict[str, float]) -> int:
        return self.label

    def learn_one(self, x: dict[str, float], y: Any) -> None:
        pass


def test_a_promotion_replaces_the_learner_and_its_route_published_before_never_serves() -> None:
    data = drifting(2000, 2000)
    loop = LearnerLoop(data, Threshold(0.5), 100, LOOP, ONLINE, embed_s=1.0, monitor=Never())
    loop.online.estimator = Fixed(1)
    loop._publish(500, activate=True)  # a take-over's snapshot: serves from record 600
    loop._serve_routes(599)
    assert loop.version == "1" and loop.routed == "online"
    loop._serve_routes(600)
    assert loop.version == "online" and isinstance(loop.serving(), RiverSnapshot)
    assert loop.serving().predict(data.x[:3]).tolist() == [1, 1, 1]

    loop._publish(700, activate=True)  # a refresh while it serves, due at 800 ...
    loop._promote(750, Threshold(0.5))  # ... but version 2 is promoted at 750
    loop._serve_routes(800)
    assert loop.version == "2" and loop.routed == "2" and loop.serving().cut == 0.5
    loop._learn(800, 1, 1, True)  # the learner pairs against version 2 afresh
    assert loop.online.paired_with == "2" and loop.online.pairs == 1
    assert [(s.record, s.version) for s in loop.served.swaps] == [
        (100, "1"),
        (600, "online.1"),
        (750, "2"),
    ]
    loop._publish(900, activate=loop.routed == "online")  # a shadow now: nothing to load
    assert loop.pending == [] and loop.online.snapshot == 3


def test_a_system_on_a_prefix_counts_its_own_stable_records_and_its_take_overs() -> None:
    data = drifting(5000, 5000)
    whole = WeirLoop(data, Threshold(0.5), 100, LOOP, monitor=Never()).simulate()
    prefix = Served(whole.correct[:3000].copy(), 100, 3000, take_overs=[1200, 1500])
    spec = StreamSpec("stable", "", 5000, None, 5000, lambda seed: iter(()), None)
    systems: dict[str, Served] = {
        "static": whole,
        "oracle swap": whole,
        "ARF (river)": prefix,
        "weir loop @100/s": whole,
        "weir loop + learner @100/s": prefix,
    }
    rows = summarise(spec, [SeedResult("stable", 0, systems, 0.0)])
    both = next(s for s in rows if s.system == "weir loop + learner @100/s")
    assert both.cut and both.stable_records == 2900 and both.take_overs == [2]
    assert next(s for s in rows if s.system == "weir loop @100/s").stable_records == 4900
    cells = row_cells(both)
    assert cells[2] == "-" and cells[-1] == "2 (2-2)"


def test_each_system_is_paired_with_arf_on_the_records_arf_ran_on() -> None:
    n = 1000
    arf_right = np.ones(n, dtype=bool)
    arf_right[100:130] = False  # ARF wrong on 30 records
    mine = np.ones(n, dtype=bool)
    mine[120:160] = False  # the loop wrong on 40, 10 of them where ARF was wrong too
    mine[900:] = False  # past ARF's records: not paired
    spec = StreamSpec("stable", "", n, None, n, lambda seed: iter(()), None)
    systems = {
        "static": Served(mine, 100, n),
        "oracle swap": Served(mine, 100, n),
        "ARF (river)": Served(arf_right[:900].copy(), 100, 900),
        "weir loop @100/s": Served(mine, 100, n),
    }
    rows = summarise(spec, [SeedResult("stable", 0, systems, 0.0)] * 2)
    loop = next(s for s in rows if s.system == "weir loop @100/s")
    assert (loop.only_mine, loop.only_arf) == (2 * 20, 2 * 30)
    assert "40 records only it got right, 60 only ARF" in loop.vs_arf
    p = float(loop.vs_arf.rsplit("p=", 1)[1])
    assert p == pytest.approx(2 * mcnemar_p(60, 40), rel=0.01)
    specs = {"stable": spec}
    lines = target_lines(specs, {"stable": rows}, [100.0])
    below = next(text for text, met in lines if "prequential" in text)
    assert "below on stable" in below and loop.vs_arf in below


class Sized(Fixed):
    """A model whose snapshot pickles to about ``size`` bytes."""

    def __init__(self, label: int, size: int) -> None:
        super().__init__(label)
        self.pad = b"x" * size


def test_a_light_snapshot_serves_sooner_but_never_before_one_published_earlier() -> None:
    data = drifting(2000, 2000)
    light = ONLINE.model_copy(update={"light_bytes": 262_144})
    loop = LearnerLoop(data, Threshold(0.5), 100, LOOP, light, embed_s=1.0, monitor=Never())
    loop.online.estimator = Sized(1, 1_000_000)
    loop._publish(500, activate=True)  # heavy: 1 s, 100 records
    loop.online.estimator = Sized(0, 10)
    loop._publish(510, activate=True)  # light: 25 records, but the workers fold in order
    assert [p.effective for p in loop.pending] == [600, 600]
    loop._publish(700, activate=True)
    assert loop.pending[-1].effective == 725
    loop._serve_routes(600)  # both loaded: the newer one serves
    assert loop.version == "online" and loop.serving().predict(data.x[:1]).tolist() == [0]

"""Detector cores: one contract for every drift detector, then the three monitors.

Alarm positions on seeded streams are pinned, as river's own docstrings do, so
a behaviour change in a new river version fails here instead of shifting
alerts silently. The contract streams:

* numeric kinds (ADWIN, Page-Hinkley): N(0, 1), shifting to N(1, 1);
* binary kinds (DDM, EDDM, HDDM-A): Bernoulli errors at 5 %, shifting to 20 %
  (roughly the demo: a 95 % accurate model falling to 80 %).

Streams are 5,000 values; the shift is at index 2,000.
"""

from __future__ import annotations

import copy
import math
import pickle
import random

import numpy as np
import pytest
from river import anomaly, preprocessing
from sklearn.linear_model import LogisticRegression

from agents.detectors import (
    BINARY_KINDS,
    DETECTOR_KINDS,
    Cooldown,
    DetectorKind,
    ErrorRateMonitor,
    PerformanceSignal,
    StreamDriftMonitor,
    make_detector,
)
from agents.outliers import OutlierScorer
from streams.synthetic import FEATURES, drifting_stream

N = 5000
SHIFT_AT = 2000


def contract_stream(kind: DetectorKind, *, seed: int, shifted: bool) -> list[float]:
    rng = random.Random(seed)
    values = []
    for i in range(N):
        after = shifted and i >= SHIFT_AT
        if kind in BINARY_KINDS:
            values.append(float(rng.random() < (0.20 if after else 0.05)))
        else:
            values.append(rng.gauss(1.0 if after else 0.0, 1.0))
    return values


def alarms(kind: DetectorKind, values: list[float]) -> list[int]:
    detector = make_detector(kind)
    return [i for i, x in enumerate(values) if detector.update(x)]


# kind: (alarm positions on the shifted stream of seed 1, stated delay bound).
# The bounds are the largest delays over 50 seeds, rounded up: ADWIN 79,
# Page-Hinkley 82, DDM 312, EDDM 827, HDDM-A 383 (medians 47, 57, 134, 475, 189).
PINNED: dict[DetectorKind, tuple[list[int], int]] = {
    "adwin": ([2047], 100),  # ADWIN tests for a cut every 32 values (clock=32)
    "page-hinkley": ([2079], 100),
    "ddm": ([2125], 400),
    "eddm": ([2527], 1000),
    "hddm-a": ([2165], 500),
}

# Seeds in 0..19 whose *stable* stream raises at least one alarm with the defaults.
# Seed 1 is the contract seed because EDDM alarms on seed 0: EDDM is noisy on
# abrupt drift at low error rates (11 of 50 stable streams), DDM less (5 of 50).
FALSE_ALARM_SEEDS: dict[DetectorKind, list[int]] = {
    "adwin": [],
    "page-hinkley": [],
    "ddm": [8, 12, 15],
    "eddm": [0, 2, 8, 18],
    "hddm-a": [],
}


def test_every_kind_is_pinned():
    assert set(PINNED) == set(DETECTOR_KINDS) == set(FALSE_ALARM_SEEDS)


@pytest.mark.parametrize("kind", DETECTOR_KINDS)
def test_contract_quiet_when_stable_and_one_alarm_after_a_shift(kind: DetectorKind):
    assert alarms(kind, contract_stream(kind, seed=1, shifted=False)) == []

    positions, bound = PINNED[kind]
    found = alarms(kind, contract_stream(kind, seed=1, shifted=True))
    assert found == positions
    assert len(found) == 1 and SHIFT_AT <= found[0] <= SHIFT_AT + bound


@pytest.mark.parametrize("kind", DETECTOR_KINDS)
def test_contract_false_alarm_seeds_are_pinned(kind: DetectorKind):
    noisy = [s for s in range(20) if alarms(kind, contract_stream(kind, seed=s, shifted=False))]
    assert noisy == FALSE_ALARM_SEEDS[kind]


@pytest.mark.parametrize("kind", DETECTOR_KINDS)
def test_contract_reset_forgets_and_name_is_the_kind(kind: DetectorKind):
    values = contract_stream(kind, seed=1, shifted=True)
    detector = make_detector(kind)
    assert detector.name == kind
    first = [i for i, x in enumerate(values) if detector.update(x)]
    detector.reset()
    again = [i for i, x in enumerate(values) if detector.update(x)]
    assert first == again == PINNED[kind][0]


@pytest.mark.parametrize("kind", DETECTOR_KINDS)
@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf])
def test_contract_rejects_non_finite_values(kind: DetectorKind, bad: float):
    with pytest.raises(ValueError, match="finite"):
        make_detector(kind).update(bad)


@pytest.mark.parametrize("kind", sorted(BINARY_KINDS))
def test_binary_kinds_take_only_zero_or_one(kind: DetectorKind):
    detector = make_detector(kind)
    assert detector.update(0) is False and detector.update(1.0) is False
    with pytest.raises(ValueError, match="0 or 1"):
        detector.update(0.5)


def test_unknown_kind_and_bad_params_fail_early():
    with pytest.raises(ValueError, match="unknown detector kind"):
        make_detector("kswin")  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        StreamDriftMonitor("adwin", no_such_param=1.0)
    assert make_detector("adwin", delta=0.01).name == "adwin"


def test_cooldown_lets_one_alarm_through_then_holds_quiet():
    cooldown = Cooldown(3)
    assert cooldown.admit(True)
    assert [cooldown.admit(True) for _ in range(3)] == [False] * 3
    assert cooldown.admit(True)
    assert Cooldown(0).admit(True) and Cooldown(0).admit(True)


# --- StreamDriftMonitor -----------------------------------------------------------------


def level(i: int) -> float:
    """Mean of stream "x0": 0, then 2 from 2000, -1 from 2300, 2 again from 4000."""
    if i < 2000:
        return 0.0
    if i < 2300:
        return 2.0
    return -1.0 if i < 4000 else 2.0


def feed_two_streams(monitor: StreamDriftMonitor, n: int = 6000) -> dict[str, list]:
    shifting, stable = random.Random(3), random.Random(4)
    signals: dict[str, list] = {"x0": [], "x1": []}
    for i in range(n):
        for name, value in (("x0", shifting.gauss(level(i), 1.0)), ("x1", stable.gauss(5, 2))):
            signal = monitor.update(name, value)
            if signal is not None:
                signals[name].append(signal)
    return signals


def test_stream_monitor_one_signal_per_change_outside_the_cooldown():
    signals = feed_two_streams(StreamDriftMonitor("adwin", cooldown=1000))
    # The change at 2300 is inside the cooldown of the one at 2000: dropped.
    assert [s.records_seen for s in signals["x0"]] == [2016, 4032]
    first, second = signals["x0"]
    assert (first.stream, first.detector) == ("x0", "adwin")
    assert first.mean_before == pytest.approx(0.0, abs=0.05)
    assert first.mean_after == pytest.approx(2.0, abs=0.2)
    assert second.mean_before == pytest.approx(-1.0, abs=0.05)
    assert second.mean_after == pytest.approx(2.0, abs=0.2)
    assert signals["x1"] == []


def test_stream_monitor_without_cooldown_reports_every_change():
    signals = feed_two_streams(StreamDriftMonitor("adwin", cooldown=0))
    assert [s.records_seen for s in signals["x0"]] == [2016, 2336, 4032]
    assert signals["x0"][1].mean_before == pytest.approx(2.0, abs=0.2)
    assert signals["x0"][1].mean_after == pytest.approx(-1.0, abs=0.3)


def test_stream_monitor_streams_are_independent():
    together = StreamDriftMonitor("adwin")
    feed_two_streams(together, n=3000)
    alone = StreamDriftMonitor("adwin")
    rng = random.Random(3)
    positions = [i for i in range(3000) if alone.update("x0", rng.gauss(level(i), 1.0))]
    assert positions == [2015]
    assert together.records_seen("x0") == together.records_seen("x1") == 3000
    assert together.records_seen("never") == 0


def test_stream_monitor_keeps_at_most_max_streams_detectors():
    monitor = StreamDriftMonitor("adwin", max_streams=3)
    for i in range(10):
        monitor.update(f"fresh-{i}", 1.0)
    monitor.update("fresh-0", 2.0)  # a tracked stream keeps learning
    assert [monitor.records_seen(f"fresh-{i}") for i in range(5)] == [2, 1, 1, 0, 0]
    assert monitor.untracked == 7


@pytest.mark.parametrize("bad", [math.nan, math.inf])
def test_stream_monitor_rejects_non_finite(bad: float):
    monitor = StreamDriftMonitor()
    with pytest.raises(ValueError, match="finite"):
        monitor.update("x0", bad)
    assert monitor.records_seen("x0") == 0


# --- OutlierScorer --------------------------------------------------------------------


def test_outlier_scorer_ignores_feature_names_it_was_not_built_on():
    scorer, plain = OutlierScorer(warmup=0), OutlierScorer(warmup=0)
    scorer.score({"a": 0.1, "b": 0.2})
    plain.score({"a": 0.1, "b": 0.2})
    for i in range(50):
        extra = scorer.score({"a": 0.3 + i / 100, "b": 0.1, f"new-{i}": 5.0})
        assert extra == plain.score({"a": 0.3 + i / 100, "b": 0.1})
    assert scorer.names == ["a", "b"]


class RiverOutlierScorer:
    """What OutlierScorer computed before its trees were arrays: river's own scaler and
    trees, one record at a time (the reference the batch path must match bit for bit)."""

    def __init__(self, seed: int = 42, threshold: float = 0.95) -> None:
        self.seed, self.threshold = seed, threshold
        self.scaler = preprocessing.MinMaxScaler()
        self.trees: anomaly.HalfSpaceTrees | None = None
        self.names: set[str] = set()

    def score(self, features: dict[str, float]) -> float:
        if self.trees is None:
            self.names = set(features)
            limits = {n: (-1.0, 2.0) for n in sorted(features)}
            self.trees = anomaly.HalfSpaceTrees(
                n_trees=25, height=8, window_size=250, limits=limits, seed=self.seed
            )
        features = {k: v for k, v in features.items() if k in self.names}
        score = float(self.trees.score_one(self.scaler.transform_one(features)))
        if score <= self.threshold:
            self.scaler.learn_one(features)
        self.trees.learn_one(self.scaler.transform_one(features))
        return score


def _awkward_stream(n: int, seed: int) -> list[dict[str, float]]:
    """Demo records, with far-out, wild, new-extreme and feature-lacking ones among them,
    and a move to a new range for good half way."""
    rng = random.Random(seed)
    out = []
    for i, features in enumerate(demo_features(n, seed=seed)):
        f = dict(features)
        if i > n // 2:
            f = {k: v + 7.0 for k, v in f.items()}
        pick = rng.random()
        if pick < 0.01:
            f = dict(FAR)
        elif pick < 0.015:
            f = {k: v * rng.choice([1e6, -1e6, 3.0]) for k, v in f.items()}
        elif pick < 0.03:
            f.pop(rng.choice(sorted(f)))
        elif pick < 0.035:
            f["unknown"] = 1.0
        out.append(f)
    return out


@pytest.mark.parametrize("seed", [0, 1])
def test_outlier_scorer_in_batches_scores_as_river_does_one_by_one(
    seed: int, monkeypatch: pytest.MonkeyPatch
):
    from agents.halfspace import HalfSpaceForest

    records = _awkward_stream(3000, seed)
    reference = RiverOutlierScorer(seed=seed)
    river_scores = [reference.score(f) for f in records]
    alone = []
    one = HalfSpaceForest._one
    monkeypatch.setattr(HalfSpaceForest, "_one", lambda self, *a: alone.append(1) or one(self, *a))
    scorer, rng, got = OutlierScorer(seed=seed), random.Random(seed), []
    start = 0
    while start < len(records):
        size = rng.choice([1, 2, 7, 64, 250, 500])
        got += scorer.score_many(records[start : start + size])
        start += size
    assert got == river_scores  # exactly: the same trees, masses and float operations
    assert sum(s > 0.95 for s in got) >= 5, "the stream has outliers to find"
    assert scorer.records_seen == len(records)
    assert len(alone) < len(records) / 5, "most records are scored and learnt together"


def test_an_outlier_scorer_checkpointed_as_river_objects_goes_on_alike():
    records = demo_features(1200)
    reference = RiverOutlierScorer()
    for f in records[:700]:
        reference.score(f)
    old = OutlierScorer.__new__(OutlierScorer)
    old.__setstate__(  # the state an OutlierScorer of before 2026-12-01 pickled
        {
            "threshold": 0.95,
            "warmup": 250,
            "_seed": 42,
            "_n_trees": 25,
            "_height": 8,
            "_window_size": 250,
            "_margin": 1.0,
            "_scaler": copy.deepcopy(reference.scaler),
            "_trees": copy.deepcopy(reference.trees),
            "_names": frozenset(reference.names),
            "records_seen": 700,
        }
    )
    # pickled as it was then too: under the module the scorer lived in (agents.detectors)
    written = pickle.dumps(old, protocol=0).replace(b"agents.outliers\n", b"agents.detectors\n")
    assert b"agents.detectors\nOutlierScorer" in written
    restored = pickle.loads(written)
    assert type(restored) is OutlierScorer
    assert restored.score_many(records[700:]) == [reference.score(f) for f in records[700:]]
    assert restored.records_seen == 1200


def test_check_many_flags_as_check_does():
    records = demo_features(800)
    records[400:400] = [dict(FAR)]
    one, many = OutlierScorer(warmup=300), OutlierScorer(warmup=300)
    singly = [one.check(f"r{i}", f) for i, f in enumerate(records)]
    batch = many.check_many([(f"r{i}", f) for i, f in enumerate(records)])
    assert singly == batch
    assert [s.record_id for s in batch if s is not None] == ["r400"]
    assert batch[400] is not None and batch[400].records_seen == 401


FAR = {"x0": 30.0, "x1": 30.0, "x2": 30.0}  # three times the demo's range in every feature


def demo_features(n: int, seed: int = 7) -> list[dict[str, float]]:
    return [row.features for row in drifting_stream(n=n, drift_at=n, seed=seed)]


def test_outlier_scorer_is_silent_during_warm_up():
    scorer = OutlierScorer(warmup=500)
    records = demo_features(500)
    for i, features in enumerate(records[:400]):
        assert scorer.check(f"r{i}", features) is None
    # After one tree window the far-out record scores high, but the warm-up holds it back.
    assert scorer.check("far", FAR) is None
    assert scorer.score(FAR) > scorer.threshold
    assert scorer.records_seen == 402


def test_outlier_scorer_flags_far_out_records_only():
    scorer = OutlierScorer()
    records = demo_features(3000)
    flagged = [i for i, features in enumerate(records) if scorer.check(f"r{i}", features)]
    assert flagged == []
    signal = scorer.check("far", FAR)
    assert signal is not None
    assert (signal.record_id, signal.threshold, signal.records_seen) == ("far", 0.95, 3001)
    assert signal.score == pytest.approx(0.9888738943, abs=1e-9)
    assert 0.95 < signal.score <= 1.0


def test_outlier_scorer_is_not_blinded_by_one_wild_record():
    scorer = OutlierScorer()
    records = demo_features(2600)
    for features in records[:2000]:
        scorer.score(features)
    assert scorer.check("wild", {"x0": 1e9, "x1": 1e9, "x2": 1e9}) is not None
    for features in records[2000:]:
        scorer.score(features)
    assert scorer.check("far", FAR) is not None


def test_outlier_scorer_is_deterministic_for_a_seed_and_rejects_bad_records():
    records = demo_features(600)
    a, b = OutlierScorer(seed=3), OutlierScorer(seed=3)
    assert [a.score(x) for x in records] == [b.score(x) for x in records]
    with pytest.raises(ValueError, match="finite"):
        a.score({"x0": math.nan, "x1": 1.0, "x2": 1.0})
    with pytest.raises(ValueError, match="at least one feature"):
        a.score({})


# --- ErrorRateMonitor -----------------------------------------------------------------

TRAIN_ROWS = 1500
DRIFT_AT = 3000


@pytest.fixture(scope="module")
def demo_outcomes() -> list[bool]:
    """Whether v1 was right on each demo row, for v1 = LogisticRegression(C=100)
    trained on rows 0..1499. Row 3000 on follows the new concept."""
    rows = list(drifting_stream(n=6000, drift_at=DRIFT_AT, seed=42))
    x = np.array([[row.features[f] for f in FEATURES] for row in rows])
    y = np.array([row.label for row in rows])
    model = LogisticRegression(C=100).fit(x[:TRAIN_ROWS], y[:TRAIN_ROWS])
    return [bool(c) for c in model.predict(x) == y]


def test_error_rate_monitor_on_the_demo_drift(demo_outcomes: list[bool]):
    """v1 serves from row 1500 on: only those outcomes reach the monitor."""
    monitor = ErrorRateMonitor()  # ADWIN, window 500, cooldown 1000
    signals = []
    for row in range(TRAIN_ROWS, len(demo_outcomes)):
        signal = monitor.update("v1", demo_outcomes[row])
        if signal is not None:
            signals.append((row, signal))
        if row == DRIFT_AT - 1:
            before = monitor.accuracy("v1")
            assert signals == []
    assert before == pytest.approx(0.945, abs=0.015)
    after = monitor.accuracy("v1")
    assert after is not None and after < before - 0.05

    # the drift, then each time the 1000-outcome cooldown ends while v1 stays degraded
    assert [(row, s.detector) for row, s in signals] == [
        (3131, "adwin"),  # 131 outcomes after the drift
        (4132, "adwin, still degraded"),
        (5133, "adwin, still degraded"),
    ]
    row, signal = signals[0]
    assert (signal.version, signal.window) == ("v1", 500)
    assert signal.outcomes_seen == row - TRAIN_ROWS + 1
    assert before > signal.accuracy > after
    assert all(s.accuracy < before - 0.05 for _, s in signals[1:])


def test_the_watch_ends_when_the_version_recovers():
    monitor = ErrorRateMonitor(window=100, cooldown=200)
    outcomes = [True] * 2000 + [i % 2 == 0 for i in range(1000)] + [True] * 1000
    signals = [(i, s) for i, c in enumerate(outcomes) if (s := monitor.update("v", c))]
    detectors = [s.detector for _, s in signals]
    assert detectors[0] == "adwin" and 2000 < signals[0][0] < 2200
    assert set(detectors[1:]) == {"adwin, still degraded"} and len(detectors) >= 4
    assert all(i < 3000 + 200 for i, _ in signals), "no signal once accuracy is back"
    assert monitor.update("v", True) is None


def test_a_feature_drift_raises_the_watch_level_and_the_outcomes_confirm_it():
    rnd = random.Random(11)
    outcomes = [rnd.random() < 0.95 for _ in range(3000)] + [
        rnd.random() < 0.85 for _ in range(1000)
    ]

    def first_signal(watch_at: int | None) -> tuple[int, PerformanceSignal] | None:
        monitor = ErrorRateMonitor(window=100, cooldown=500)
        for i, correct in enumerate(outcomes):
            if i == watch_at:
                monitor.watch_closely(500)
            signal = monitor.update("v1", correct)
            if signal is not None:
                return i, signal
        return None

    plain = first_signal(None)
    assert plain is not None and plain[1].detector == "adwin" and plain[0] >= 3000
    closely = first_signal(3000)  # a feature-drift alert as the concept changes
    assert closely is not None
    at, signal = closely
    assert signal.detector == "adwin, confirmed after feature drift"
    assert 3000 < at < plain[0], "confirmed before the detector alone would alarm"
    assert signal.baseline is None and signal.accuracy < 0.90
    # a feature drift without a change in accuracy confirms nothing
    stable = ErrorRateMonitor(window=100, cooldown=500)
    stable.watch_closely(3000)
    assert [s for c in outcomes[:3000] if (s := stable.update("v1", c))] == []
    # the close watch ends after its outcomes
    late = first_signal(1000)
    assert late is not None and late[1].detector == "adwin"


def test_error_rate_monitor_keeps_versions_apart(demo_outcomes: list[bool]):
    monitor = ErrorRateMonitor(window=100)
    signals = []
    for correct in demo_outcomes[TRAIN_ROWS:]:
        signals.append(monitor.update("v1", correct))
        assert monitor.update("v2", True) is None
    assert monitor.accuracy("v2") == monitor.cumulative_accuracy("v2") == 1.0
    assert monitor.outcomes_seen("v1") == monitor.outcomes_seen("v2") == 4500
    # the model's count (the retrainer's cooldown clock) covers every version
    assert monitor.outcomes == 9000
    first = next(s for s in signals if s is not None)
    assert first.model_outcomes == 2 * first.outcomes_seen - 1
    assert monitor.accuracy("v3") is None and monitor.cumulative_accuracy("v3") is None
    assert monitor.outcomes_seen("v3") == 0


def test_a_promoted_version_that_is_still_degraded_is_alerted_on_once_its_window_is_full():
    monitor = ErrorRateMonitor(window=100, cooldown=200)
    for _ in range(2000):
        monitor.update("v1", True)
    first = [s for i in range(400) if (s := monitor.update("v1", i % 2 == 0))]
    assert first and first[0].baseline is None  # the drift's own alert
    # v2, promoted, is better than v1 now but still well below the accuracy before the drift
    signals = [(n, s) for n in range(1, 301) if (s := monitor.update("v2", n % 4 != 0))]
    assert [(n, s.version, s.detector) for n, s in signals][:1] == [
        (100, "v2", "adwin, still degraded")
    ]
    assert signals[0][1].baseline == pytest.approx(1.0, abs=0.1)
    # v3 is as good as before the drift: no alert, and the watch ends
    for version in ("v3", "v4"):
        quiet = [monitor.update(version, True) for _ in range(300)]
        assert quiet == [None] * 300


def test_a_gradual_drift_does_not_lower_the_mark_and_one_lucky_window_does_not_end_the_watch():
    import random

    rng = random.Random(5)
    monitor = ErrorRateMonitor(window=200, cooldown=300)
    signals = []
    # 3000 outcomes at 96 %, then accuracy slides to 80 % over 3000 (a gradual drift)
    for i in range(6000):
        p = 0.96 if i < 3000 else 0.96 - 0.16 * (i - 3000) / 3000
        if s := monitor.update("v1", rng.random() < p):
            signals.append(s)
    assert signals, "the drift was seen"
    # the mark is near the 96 % plateau, not the running mean the slide dragged down
    [watched] = {s.baseline for s in signals if s.baseline is not None} or {None}
    assert watched is not None and watched > 0.93 > monitor.cumulative_accuracy("v1")
    assert watched < 0.975, "not the luckiest window either"

    def steady(share: float, n: int) -> list[bool]:  # exactly ``share`` right in every window
        return [int((i + 1) * share) > int(i * share) for i in range(n)]

    # v2 hovers between the margin and half of it: no alert, but the watch stays on
    hover = [monitor.update("v2", ok) for ok in steady(watched - 0.04, 2000)]
    assert hover == [None] * 2000 and monitor._watch == watched
    # ... v3 below the margin is alerted on; v4, back at the plateau, ends the watch
    assert any(monitor.update("v3", ok) for ok in steady(watched - 0.07, 400))
    for ok in steady(0.97, 1000):
        monitor.update("v4", ok)
    assert monitor._watch is None


@pytest.mark.parametrize("kind", ["page-hinkley", "adwin"])
@pytest.mark.parametrize("unit", [1e-3, 1.0, 1e3])
def test_scaled_detectors_behave_alike_whatever_the_features_unit(kind: DetectorKind, unit: float):
    """Page-Hinkley's delta and threshold are in the stream's units: on raw values of a
    feature measured in thousands it alarms without end; standardised, it is quiet while the
    stream is stable and alarms once the mean moves by one spread, at any scale."""
    rng = random.Random(11)
    values = [unit * (100 + rng.gauss(0, 1) + (1.0 if i >= 3000 else 0.0)) for i in range(5000)]
    scaled = StreamDriftMonitor(kind, cooldown=1000, scale_warmup=200)
    alarms = [i for i, v in enumerate(values) if scaled.update("x", v) is not None]
    assert alarms and all(3000 <= i < 3400 for i in alarms[:1]), alarms
    assert not [i for i in alarms if i < 3000], f"false alarms on the stable part: {alarms}"
    signal_means = StreamDriftMonitor(kind, cooldown=1000, scale_warmup=200)
    first = next(s for v in values if (s := signal_means.update("x", v)) is not None)
    assert first.mean_after is not None and first.mean_after == pytest.approx(101 * unit, rel=0.01)


def test_raw_page_hinkley_is_not_scale_free():
    rng = random.Random(11)
    raw = StreamDriftMonitor("page-hinkley", cooldown=0)
    alarms = sum(raw.update("x", 1e3 * (100 + rng.gauss(0, 1))) is not None for _ in range(3000))
    assert alarms > 10, "on raw values of a wide feature Page-Hinkley alarms on a stable stream"

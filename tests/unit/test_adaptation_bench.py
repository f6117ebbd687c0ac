"""The adaptation benchmark's simulation (bench/adaptation.py): mechanics that can go wrong.

No broker: the benchmark simulates Kafka. A threshold rule stands in for the
learner so each test runs in well under a second.
"""

from __future__ import annotations

import numpy as np

from agents.detectors import PerformanceSignal
from bench.adaptation import (
    Data,
    LoopConfig,
    SeedResult,
    Served,
    StreamSpec,
    WeirLoop,
    serve,
    summarise,
)


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

"""Drift detection delay on the demo's error stream, and the cost of every detector.

For each seed the demo stream (``streams.synthetic.drifting_stream``, 8,000
rows, concept drift at row 3,000) is generated; model v1, a
``LogisticRegression(C=100)``, is trained on rows 0..1,499 and serves from row
1,500 on. Its error stream (1 = wrong) from row 1,500 goes to each binary
detector with weir's defaults (``agents.detectors.make_detector``), to river's
own defaults where weir's differ, and to the peer baseline ADWIN(delta=0.002)
(performance-anchors.md section 7, B4). Per detector:

* delay: first alarm at or after row 3,000, minus 3,000 (rows = outcomes);
* missed: seeds with no alarm from row 3,000 on;
* false alarms: alarms in rows 1,500..2,999 (1,500 stable outcomes per seed).

Then the time per update of each detector kind, of the two monitors and of
``OutlierScorer`` (median and range of several repeats). Prints tables only.

    .venv/bin/python bench/drift_delay.py [--seeds 10]
"""

from __future__ import annotations

import argparse
import random
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from rich.console import Console
from rich.table import Table
from river import anomaly, drift, preprocessing
from river.drift import binary
from sklearn.linear_model import LogisticRegression

from agents.detectors import (
    BINARY_KINDS,
    DETECTOR_KINDS,
    DriftDetector,
    ErrorRateMonitor,
    RiverDetector,
    StreamDriftMonitor,
    make_detector,
)
from agents.outliers import OutlierScorer
from streams.synthetic import FEATURES, drifting_stream

ROWS = 8000
DRIFT_AT = 3000
TRAIN_ROWS = 1500

# label: (factory, parameters)
CANDIDATES: dict[str, tuple[Callable[[], DriftDetector], str]] = {
    "ddm": (lambda: make_detector("ddm"), "weir default: warm_start=500"),
    "eddm": (lambda: make_detector("eddm"), "weir default: warm_start=100, alpha=0.95, beta=0.7"),
    "hddm-a": (lambda: make_detector("hddm-a"), "weir default = river's: drift_confidence=0.001"),
    "ddm, river": (lambda: RiverDetector("ddm", binary.DDM()), "river default: warm_start=30"),
    "eddm, river": (
        lambda: RiverDetector("eddm", binary.EDDM()),
        "river default: warm_start=30, alpha=0.95, beta=0.9",
    ),
    "adwin (baseline)": (
        lambda: make_detector("adwin", delta=0.002),
        "peer default (B4): ADWIN delta=0.002",
    ),
}


def error_stream(seed: int) -> list[float]:
    """v1's errors (1.0 = wrong) on rows TRAIN_ROWS.. of the demo stream of ``seed``."""
    rows = list(drifting_stream(n=ROWS, drift_at=DRIFT_AT, seed=seed))
    x = np.array([[row.features[f] for f in FEATURES] for row in rows])
    y = np.array([row.label for row in rows])
    model = LogisticRegression(C=100).fit(x[:TRAIN_ROWS], y[:TRAIN_ROWS])
    wrong = model.predict(x[TRAIN_ROWS:]) != y[TRAIN_ROWS:]
    return [float(w) for w in wrong]


@dataclass
class Outcome:
    delays: list[int]
    missed: int
    false_alarms: int


def evaluate(factory: Callable[[], DriftDetector], streams: list[list[float]]) -> Outcome:
    outcome = Outcome([], 0, 0)
    for errors in streams:
        detector = factory()
        alarms = [TRAIN_ROWS + i for i, e in enumerate(errors) if detector.update(e)]
        outcome.false_alarms += sum(1 for row in alarms if row < DRIFT_AT)
        after = [row - DRIFT_AT for row in alarms if row >= DRIFT_AT]
        if after:
            outcome.delays.append(after[0])
        else:
            outcome.missed += 1
    return outcome


def spread(values: list[float], fmt: str = "{:.0f}") -> tuple[str, str, str]:
    """Median, interquartile range and full range of ``values``, as text."""
    if not values:
        return "-", "-", "-"
    median = fmt.format(statistics.median(values))
    if len(values) < 2:
        return median, "-", "-"
    q1, _, q3 = statistics.quantiles(values, n=4)
    iqr = f"{fmt.format(q1)}-{fmt.format(q3)}"
    return median, iqr, f"{fmt.format(min(values))}-{fmt.format(max(values))}"


def time_per_update(run: Callable[[], int], repeats: int) -> list[float]:
    """Microseconds per update over ``repeats`` runs; ``run`` returns its update count."""
    result = []
    for _ in range(repeats):
        start = time.perf_counter()
        n = run()
        result.append((time.perf_counter() - start) / n * 1e6)
    return result


def cost_runs(n: int) -> dict[str, Callable[[], int]]:
    rng = random.Random(0)
    gauss = [rng.gauss(0.0, 1.0) for _ in range(n)]
    bern = [float(rng.random() < 0.1) for _ in range(n)]
    records = [row.features for row in drifting_stream(n=n, drift_at=n, seed=0)]
    outcomes = [e == 0.0 for e in bern]

    def detector_run(kind: str) -> Callable[[], int]:
        values = bern if kind in BINARY_KINDS else gauss

        def run() -> int:
            detector = make_detector(kind)  # type: ignore[arg-type]
            for x in values:
                detector.update(x)
            return n

        return run

    def river_adwin() -> int:
        detector = drift.ADWIN()
        for x in gauss:
            detector.update(x)
        return n

    def stream_monitor() -> int:
        monitor = StreamDriftMonitor("adwin")
        for x in gauss:
            monitor.update("x0", x)
        return n

    def error_monitor() -> int:
        monitor = ErrorRateMonitor("ddm")
        for correct in outcomes:
            monitor.update("v1", correct)
        return n

    def river_hst() -> int:
        model = preprocessing.MinMaxScaler() | anomaly.HalfSpaceTrees(seed=42)
        for features in records:
            model.score_one(features)
            model.learn_one(features)
        return n

    def outlier_scorer() -> int:
        scorer = OutlierScorer()
        for i, features in enumerate(records):
            scorer.check(f"r{i}", features)
        return n

    def outlier_batches() -> int:
        scorer, keyed = OutlierScorer(), [(f"r{i}", f) for i, f in enumerate(records)]
        for start in range(0, n, 500):
            scorer.check_many(keyed[start : start + 500])
        return n

    runs = {kind: detector_run(kind) for kind in DETECTOR_KINDS}
    runs["river ADWIN, unwrapped"] = river_adwin
    runs["StreamDriftMonitor (adwin)"] = stream_monitor
    runs["ErrorRateMonitor (ddm)"] = error_monitor
    runs["river MinMaxScaler | HST, 10 trees"] = river_hst
    runs["OutlierScorer, 25 trees (3 features), one at a time"] = outlier_scorer
    runs["OutlierScorer, 25 trees, batches of 500 (the monitor role's)"] = outlier_batches
    return runs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=10, help="seeds 0..N-1")
    parser.add_argument("--repeats", type=int, default=5, help="timing repeats")
    parser.add_argument("--updates", type=int, default=20_000, help="updates per timing run")
    args = parser.parse_args()
    console = Console()

    streams = [error_stream(seed) for seed in range(args.seeds)]
    before = [1 - statistics.fmean(e[: DRIFT_AT - TRAIN_ROWS]) for e in streams]
    after = [1 - statistics.fmean(e[DRIFT_AT - TRAIN_ROWS :]) for e in streams]
    console.print(
        f"demo stream: {ROWS} rows, drift at {DRIFT_AT}, v1 trained on rows 0..{TRAIN_ROWS - 1}; "
        f"v1 accuracy {statistics.median(before):.3f} before, {statistics.median(after):.3f} "
        f"after (medians over seeds 0..{args.seeds - 1})"
    )
    table = Table(
        "detector",
        "median delay",
        "IQR",
        "range",
        "missed",
        "false alarms",
        "FA / 10k",
        title=f"drift delay on v1's error stream (outcomes), seeds 0..{args.seeds - 1}",
    )
    stable_outcomes = args.seeds * (DRIFT_AT - TRAIN_ROWS)
    for label, (factory, _) in CANDIDATES.items():
        outcome = evaluate(factory, streams)
        table.add_row(
            label,
            *spread([float(d) for d in outcome.delays]),
            f"{outcome.missed}/{args.seeds}",
            str(outcome.false_alarms),
            f"{outcome.false_alarms / stable_outcomes * 10_000:.1f}",
        )
    console.print(table)
    for label, (_, parameters) in CANDIDATES.items():
        console.print(f"  {label}: {parameters}")
    console.print(f"  FA / 10k: false alarms per 10,000 stable outcomes ({stable_outcomes} in all)")

    costs = Table(
        "what",
        "µs / update, median",
        "range",
        title=f"cost per update, {args.repeats} runs of {args.updates} updates",
    )
    for label, run in cost_runs(args.updates).items():
        median, _, rng = spread(time_per_update(run, args.repeats), "{:.2f}")
        costs.add_row(label, median, rng)
    console.print(costs)


if __name__ == "__main__":
    main()

"""A learner slower than the stream: shed records, or shed the forest first.

An offline, deterministic simulation of the learner role given a share of a
core (``--share``). What is weir's own: the learner's core,
:class:`agents.learner.OnlineLearner` with ``Settings().learner`` (kind
``arf+linear``, ``light_lag_s``, ``max_lag_s``), fed the demo's stream
(:func:`streams.synthetic.drifting_stream`: SEA 0 -> 3, noise 0.05) as served
outcomes. What is simulated: time. Outcome ``i`` is made at ``i / rate``
seconds; the learner handles them in order on a clock of its own, and each
costs what it costs on this machine (measured first: learning a record whole,
with the light members alone, or skipping it), divided by ``--share``. Its age
when handled is what the role passes as ``age_s``. Each record is answered by
the learner as it stands when the record is made (no snapshot delay; scoring
is another process, so answering costs the learner nothing).

Systems, on the same records and seeds:

* **keeps up**: a learner with a whole core to spare (no cost): the ceiling;
* **sheds records** (``WEIR_LEARNER__LIGHT_LAG_S=0``, weir before stop 41):
  more than ``max_lag_s`` behind, an outcome is skipped;
* **sheds the forest first** (the default): from ``light_lag_s`` behind, the
  regressions alone learn, until it is back within half of that.

Run: ``python bench/starved_learner.py`` (``--help`` for the options). Prints a
table; ``--csv`` keeps it. No broker, no servers: ~1-2 minutes on 2 cores.
"""

from __future__ import annotations

import argparse
import csv
import statistics
import time
from dataclasses import dataclass
from pathlib import Path

from rich.console import Console
from rich.table import Table

from agents.learner import OnlineLearner
from schemas import Outcome
from schemas.settings import LearnerSettings, Settings
from streams.synthetic import DemoRow, drifting_stream

SYSTEMS = ("keeps up", "sheds records", "sheds the forest first")


@dataclass(frozen=True)
class Costs:
    """Seconds of a core one outcome costs the learner: learnt whole, by its light members
    alone, or skipped (read and decoded only)."""

    whole: float
    light: float
    skip: float

    def shared(self, share: float) -> Costs:
        return Costs(self.whole / share, self.light / share, self.skip / share)


@dataclass
class Result:
    system: str
    whole: int
    light_only: int
    shed: int
    right: list[bool]  # the learner's answer for each record, from ``start`` on


def outcome(row: DemoRow) -> Outcome:
    return Outcome(
        record_id=f"r{row.index}",
        model="sea",
        version="1",
        output=0,
        label=row.label,
        correct=row.label == 0,
        features=row.features,
    )


def measure(settings: LearnerSettings, rows: list[DemoRow]) -> Costs:
    """What an outcome costs on this machine, decoding it from JSON included: the learner
    learning ``rows`` whole, then lightened, then skipping them (``max_lag_s`` old)."""
    encoded = [outcome(r).model_dump_json() for r in rows]
    per: list[float] = []
    for age in (0.0, settings.light_lag_s * 2, settings.max_lag_s * 2):
        learner = OnlineLearner(settings, "sea")
        t = time.perf_counter()
        for body in encoded:
            learner.learn(Outcome.model_validate_json(body), age_s=age)
        per.append((time.perf_counter() - t) / len(rows))
    return Costs(*per)


def simulate(
    system: str,
    settings: LearnerSettings,
    rows: list[DemoRow],
    costs: Costs,
    rate: float,
    start: int,
) -> Result:
    s = settings.model_copy(update={"light_lag_s": 0.0}) if system == "sheds records" else settings
    learner = OnlineLearner(s, "sea")
    est = learner.estimator
    clock, answered, right = 0.0, 0, []
    for row in rows:
        made = row.index / rate
        clock = max(clock, made)  # idle until it is made
        # records made before the learner's clock are answered by the learner as it stood
        while answered < len(rows) and rows[answered].index / rate <= clock:
            if answered >= start:
                right.append(est.predict_one(rows[answered].features) == rows[answered].label)
            answered += 1
        shed, light_only = learner.shed, learner.light_only
        learner.learn(outcome(row), age_s=clock - made)
        if system != "keeps up":
            if learner.shed > shed:
                clock += costs.skip
            elif learner.light_only > light_only:
                clock += costs.light
            else:
                clock += costs.whole
    for r in rows[max(answered, start) :]:
        right.append(est.predict_one(r.features) == r.label)
    whole = learner.learnt - learner.light_only
    return Result(system, whole, learner.light_only, learner.shed, right)


def mean(xs: list[bool]) -> float:
    return sum(xs) / len(xs) if xs else float("nan")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--records", type=int, default=12_000)
    p.add_argument("--drift-at", type=int, default=4_000)
    p.add_argument("--start", type=int, default=2_000, help="answers counted from this record")
    p.add_argument("--rate", type=float, default=400.0, help="records/s (the e2e test's)")
    p.add_argument("--share", type=float, default=0.25, help="share of a core the learner gets")
    p.add_argument("--seeds", type=int, default=3)
    p.add_argument("--csv", type=Path)
    a = p.parse_args()
    settings = Settings().learner.model_copy(update={"kind": "arf+linear", "enabled": True})
    console = Console(width=110)
    calibration = list(drifting_stream(2_000, 1_000, seed=1))
    costs = measure(settings, calibration)
    need = costs.whole * a.rate
    console.print(
        f"an outcome costs {costs.whole * 1e3:.2f} ms whole, {costs.light * 1e3:.3f} ms light, "
        f"{costs.skip * 1e3:.3f} ms skipped on this machine; at {a.rate:.0f}/s learning whole "
        f"needs {need:.2f} of a core, the learner gets {a.share:.2f} "
        f"(light_lag_s {settings.light_lag_s:g}, max_lag_s {settings.max_lag_s:g})"
    )
    shared = costs.shared(a.share)
    results: list[Result] = []
    for seed in range(1, a.seeds + 1):
        rows = list(drifting_stream(a.records, a.drift_at, seed=seed))
        for system in SYSTEMS:
            r = simulate(system, settings, rows, shared, a.rate, a.start)
            results.append(r)
            console.print(f"seed {seed}: {system} done", style="dim")
    cut = a.drift_at - a.start  # index of the drift within ``right``
    table = Table(title=f"the learner with {a.share:.2f} of a core at {a.rate:.0f} records/s")
    for col in (
        "system",
        "learnt whole",
        "light only",
        "shed",
        "before the drift",
        "first 1,000 after",
        "rest after",
    ):
        table.add_column(col, justify="left" if col == "system" else "right")
    rows_out = []
    for system in SYSTEMS:
        mine = [r for r in results if r.system == system]
        cells = {
            "system": system,
            "learnt whole": statistics.mean(r.whole for r in mine),
            "light only": statistics.mean(r.light_only for r in mine),
            "shed": statistics.mean(r.shed for r in mine),
            "before the drift": statistics.mean(mean(r.right[:cut]) for r in mine),
            "first 1,000 after": statistics.mean(mean(r.right[cut : cut + 1000]) for r in mine),
            "rest after": statistics.mean(mean(r.right[cut + 1000 :]) for r in mine),
        }
        rows_out.append(cells)
        table.add_row(
            system,
            *(f"{cells[k]:,.0f}" for k in ("learnt whole", "light only", "shed")),
            *(f"{cells[k]:.4f}" for k in ("before the drift", "first 1,000 after", "rest after")),
        )
    console.print(table)
    console.print(
        f"means over {a.seeds} seeds; answers from record {a.start}, drift at {a.drift_at}"
    )
    if a.csv:
        with a.csv.open("w", newline="") as f:
            w = csv.DictWriter(f, fieldnames=list(rows_out[0]))
            w.writeheader()
            w.writerows(rows_out)


if __name__ == "__main__":
    main()

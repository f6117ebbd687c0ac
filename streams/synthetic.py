"""Synthetic data: a seeded SEA stream with one abrupt concept drift.

The demo's records, the seed history ``weir models bootstrap`` trains version 1
on (:mod:`streams.bootstrap`), and ``weir produce``'s generated records.

river's ``SEA`` generator labels three uniform features in [0, 10] by whether
``x0 + x1`` exceeds a threshold; variant 0 uses 8 and variant 3 uses 9.5. The
stream switches from variant 0 to variant 3 at ``drift_at`` (width 1: abrupt),
so the input distribution stays the same while the concept changes — only the
labels reveal it, which is what the performance agent watches.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from dataclasses import dataclass

from river.datasets import synth

FEATURES = ("x0", "x1", "x2")


@dataclass(frozen=True)
class DemoRow:
    index: int
    features: dict[str, float]
    label: int


def drifting_stream(
    n: int, drift_at: int, *, seed: int = 42, noise: float = 0.05
) -> Iterator[DemoRow]:
    """``n`` rows; rows from ``drift_at`` on follow the new concept."""
    # An abrupt switch between two river generators. (ConceptDriftStream with
    # width=1 overflows math.exp far from the drift point in river 0.26.)
    before = synth.SEA(variant=0, noise=noise, seed=seed).take(min(n, drift_at))
    after = synth.SEA(variant=3, noise=noise, seed=seed + 1).take(max(0, n - drift_at))
    for index, (x, y) in enumerate(itertools.chain(before, after)):
        yield DemoRow(index, {f"x{k}": float(v) for k, v in x.items()}, int(y))

"""Outlier scores for records: river's half-space trees on min-max scaled features. Pure
logic.

The monitor role (``streams/roles/monitor.py``) feeds a batch of records at a
time to :class:`OutlierScorer` and turns each :class:`OutlierSignal` into an
alert. Its own module, apart from the drift detectors (:mod:`agents.detectors`),
because it builds on ``river.tree`` (and through it scipy's statistics), which
the performance role, whose detectors are drift detectors only, need not load.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from agents.halfspace import HalfSpaceForest


@dataclass(frozen=True)
class OutlierSignal:
    """One record scored above the threshold."""

    record_id: str
    score: float
    threshold: float
    records_seen: int


class OutlierScorer:
    """Half-space trees on min-max scaled features: one outlier score per record.

    ``MinMaxScaler() | HalfSpaceTrees`` as river recommends, with two choices
    measured on the demo's uniform features and on Gaussian ones:

    * the trees span ``[-limit_margin, 1 + limit_margin]`` per scaled feature,
      not river's ``[0, 1]``. With ``[0, 1]`` a record beyond the seen range
      falls into the edge cell, which holds ordinary records, and scores like
      them; with margin 1 about half the root splits lie outside the seen range, so
      it lands in an empty cell. Records far out in every feature score
      0.985 to 0.995 while ordinary ones stay below 0.945 (25 trees, height 8).
      A record far out in only one of several features is often missed: few
      splits fall on that feature.
    * ``n_trees=25`` (river: 10): ten trees put single ordinary records above
      0.95 (up to 41 per 20,000); twenty-five put none in 200,000. It costs
      about 2.5 times the time per record.

    Order per record: score, then learn. The trees learn every record; the
    scaler learns only records scoring at or below the threshold, so one wild
    value cannot stretch its all-time range and blind the scorer (with river's
    plain pipeline, after one record of 1e9 a far-out record scored 0). The
    trees score 0 during their first window, so the scaler learns all of it.
    If the data moves for good to a new range, its records are flagged until
    the trees have seen about two windows of them, then the scaler follows.

    No record is flagged during the first ``warmup`` records (default: one
    tree window, the first window scores 0 anyway).

    The trees are built on the feature names of the first record; later records
    are scored on those names only (a name they lack counts as unseen), so new
    names never add state to the scaler or the trees.
    """

    def __init__(
        self,
        *,
        threshold: float = 0.95,
        warmup: int = 250,
        seed: int = 42,
        n_trees: int = 25,
        height: int = 8,
        window_size: int = 250,
        limit_margin: float = 1.0,
    ) -> None:
        if not 0 < threshold <= 1:
            raise ValueError(f"threshold must be in (0, 1], got {threshold}")
        self.threshold = threshold
        self.warmup = warmup
        self._seed = seed
        self._n_trees = n_trees
        self._height = height
        self._window_size = window_size
        self._margin = limit_margin
        self._forest: HalfSpaceForest | None = None
        self.records_seen = 0

    def __setstate__(self, state: dict[str, Any]) -> None:
        trees = state.pop("_trees", None)  # checkpointed before the forest: river's objects
        scaler = state.pop("_scaler", None)
        names = state.pop("_names", None)
        if trees is not None and "_forest" not in state:
            names = sorted(names or (scaler.min if scaler is not None else ()))
            built = bool(trees.trees) and bool(names)
            state["_forest"] = HalfSpaceForest.restored(trees, scaler, names) if built else None
        self.__dict__.update(state)

    @property
    def names(self) -> list[str]:
        """The feature names the trees were built on (empty before the first record)."""
        return [] if self._forest is None else list(self._forest.names)

    def score(self, features: dict[str, float]) -> float:
        """Score the record (higher = more unusual, in [0, 1]), then learn it."""
        return self.score_many([features])[0]

    def score_many(self, records: Sequence[dict[str, float]]) -> list[float]:
        """:meth:`score` of each record in turn, the batch at once (the same scores). A
        batch with a record that has no feature or a non-finite one is refused whole:
        ValueError, and nothing is learnt."""
        for features in records:
            if not features:
                raise ValueError("a record needs at least one feature")
            for name, value in features.items():
                if not math.isfinite(value):
                    raise ValueError(f"feature {name!r} must be finite, got {value!r}")
        if not records:
            return []
        if self._forest is None:
            self._forest = HalfSpaceForest(
                list(records[0]),
                n_trees=self._n_trees,
                height=self._height,
                window_size=self._window_size,
                limits=(-self._margin, 1.0 + self._margin),
                seed=self._seed,
            )
        forest = self._forest
        x = np.zeros((len(records), len(forest.names)))
        present = np.zeros(x.shape, dtype=bool)
        index = forest.index
        for i, features in enumerate(records):
            for name, value in features.items():
                j = index.get(name)
                if j is not None:  # names the trees were not built on are ignored
                    x[i, j], present[i, j] = value, True
        scores = forest.score_and_learn(x, present, self.threshold)
        self.records_seen += len(records)
        return scores

    def is_outlier(self, score: float, seen: int | None = None) -> bool:
        """Whether ``score`` flags the record that was the ``seen``-th (default: the
        latest): never during the warm-up."""
        at = self.records_seen if seen is None else seen
        return at > self.warmup and score > self.threshold

    def check(self, record_id: str, features: dict[str, float]) -> OutlierSignal | None:
        """Score and learn one record; a signal when it is an outlier."""
        return self.check_many([(record_id, features)])[0]

    def check_many(
        self, records: Sequence[tuple[str, dict[str, float]]]
    ) -> list[OutlierSignal | None]:
        """:meth:`check` of each ``(record id, features)`` in turn, the batch at once."""
        seen = self.records_seen
        scores = self.score_many([features for _, features in records])
        out: list[OutlierSignal | None] = []
        for i, ((record_id, _), score) in enumerate(zip(records, scores, strict=True)):
            at = seen + i + 1  # records seen once this one was
            flagged = self.is_outlier(score, at)
            out.append(OutlierSignal(record_id, score, self.threshold, at) if flagged else None)
        return out

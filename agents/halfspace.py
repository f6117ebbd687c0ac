"""Half-space trees on min-max scaled features, a batch of records at a time.

The same model as river's ``MinMaxScaler`` feeding ``anomaly.HalfSpaceTrees``
(river builds the trees, with its random generator, so a seed gives the same
trees), with the same scores to the last bit, but kept as arrays: river walks
25 trees of height 8 twice per record in Python (score, then learn), about
70 µs a record, which capped the monitor role near 14,000 records/s on a
whole core. Here the records of a batch walk every tree together, one numpy
step per tree level.

Why a batch gives the same answer as one record at a time:

* a record's score reads only the masses of the reference window
  (``r_mass``), which change only at a window's end (every ``window_size``
  learnt records); learning adds to ``l_mass``, which a score reads only for a
  feature the record lacks;
* the scaler learns a record only when it scores at or below the threshold
  (:class:`agents.outliers.OutlierScorer`), and learning it changes the
  scaling only when one of its values lies outside the range seen so far.

So the records before the first that (a) lacks a feature, or (b) lies outside
the range and scores at or below the threshold, and before the window's end,
are scored and learnt together; that record goes alone (as river does it),
and the batch goes on after it. Past the first window such records are rare
(a new extreme of some feature).
"""

from __future__ import annotations

import math
import random
from collections.abc import Sequence
from typing import Any

import numpy as np
from river.tree.padded import PaddedBranch, make_padded_tree

PADDING = 0.15  # river's HalfSpaceTrees pads every split so


class HalfSpaceForest:
    """``n_trees`` half-space trees of ``height`` over the features ``names`` (sorted),
    each spanning ``limits`` of the scaled values, and their min-max scaler."""

    def __init__(
        self,
        names: Sequence[str],
        *,
        n_trees: int,
        height: int,
        window_size: int,
        limits: tuple[float, float],
        seed: int,
    ) -> None:
        self.names = sorted(names)
        self.index = {name: j for j, name in enumerate(self.names)}
        self.height = height
        self.window_size = window_size
        self.first_window = True
        self.counter = 0  # records learnt in the current window
        rng = random.Random(seed)
        span = dict.fromkeys(self.names, limits)
        trees = [
            make_padded_tree(
                limits=dict(span), height=height, padding=PADDING, rng=rng, r_mass=0, l_mass=0
            )
            for _ in range(n_trees)
        ]
        self._arrays(trees)
        self.low = np.full(len(self.names), math.inf)  # the scaler: range seen per feature
        self.high = np.full(len(self.names), -math.inf)

    @classmethod
    def restored(cls, trees: Any, scaler: Any, names: Sequence[str]) -> HalfSpaceForest:
        """The forest of river's ``HalfSpaceTrees`` and ``MinMaxScaler`` as they learnt
        (an outlier scorer checkpointed before this module)."""
        forest = cls.__new__(cls)
        forest.names = sorted(names)
        forest.index = {name: j for j, name in enumerate(forest.names)}
        forest.height, forest.window_size = trees.height, trees.window_size
        forest.first_window, forest.counter = trees._first_window, trees.counter
        forest._arrays(trees.trees)
        forest.low = np.array([scaler.min[n].get() for n in forest.names], dtype=float)
        forest.high = np.array([scaler.max[n].get() for n in forest.names], dtype=float)
        return forest

    def _arrays(self, trees: list[Any]) -> None:
        """The trees in heap order (node k's children are 2k + 1 and 2k + 2)."""
        nodes = 2 ** (self.height + 1) - 1
        self.feature = np.zeros((len(trees), nodes), dtype=np.intp)
        self.threshold = np.zeros((len(trees), nodes))
        self.l_mass = np.zeros((len(trees), nodes), dtype=np.int64)
        self.r_mass = np.zeros((len(trees), nodes), dtype=np.int64)
        for t, root in enumerate(trees):
            todo = [(root, 0)]
            while todo:
                node, k = todo.pop()
                self.l_mass[t, k], self.r_mass[t, k] = node.l_mass, node.r_mass
                if isinstance(node, PaddedBranch):
                    self.feature[t, k] = self.index[node.feature]
                    self.threshold[t, k] = node.threshold
                    todo += [(node.children[0], 2 * k + 1), (node.children[1], 2 * k + 2)]

    @property
    def n_trees(self) -> int:
        return int(self.feature.shape[0])

    @property
    def max_score(self) -> int:
        return self.n_trees * self.window_size * (2 ** (self.height + 1) - 1)

    def scaled(self, x: np.ndarray) -> np.ndarray:
        """``x`` (records by features) min-max scaled as river's scaler does (0 where the
        range is a point)."""
        span = self.high - self.low
        with np.errstate(invalid="ignore", divide="ignore"):
            out = (x - self.low) / span
        return np.where(span != 0, out, 0.0)

    def score_and_learn(self, x: np.ndarray, present: np.ndarray, threshold: float) -> list[float]:
        """Score each row of ``x`` (records by features; ``present`` says which values a
        record has), then learn it: the scaler only when it scored at or below
        ``threshold``, the trees always. Scores are in [0, 1], higher = more unusual."""
        scores: list[float] = []
        start = 0
        while start < len(x):
            end = min(len(x), start + self.window_size - self.counter)
            block, have = x[start:end], present[start:end]
            scaled = self.scaled(block)
            paths, sums = self._walk(scaled)
            found = self._scores(sums)
            whole = have.all(axis=1)
            outside = ((block < self.low) | (block > self.high)).any(axis=1)
            alone = ~whole | (outside & (found <= threshold))
            stop = int(np.argmax(alone)) if alone.any() else len(block)
            if stop:
                self._learn(paths[:stop])
                scores += found[:stop].tolist()
            if stop < len(block):
                scores.append(self._one(block[stop], have[stop], threshold))
                stop += 1
            start += stop
        return scores

    def _scores(self, sums: np.ndarray) -> np.ndarray:
        if self.first_window:
            return np.zeros(len(sums))
        return 1 - sums / self.max_score

    def _walk(
        self, scaled: np.ndarray, have: np.ndarray | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """Every record of ``scaled`` down every tree: the nodes it passes (records by
        trees by levels) and its summed mass score (river's ``_walk_score``: mass *
        2^depth down to the first node under a tenth of a window, that one included).
        Where ``have`` says a record lacks a feature, it follows the child that learnt
        more in this window (river's rule; exact for records not learnt in between)."""
        n, trees = len(scaled), self.n_trees
        tree = np.arange(trees)[None, :]
        rows = np.arange(n)[:, None]
        node = np.zeros((n, trees), dtype=np.intp)
        paths = np.empty((n, trees, self.height + 1), dtype=np.intp)
        total = np.zeros((n, trees))
        alive = np.ones((n, trees), dtype=bool)
        limit = 0.1 * self.window_size
        for level in range(self.height + 1):
            paths[:, :, level] = node
            mass = self.r_mass[tree, node]
            total += np.where(alive, mass * float(2**level), 0.0)
            if level == self.height:
                break
            alive &= mass >= limit
            feature = self.feature[tree, node]
            left = scaled[rows, feature] < self.threshold[tree, node]  # river: < goes left
            if have is not None:
                heavier = self.l_mass[tree, 2 * node + 1] >= self.l_mass[tree, 2 * node + 2]
                left = np.where(have[rows, feature], left, heavier)
            node = 2 * node + 2 - left
        return paths, total.sum(axis=1)

    def _learn(self, paths: np.ndarray) -> None:
        """Add the records whose ``paths`` are given to the current window."""
        trees = np.broadcast_to(np.arange(self.n_trees)[None, :, None], paths.shape)
        np.add.at(self.l_mass, (trees.ravel(), paths.ravel()), 1)
        self._count(len(paths))

    def _count(self, learnt: int) -> None:
        self.counter += learnt
        if self.counter == self.window_size:  # the window ends: it becomes the reference
            self.r_mass, self.l_mass = self.l_mass, np.zeros_like(self.l_mass)
            self.first_window = False
            self.counter = 0

    def _one(self, x: np.ndarray, have: np.ndarray, threshold: float) -> float:
        """One record as river does it: a feature it lacks follows the child that
        learnt more in this window; the scaler may learn it between score and learn."""
        _, sums = self._walk(self.scaled(x)[None], have[None])
        score = float(self._scores(sums)[0])
        if score <= threshold:
            self.low = np.where(have, np.minimum(self.low, x), self.low)
            self.high = np.where(have, np.maximum(self.high, x), self.high)
        paths, _ = self._walk(self.scaled(x)[None], have[None])
        self._learn(paths)
        return score

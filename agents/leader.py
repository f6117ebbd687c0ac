"""The online learner's default model: two river learners side by side, the leader answering.

river's adaptive random forest learns any shape of concept but adapts slowly
after a drift and spends its first thousands of records growing trees; a
logistic regression on standardised features adapts within a few hundred
records and is the better model wherever the concept is close to linear in the
features, and useless where it is not. :class:`LeaderClassifier` lets both
learn every record and answers with the one that was right more often over
the latest ``window`` records it learnt (prequential: each member's answer is
taken before it learns the record), keeping the current leader on a tie.

Measured by the adaptation benchmark (``bench/adaptation.py``, its row
``arf+linear alone``: prequential over records 2,000-13,999, 5 seeds), ARF alone
against this pair: abrupt 0.9246 -> 0.9302, gradual 0.9164 -> 0.9226, noisy
0.7692 -> 0.7813, nonlinear (not linear in the features) 0.8899 -> 0.8959,
stable 0.8874 -> 0.8885 — at ARF's cost (the regression adds ~0.01 ms a record).

A snapshot answers with the member that led when it was taken, and holds that
member only (:meth:`LeaderClassifier.serving`): while the regression leads a
snapshot is a couple of kilobytes instead of a forest of several hundred, so
the learner role can afford to publish it far more often. The whole classifier
is checkpointed apart, for the learner's own restart.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Hashable, Mapping
from typing import Any, cast

from river import base, compose, forest, linear_model, multiclass, preprocessing
from river.base.typing import ClfTarget

Features = dict[Hashable, Any]

WINDOW = 300  # latest learnt records the leader is chosen over


def scaled_linear() -> base.Classifier:
    """A logistic regression on standardised features, one per class (any label values)."""
    return cast(
        base.Classifier,
        compose.Pipeline(
            preprocessing.StandardScaler(),
            multiclass.OneVsRestClassifier(linear_model.LogisticRegression()),
        ),
    )


class LeaderClassifier(base.Classifier):
    """``members`` (name → river classifier) learning together; the leader answers."""

    def __init__(self, members: Mapping[str, base.Classifier], window: int = WINDOW) -> None:
        if not members:
            raise ValueError("a LeaderClassifier needs at least one member")
        self.members = dict(members)
        self.window = window
        self.leader = next(iter(self.members))
        self._right = dict.fromkeys(self.members, 0)  # of the latest ``window`` learnt
        self._recent: dict[str, deque[bool]] = {m: deque(maxlen=window) for m in self.members}
        self._answered: tuple[Features, dict[str, Any]] | None = None  # (x, answers) of predict_one

    @classmethod
    def arf_and_linear(cls, seed: int, window: int = WINDOW) -> LeaderClassifier:
        """ARF (river's defaults, ``seed``) and :func:`scaled_linear`, ARF leading first."""
        return cls({"arf": forest.ARFClassifier(seed=seed), "linear": scaled_linear()}, window)

    @property
    def _multiclass(self) -> bool:
        return True

    def predict_one(self, x: Features, **kwargs: Any) -> Any:
        answer = self.members[self.leader].predict_one(x)
        self._answered = (x, {self.leader: answer})  # learn_one on the same x reuses it
        return answer

    def predict_proba_one(self, x: Features, **kwargs: Any) -> dict[ClfTarget, float]:
        return self.members[self.leader].predict_proba_one(x)

    def learn_one(self, x: Features, y: ClfTarget, **kwargs: Any) -> None:
        answered, self._answered = self._answered, None
        known = answered[1] if answered is not None and answered[0] is x else {}
        for name, model in self.members.items():
            answer = known[name] if name in known else model.predict_one(x)
            recent, right = self._recent[name], answer == y
            if len(recent) == recent.maxlen:
                self._right[name] -= recent[0]
            recent.append(right)
            self._right[name] += right
            model.learn_one(x, y)
        best = max(self._right.values())
        if self._right[self.leader] < best:
            self.leader = next(n for n, r in self._right.items() if r == best)

    def around(self, name: str, member: base.Classifier) -> LeaderClassifier:
        """This classifier with ``member`` in place of its member ``name``, leading: a
        restart from a snapshot (which holds only the member that led) goes on with that
        member as it was and the others fresh. Returns itself."""
        if name not in self.members:
            raise ValueError(f"no member {name!r} (members: {', '.join(self.members)})")
        self.members[name] = member
        self.leader = name
        return self

    def serving(self) -> base.Classifier:
        """What a snapshot holds: the member that leads, which answers as this would."""
        return self.members[self.leader]

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["_answered"] = None  # a snapshot keeps no record
        return state

    def describe(self) -> dict[str, str | float | int]:
        """For a model card: the members, the leader, and the share of the latest records
        each was right on."""
        out: dict[str, str | float | int] = {
            "members": ",".join(self.members),
            "leader": self.leader,
            "window": self.window,
        }
        for n in self.members:
            out[f"right_{n}"] = self._right[n] / max(1, len(self._recent[n]))
        return out

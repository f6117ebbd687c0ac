"""The online learner's default model: river learners side by side, the leader answering.

river's adaptive random forest learns any shape of concept but adapts slowly
after a drift and spends its first thousands of records growing trees; a
logistic regression on standardised features adapts within a few hundred
records and is the better model wherever the concept is close to linear in the
features, and useless where it is not. :class:`LeaderClassifier` lets its
members learn every record and answers with the one that was right more often
over the latest ``window`` records it learnt (prequential: each member's answer
is taken before it learns the record), keeping the current leader on a tie.

The default (:meth:`LeaderClassifier.arf_and_linear`) holds two regressions:
``linear`` steps with a constant rate (SGD, 0.01), so it follows any change of
the rule within a few hundred records but its weights never stop jittering;
``steady`` steps with AdaGrad, whose rate shrinks as it learns, so on a stable
concept it settles closer to the best line (the stable stream of the adaptation
benchmark, records 2,000-39,999, 5 seeds: 0.8919 against SGD's 0.8885 and the
forest's 0.8918) but after a change of the weights it stays wrong for thousands
of records. So ``steady`` is *renewed against* ``linear``: once it trails
``linear`` by more than ``RENEW_GAP`` of a full window (the rule changed and
only the constant rate followed) it is replaced by a fresh copy, which learns
the new rule at AdaGrad's full rate. Against ``linear`` rather than the leader:
where no line fits (the forest leads) both regressions trail alike, and a
fresh copy would be no better.

Measured by the adaptation benchmark (``bench/adaptation.py``, its row
``arf+linear alone``: prequential over records 2,000-13,999, 5 seeds), ARF alone
against the three: abrupt 0.9246 -> 0.9311, gradual 0.9164 -> 0.9235, noisy
0.7692 -> 0.7834, nonlinear (not linear in the features) 0.8899 -> 0.8961,
stable 0.8874 -> 0.8896 — at ARF's cost (each regression adds ~0.01 ms a record).

A snapshot answers with the member that led when it was taken, and holds that
member only (:meth:`LeaderClassifier.serving`): while a regression leads a
snapshot is a couple of kilobytes (1.7 KB, 1.9 KB with AdaGrad's sums) instead
of a forest of several hundred, so
the learner role can afford to publish it far more often. The whole classifier
is checkpointed apart, for the learner's own restart.

**A learner behind the stream sheds the forest first** (:meth:`LeaderClassifier.lighten`):
an outcome costs the learner ~1 ms with the forest, ~0.07 ms with the two regressions
alone, decoding included (``bench/starved_learner.py``). While the learner
role is behind (``WEIR_LEARNER__LIGHT_LAG_S``), the ``costly`` members neither learn
nor answer and a light member leads, so every outcome still teaches the regressions
instead of a forest learning a quarter of them (on a 2-core machine kept busy by a
CPU hog, the learner learnt 2,993 of 12,400 outcomes and served 0.87-0.89 for the
first thousand records it served). A costly member's record of being right is
cleared when it stops: once it learns again it has to earn the lead over records
it learnt, not over records from before a drift it did not see.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Hashable, Mapping
from typing import Any, cast

from river import base, compose, forest, linear_model, multiclass, optim, preprocessing
from river.base.typing import ClfTarget

Features = dict[Hashable, Any]

WINDOW = 300  # latest learnt records the leader is chosen over
RENEW_GAP = 0.2  # a renewed member this share of a window behind its reference starts afresh


def scaled_linear(optimizer: optim.base.Optimizer | None = None) -> base.Classifier:
    """A logistic regression on standardised features, one per class (any label values);
    its weights stepped by ``optimizer`` (river's default: SGD, 0.01)."""
    return cast(
        base.Classifier,
        compose.Pipeline(
            preprocessing.StandardScaler(),
            multiclass.OneVsRestClassifier(linear_model.LogisticRegression(optimizer=optimizer)),
        ),
    )


class LeaderClassifier(base.Classifier):
    """``members`` (name → river classifier) learning together; the leader answers.

    ``renew`` maps a member to its reference: when both have a full window and the
    member trails its reference by more than ``RENEW_GAP`` of it, the member is
    replaced by a fresh copy (``clone()``). ``costly`` names the members a learner
    behind the stream stops first (:meth:`lighten`); at least one member is not."""

    def __init__(
        self,
        members: Mapping[str, base.Classifier],
        window: int = WINDOW,
        renew: Mapping[str, str] | None = None,
        costly: frozenset[str] = frozenset(),
    ) -> None:
        if not members:
            raise ValueError("a LeaderClassifier needs at least one member")
        self.members = dict(members)
        self.window = window
        self.renew = dict(renew or {})
        if unknown := (set(self.renew) | set(self.renew.values()) | costly) - set(self.members):
            raise ValueError(f"renew or costly names {sorted(unknown)}, not members")
        if costly >= set(self.members):
            raise ValueError("a LeaderClassifier needs a member that is not costly")
        self.costly = costly
        self.lightened = False  # the costly members neither learn nor answer (lighten)
        self.renewed = dict.fromkeys(self.renew, 0)  # fresh copies made of each
        self.leader = next(iter(self.members))
        self._right = dict.fromkeys(self.members, 0)  # of the latest ``window`` learnt
        self._recent: dict[str, deque[bool]] = {m: deque(maxlen=window) for m in self.members}
        self._answered: tuple[Features, dict[str, Any]] | None = None  # (x, answers) of predict_one

    @classmethod
    def arf_and_linear(cls, seed: int, window: int = WINDOW) -> LeaderClassifier:
        """ARF (river's defaults, ``seed``), :func:`scaled_linear` (``linear``) and
        :func:`scaled_linear` stepped by AdaGrad (``steady``, renewed against ``linear``);
        ARF leading first."""
        return cls(
            {
                "arf": forest.ARFClassifier(seed=seed),
                "linear": scaled_linear(),
                "steady": scaled_linear(optim.AdaGrad(lr=0.1)),
            },
            window,
            renew={"steady": "linear"},
            costly=frozenset({"arf"}),
        )

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
            if self.lightened and name in self.costly:
                continue
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
        for name, reference in self.renew.items():
            recent, full = self._recent[name], self.window
            if (
                len(recent) == full
                and len(self._recent[reference]) == full
                and self._right[reference] - self._right[name] > RENEW_GAP * full
            ):
                self.members[name] = self.members[name].clone()
                recent.clear()
                self._right[name] = 0
                self.renewed[name] += 1

    def lighten(self, light: bool) -> None:
        """While ``light``, the ``costly`` members neither learn nor answer: a light member
        leads. Their records of being right are cleared as they stop, so that, learning
        again, they earn the lead on records they learnt."""
        if light and not self.lightened:
            for name in self.costly:
                self._recent[name].clear()
                self._right[name] = 0
            if self.leader in self.costly:
                self.leader = max(
                    (n for n in self.members if n not in self.costly), key=self._right.__getitem__
                )
        self.lightened = light

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

    def __setstate__(self, state: dict[str, Any]) -> None:
        # a state saved by an older weir renews no member and sheds none
        defaults = {"renew": {}, "renewed": {}, "costly": frozenset(), "lightened": False}
        self.__dict__.update({**defaults, **state})

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
        for n in self.renew:
            out[f"renewed_{n}"] = self.renewed[n]
        return out

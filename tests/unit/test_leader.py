"""The online learner's default model: members learning, the one right more often answering."""

from __future__ import annotations

import pickle
import random
from collections.abc import Hashable
from typing import Any

import pytest
from river import base

from agents.leader import LeaderClassifier
from agents.learner import new_estimator


class Fixed(base.Classifier):
    """A member that always answers ``answer`` and counts what it is asked."""

    def __init__(self, answer: int) -> None:
        self.answer = answer
        self.predicted = 0
        self.learnt: list[Any] = []

    def predict_one(self, x: dict[Hashable, Any], **kwargs: Any) -> Any:
        self.predicted += 1
        return self.answer

    def predict_proba_one(self, x: dict[Hashable, Any], **kwargs: Any) -> dict[Any, float]:
        return {self.answer: 1.0}

    def learn_one(self, x: dict[Hashable, Any], y: Any, **kwargs: Any) -> None:
        self.learnt.append(y)


def teach(model: LeaderClassifier, labels: list[Any]) -> list[Any]:
    """Predict, then learn, each label (as the learner does); the answers given."""
    answers = []
    for y in labels:
        x: dict[Hashable, Any] = {"a": 0.0}
        answers.append(model.predict_one(x))
        model.learn_one(x, y)
    return answers


def test_the_member_right_more_often_over_the_window_answers() -> None:
    zero, one = Fixed(0), Fixed(1)
    model = LeaderClassifier({"zero": zero, "one": one}, window=10)
    answers = teach(model, [0] * 10 + [1] * 6)
    assert model.leader == "one"
    assert answers[:16] == [0] * 16  # "one" led after its 6th right, once "zero" had 4 of 10
    assert teach(model, [1]) == [1]
    assert zero.learnt == one.learnt == [0] * 10 + [1] * 7  # every member learns every record


def test_a_tie_keeps_the_leader() -> None:
    model = LeaderClassifier({"zero": Fixed(0), "one": Fixed(1)}, window=10)
    teach(model, [0] * 5 + [1] * 5)  # 5 right each
    assert model.leader == "zero"
    teach(model, [1])
    assert model.leader == "one"


def test_learning_after_predicting_asks_each_member_once() -> None:
    zero, one = Fixed(0), Fixed(1)
    model = LeaderClassifier({"zero": zero, "one": one})
    teach(model, [0, 1, 0])
    assert (zero.predicted, one.predicted) == (3, 3)
    model.learn_one({"a": 1.0}, 0)  # not predicted first: every member is asked
    assert (zero.predicted, one.predicted) == (4, 4)


def test_it_needs_a_member() -> None:
    with pytest.raises(ValueError, match="at least one member"):
        LeaderClassifier({})


def linear_stream(n: int, seed: int, flip_at: int) -> list[tuple[dict[Hashable, Any], str]]:
    """Labels "yes"/"no" by a linear rule on unscaled features, the rule flipped at ``flip_at``."""
    rnd = random.Random(seed)
    rows = []
    for i in range(n):
        x: dict[Hashable, Any] = {"a": rnd.uniform(0, 10), "b": rnd.uniform(0, 1000)}
        above = x["a"] * 100 + x["b"] > 1000
        rows.append((x, "yes" if above != (i >= flip_at) else "no"))
    return rows


def test_arf_and_linear_learns_any_labels_and_follows_a_flipped_linear_rule() -> None:
    model = new_estimator("arf+linear", seed=3)
    assert isinstance(model, LeaderClassifier)
    right = []
    for x, y in linear_stream(3000, seed=1, flip_at=1500):
        right.append(model.predict_one(x) == y)
        model.learn_one(x, y)
    assert sum(right[1000:1500]) / 500 > 0.9
    assert sum(right[2500:]) / 500 > 0.9  # recovered after the flip
    assert model.leader in ("linear", "steady")  # the rule is linear: a regression leads
    card = model.describe()
    assert (card["members"], card["window"]) == ("arf,linear,steady", 300)
    assert card["leader"] == model.leader
    assert float(card[f"right_{model.leader}"]) > 0.9
    # the AdaGrad regression's rate had shrunk by the flip: it was started afresh, once
    assert card["renewed_steady"] == 1 and model.renewed["steady"] == 1


def test_a_member_trailing_its_reference_starts_afresh_and_one_trailing_alike_does_not() -> None:
    model = LeaderClassifier(
        {"zero": Fixed(0), "one": Fixed(1), "also_zero": Fixed(0)},
        window=10,
        renew={"also_zero": "zero", "one": "also_zero"},
    )
    before = model.members["one"]
    teach(model, [0] * 9)
    assert model.renewed == {"one": 0, "also_zero": 0}  # windows not full yet
    teach(model, [0])  # full windows: "one" trails "also_zero" by 10 of 10
    assert model.members["one"] is not before and model.renewed["one"] == 1
    assert model.members["one"].learnt == []  # a fresh copy, of the same kind and answer
    assert model.predict_one({"a": 0.0}) == 0 and model.members["one"].answer == 1
    teach(model, [0] * 9)
    assert model.renewed["one"] == 1  # its fresh window is not full yet
    assert model.renewed["also_zero"] == 0  # it trails nobody: right as often as "zero"
    assert model.describe()["renewed_one"] == 1


def test_renew_names_members_only() -> None:
    with pytest.raises(ValueError, match="renew or costly names"):
        LeaderClassifier({"zero": Fixed(0)}, renew={"zero": "gbm"})
    with pytest.raises(ValueError, match="renew or costly names"):
        LeaderClassifier({"zero": Fixed(0)}, costly=frozenset({"gbm"}))
    with pytest.raises(ValueError, match="not costly"):
        LeaderClassifier({"zero": Fixed(0)}, costly=frozenset({"zero"}))


def test_lightened_the_costly_members_neither_learn_nor_answer_and_earn_the_lead_again() -> None:
    costly, cheap = Fixed(1), Fixed(0)
    model = LeaderClassifier(
        {"costly": costly, "cheap": cheap}, window=10, costly=frozenset({"costly"})
    )
    teach(model, [1] * 10)
    assert model.leader == "costly"
    model.lighten(True)
    assert model.leader == "cheap", "a light member leads at once"
    asked = costly.predicted
    assert teach(model, [1] * 5) == [0] * 5, "the light member answers, right or not"
    assert costly.predicted == asked and costly.learnt == [1] * 10, "the costly one sheds them"
    assert cheap.learnt == [1] * 15
    model.lighten(False)
    # its ten right answers from before were cleared: it leads once it is right more often
    # than "cheap" on the latest records, not at once on its old record
    answers = teach(model, [1])
    assert answers == [0] and model.leader == "costly"
    assert costly.learnt == [1] * 11
    assert model.describe()["right_costly"] == 1.0


def test_arf_and_linear_sheds_the_forest_and_a_regression_follows_a_flip_alone() -> None:
    model = new_estimator("arf+linear", seed=3)
    assert model.costly == {"arf"}
    rows = linear_stream(3000, seed=1, flip_at=1500)
    for x, y in rows[:1500]:
        model.predict_one(x)
        model.learn_one(x, y)
    forest = pickle.dumps(model.members["arf"])
    model.lighten(True)
    right = []
    for x, y in rows[1500:]:
        right.append(model.predict_one(x) == y)
        model.learn_one(x, y)
    assert pickle.dumps(model.members["arf"]) == forest, "the forest learnt nothing"
    assert model.leader in ("linear", "steady") and sum(right[1000:]) / 500 > 0.9


def test_a_state_saved_before_renewing_existed_loads_and_learns() -> None:
    model = LeaderClassifier({"zero": Fixed(0), "one": Fixed(1)}, window=10)
    state = model.__getstate__()
    del state["renew"], state["renewed"], state["costly"], state["lightened"]
    old = LeaderClassifier.__new__(LeaderClassifier)
    old.__setstate__(state)
    teach(old, [1] * 12)
    assert old.leader == "one" and old.renew == {} and old.costly == frozenset()
    assert "renewed_zero" not in old.describe()


def test_a_snapshot_answers_as_the_learner_did_with_its_leader() -> None:
    model = new_estimator("arf+linear", seed=3)
    rows = linear_stream(1200, seed=2, flip_at=10_000)
    for x, y in rows[:1000]:
        model.predict_one(x)
        model.learn_one(x, y)
    snapshot = pickle.loads(pickle.dumps(model))
    assert snapshot.leader == model.leader
    for x, _ in rows[1000:]:
        assert snapshot.predict_one(x) == model.predict_one(x)
        assert snapshot.predict_proba_one(x) == model.predict_proba_one(x)


def test_serving_is_the_member_that_leads() -> None:
    zero, one = Fixed(0), Fixed(1)
    model = LeaderClassifier({"zero": zero, "one": one}, window=10)
    assert model.serving() is zero
    teach(model, [1] * 5)
    assert model.leader == "one" and model.serving() is one


def test_a_member_put_back_leads_and_the_others_start_fresh():
    from river import tree

    pair = LeaderClassifier.arf_and_linear(seed=1)
    member = tree.HoeffdingTreeClassifier()
    assert pair.around("linear", member) is pair
    assert pair.leader == "linear" and pair.members["linear"] is member
    with pytest.raises(ValueError, match="no member 'gbm'"):
        pair.around("gbm", member)

"""Registry models of both frameworks predict batches the same way."""

from __future__ import annotations

from datetime import UTC, datetime

import numpy as np
import pytest
from river import linear_model, preprocessing
from sklearn.base import BaseEstimator, ClassifierMixin, clone
from sklearn.ensemble import HistGradientBoostingClassifier, RandomForestClassifier
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from connectors.predictor import predict_batch, rows_from_features, score_batch
from connectors.registry import LoadedModel
from schemas.model_card import ModelCard

FEATURES = ["a", "b"]


def card(framework: str) -> ModelCard:
    return ModelCard(
        name="m", version="1", framework=framework, features=FEATURES, created_at=datetime.now(UTC)
    )


def data() -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    x = rng.normal(size=(400, 2))
    return x, (x[:, 0] + x[:, 1] > 0).astype(int)


def test_sklearn_batch_labels_and_probabilities():
    x, y = data()
    model = LoadedModel(card("sklearn"), LogisticRegression().fit(x, y))
    labels, probs = predict_batch(model, x[:50])
    assert np.mean(np.array(labels) == y[:50]) > 0.9
    assert probs is not None and set(probs[0]) == {"0", "1"}
    assert all(isinstance(v, int) for v in labels)


def test_river_batch_labels_and_probabilities():
    x, y = data()
    est = preprocessing.StandardScaler() | linear_model.LogisticRegression()
    for row, target in zip(x, y, strict=True):
        est.learn_one(dict(zip(FEATURES, row, strict=True)), bool(target))
    labels, probs = predict_batch(LoadedModel(card("river"), est), x[:50])
    assert np.mean(np.array(labels) == y[:50]) > 0.85
    assert probs is not None and len(probs) == 50


def test_wrong_width_names_the_expected_features():
    x, y = data()
    model = LoadedModel(card("sklearn"), LogisticRegression().fit(x, y))
    with pytest.raises(ValueError, match=r"2 features \['a', 'b'\], got shape \[3, 3\]"):
        predict_batch(model, np.zeros((3, 3)))


def test_rows_from_features_orders_and_checks():
    rows = rows_from_features(FEATURES, [{"b": 2.0, "a": 1.0}, {"a": 3.0, "b": 4.0, "c": 9.0}])
    assert rows.tolist() == [[1.0, 2.0], [3.0, 4.0]]
    with pytest.raises(ValueError, match="record 0 lacks feature 'b'"):
        rows_from_features(FEATURES, [{"a": 1.0}])


def _three_classes() -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(1)
    x = rng.normal(size=(600, 2))
    return x, np.digitize(x[:, 0] + 0.5 * x[:, 1], [-0.5, 0.5])


@pytest.mark.parametrize(
    "estimator",
    [
        LogisticRegression(),
        make_pipeline(StandardScaler(), LogisticRegression()),
        HistGradientBoostingClassifier(max_iter=20, random_state=0),
        RandomForestClassifier(n_estimators=5, random_state=0),
    ],
    ids=["logistic", "scaled-logistic", "hist-gradient-boosting", "random-forest"],
)
@pytest.mark.parametrize("classes", [2, 3])
def test_one_pass_labels_are_what_predict_says(estimator: object, classes: int) -> None:
    """For these classifiers the labels come from the probability table (one pass), and
    they must be exactly what their own ``predict`` answers, ties and all."""
    x, y = data() if classes == 2 else _three_classes()
    est = clone(estimator).fit(x, y)
    rows = np.vstack([x[:200], np.zeros((3, 2))])  # on the boundary too
    labels, names, table = score_batch(LoadedModel(card("sklearn"), est), rows)
    assert labels == est.predict(rows).tolist()
    assert names == [str(c) for c in est.classes_]
    assert table is not None and table.shape == (len(rows), classes)
    assert np.allclose(table, est.predict_proba(rows))


class Contrary(ClassifierMixin, BaseEstimator):
    """A classifier whose predict disagrees with its probabilities (as SVC's may)."""

    def fit(self, x: np.ndarray, y: np.ndarray) -> Contrary:
        self.classes_ = np.unique(y)
        return self

    def predict(self, x: np.ndarray) -> np.ndarray:
        return np.full(len(x), self.classes_[0])

    def predict_proba(self, x: np.ndarray) -> np.ndarray:
        return np.tile([0.1, 0.9], (len(x), 1))


def test_other_classifiers_are_asked_for_their_labels() -> None:
    x, y = data()
    labels, probs = predict_batch(LoadedModel(card("sklearn"), Contrary().fit(x, y)), x[:4])
    assert labels == [0, 0, 0, 0]
    assert probs == [{"0": 0.1, "1": 0.9}] * 4


def test_river_rows_share_one_set_of_classes() -> None:
    class Partial:
        """Answers with only the classes it has seen so far, as river's models do."""

        def __init__(self) -> None:
            self.n = 0

        def predict_one(self, _x: dict[str, float]) -> bool:
            return True

        def predict_proba_one(self, _x: dict[str, float]) -> dict[object, float]:
            self.n += 1
            return {True: 1.0} if self.n == 1 else {True: 0.4, False: 0.6}

    labels, names, table = score_batch(LoadedModel(card("river"), Partial()), np.zeros((2, 2)))
    assert labels == [1, 1]
    assert names == ["True", "False"]
    assert table is not None and table.tolist() == [[1.0, 0.0], [0.4, 0.6]]

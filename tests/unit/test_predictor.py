"""Registry models of both frameworks predict batches the same way."""

from __future__ import annotations

from datetime import UTC, datetime

import numpy as np
import pytest
from river import linear_model, preprocessing
from sklearn.linear_model import LogisticRegression

from connectors.predictor import predict_batch, rows_from_features
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

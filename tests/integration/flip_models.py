"""Test models whose outputs tell which version scored a record."""

from __future__ import annotations

from datetime import UTC, datetime

import numpy as np
from sklearn.linear_model import LogisticRegression

from connectors.registry import ModelRegistry
from schemas.model_card import ModelCard
from schemas.settings import Settings

FEATURES = ["a", "b"]


def publish_flip_models(settings: Settings, model: str) -> None:
    """v1 predicts a > 0, v2 predicts a < 0: an output tells which version scored it."""
    rng = np.random.default_rng(3)
    x = rng.normal(size=(400, 2))
    registry = ModelRegistry.for_settings(settings)
    for version, y in (("1", x[:, 0] > 0), ("2", x[:, 0] < 0)):
        card = ModelCard(
            name=model,
            version=version,
            framework="sklearn",
            features=FEATURES,
            classes=[0, 1],
            created_at=datetime.now(UTC),
        )
        registry.publish(card, LogisticRegression().fit(x, y.astype(int)))


def expected_output(version: str, a: float) -> int:
    return int(a > 0) if version == "1" else int(a < 0)

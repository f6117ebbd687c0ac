"""Running a registry model on a batch of rows, whatever its framework."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from connectors.registry import LoadedModel


def _plain(value: Any) -> int | float | str:
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, bool):
        return int(value)
    if isinstance(value, int | float | str):
        return value
    return str(value)


def predict_batch(
    model: LoadedModel, rows: np.ndarray
) -> tuple[list[int | float | str], list[dict[str, float]] | None]:
    """Labels for ``rows`` (shape n x len(features)), and class probabilities if known."""
    if rows.ndim != 2 or rows.shape[1] != len(model.card.features):
        raise ValueError(
            f"expected rows of {len(model.card.features)} features "
            f"{model.card.features}, got shape {list(rows.shape)}"
        )
    est = model.estimator
    if model.card.framework == "sklearn":
        labels = [_plain(v) for v in est.predict(rows)]
        probs = None
        if hasattr(est, "predict_proba"):
            classes = [str(_plain(c)) for c in est.classes_]
            probs = [
                dict(zip(classes, map(float, p), strict=True)) for p in est.predict_proba(rows)
            ]
        return labels, probs
    dicts = [dict(zip(model.card.features, map(float, r), strict=True)) for r in rows]
    labels = [_plain(est.predict_one(x)) for x in dicts]
    probs_river: list[dict[str, float]] = [
        {str(k): float(v) for k, v in est.predict_proba_one(x).items()} for x in dicts
    ]
    return labels, probs_river


def rows_from_features(features: Sequence[str], records: Sequence[dict[str, float]]) -> np.ndarray:
    """Order feature dicts into a matrix; a missing feature is a ValueError naming it."""
    out = np.empty((len(records), len(features)), dtype=np.float64)
    for i, rec in enumerate(records):
        for j, name in enumerate(features):
            try:
                out[i, j] = rec[name]
            except KeyError:
                raise ValueError(f"record {i} lacks feature {name!r}") from None
    return out

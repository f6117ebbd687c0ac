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


# Classifiers whose ``predict`` is the class of the largest ``predict_proba`` column,
# exactly (sklearn's own implementation, or a monotone map of the same decision
# values): for them one pass gives both. Any other estimator is asked both.
_ARGMAX_CLASSIFIERS = (
    "DecisionTreeClassifier",
    "ExtraTreeClassifier",
    "ExtraTreesClassifier",
    "GaussianNB",
    "HistGradientBoostingClassifier",
    "LogisticRegression",
    "RandomForestClassifier",
)


def _final_step(est: Any) -> Any:
    steps = getattr(est, "steps", None)  # a sklearn Pipeline: its last step decides
    return steps[-1][1] if steps else est


def _labels(values: Any) -> list[int | float | str]:
    arr = np.asarray(values)
    if arr.dtype.kind in "iuf":
        return arr.tolist()
    if arr.dtype.kind == "b":
        return arr.astype(np.int64).tolist()
    return [_plain(v) for v in arr]


def score_batch(
    model: LoadedModel, rows: np.ndarray
) -> tuple[list[int | float | str], list[str] | None, np.ndarray | None]:
    """Labels for ``rows`` (shape n x len(features)), and the class probabilities as a
    table (one row per record, one column per class of ``classes``) if known."""
    if rows.ndim != 2 or rows.shape[1] != len(model.card.features):
        raise ValueError(
            f"expected rows of {len(model.card.features)} features "
            f"{model.card.features}, got shape {list(rows.shape)}"
        )
    est = model.estimator
    if model.card.framework == "sklearn":
        if not hasattr(est, "predict_proba"):
            return _labels(est.predict(rows)), None, None
        classes = [str(_plain(c)) for c in est.classes_]
        table = np.asarray(est.predict_proba(rows), dtype=np.float64)
        if type(_final_step(est)).__name__ in _ARGMAX_CLASSIFIERS:
            labels = _labels(np.asarray(est.classes_)[table.argmax(axis=1)])
        else:
            labels = _labels(est.predict(rows))
        return labels, classes, table
    dicts = [dict(zip(model.card.features, map(float, r), strict=True)) for r in rows]
    labels = [_plain(est.predict_one(x)) for x in dicts]
    probs = [est.predict_proba_one(x) for x in dicts]
    seen = list(dict.fromkeys(k for p in probs for k in p))  # a row may lack a class
    table = np.array([[float(p.get(k, 0.0)) for k in seen] for p in probs], dtype=np.float64)
    return labels, [str(k) for k in seen], table.reshape(len(probs), len(seen))


def predict_batch(
    model: LoadedModel, rows: np.ndarray
) -> tuple[list[int | float | str], list[dict[str, float]] | None]:
    """Labels for ``rows`` (shape n x len(features)), and class probabilities if known."""
    labels, classes, table = score_batch(model, rows)
    if classes is None or table is None:
        return labels, None
    return labels, [dict(zip(classes, row, strict=True)) for row in table.tolist()]


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

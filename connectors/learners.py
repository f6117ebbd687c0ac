"""Fitting a candidate model and judging it against the current one.

Shared by the retraining pipeline's components (they import it inside their
bodies, as they import the rest of weir) and by ``bench/adaptation.py``, so the
benchmark measures the loop's own learner and promotion rule.

:func:`fit_candidate` picks among a few model families by validation on the
newest part of the training rows (the rows are in time order, as the archive
keeps them): logistic regression on standardised features (it converges,
unlike on raw features of very different scales) and a histogram
gradient-boosting classifier (for concepts that are not linear in the
features). Ties go to the simpler family. The chosen one is refitted on every
training row; its family, hyperparameters and validation scores go in the
model card.

:func:`paired_test` is McNemar's exact test on the rows both models predicted,
and :func:`promotion` the rule: a candidate replaces the current version only
if it adds ``min_gain`` accuracy and the test shows it better at ``max_p``.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from sklearn.base import ClassifierMixin, clone
from sklearn.ensemble import HistGradientBoostingClassifier
from sklearn.exceptions import ConvergenceWarning
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import Pipeline, make_pipeline
from sklearn.preprocessing import StandardScaler

from connectors.mcnemar import paired_test, promotion

__all__ = ["Fitted", "families", "fit_candidate", "paired_test", "promotion"]

VALIDATION_FRACTION = 0.2  # newest share of the training rows that picks the family
MIN_VALIDATION_ROWS = 50  # fewer: no choice is made, logistic regression is fitted


def families(seed: int = 0) -> dict[str, Pipeline | HistGradientBoostingClassifier]:
    """The model families a candidate is chosen from, simplest first (ties go to it)."""
    return {
        "logistic-regression": make_pipeline(
            StandardScaler(), LogisticRegression(C=1.0, max_iter=1000)
        ),
        "hist-gradient-boosting": HistGradientBoostingClassifier(
            max_iter=100, learning_rate=0.1, early_stopping=False, random_state=seed
        ),
    }


@dataclass(frozen=True)
class Fitted:
    estimator: Any
    family: str
    params: dict[str, Any]
    validation: dict[str, float] = field(default_factory=dict)  # family → accuracy

    @property
    def card_entry(self) -> dict[str, Any]:
        """What the model card records about the learner."""
        return {
            "family": self.family,
            **{f"param.{k}": v for k, v in sorted(self.params.items())},
            **{f"validation.{k}": round(v, 6) for k, v in sorted(self.validation.items())},
        }


def _params(family: str, estimator: Any) -> dict[str, Any]:
    model = estimator.steps[-1][1] if isinstance(estimator, Pipeline) else estimator
    keep = {
        "logistic-regression": ("C", "max_iter", "penalty"),
        "hist-gradient-boosting": ("max_iter", "learning_rate", "max_leaf_nodes", "max_depth"),
    }[family]
    params = model.get_params()
    scaled = {"scaled": True} if isinstance(estimator, Pipeline) else {}
    return {**scaled, **{k: params[k] for k in keep}}


def _fit(estimator: ClassifierMixin, x: np.ndarray, y: Sequence[Any]) -> ClassifierMixin:
    """Fit; a fit that does not converge raises (so it is not chosen) instead of warning."""
    with warnings.catch_warnings():
        warnings.simplefilter("error", ConvergenceWarning)
        return estimator.fit(x, y)


def fit_candidate(x: np.ndarray, y: Sequence[Any], *, seed: int = 0) -> Fitted:
    """The best family on the newest rows of ``x`` (time order), refitted on all of them."""
    labels = list(y)
    options = families(seed)
    n_val = int(len(labels) * VALIDATION_FRACTION)
    early = labels[: len(labels) - n_val]
    scores: dict[str, float] = {}
    if n_val >= MIN_VALIDATION_ROWS and len(set(early)) > 1:
        x_fit, x_val = x[: len(labels) - n_val], x[len(labels) - n_val :]
        y_val = np.asarray(labels[len(labels) - n_val :], dtype=object)
        for name, estimator in options.items():
            try:
                fitted = _fit(clone(estimator), x_fit, early)
            except (ConvergenceWarning, ValueError):
                continue
            scores[name] = float(np.mean(np.asarray(fitted.predict(x_val), dtype=object) == y_val))
    best = max(scores, key=lambda n: (scores[n], -list(options).index(n)), default=None)
    family = best or "logistic-regression"
    estimator = clone(options[family]).fit(x, labels)
    return Fitted(estimator, family, _params(family, estimator), scores)


MIN_ANSWERED = 50  # held-out rows an online learner served that make a comparison with it

"""The pipeline's learner and promotion rule (connectors/learners.py)."""

from __future__ import annotations

import json
import math
import warnings
from datetime import UTC, datetime

import numpy as np
import pytest
from sklearn.exceptions import ConvergenceWarning

from connectors.learners import fit_candidate, paired_test, promotion
from connectors.mcnemar import mcnemar_p
from schemas.model_card import ModelCard


def test_a_concept_that_is_not_linear_gets_gradient_boosting():
    rng = np.random.default_rng(0)
    x = rng.uniform(-1, 1, size=(1500, 2))
    y = ((x[:, 0] * x[:, 1]) > 0).astype(int)  # XOR of the signs: no line separates it
    fitted = fit_candidate(x, list(y))
    assert fitted.family == "hist-gradient-boosting"
    assert fitted.validation["hist-gradient-boosting"] > 0.9
    assert fitted.validation["logistic-regression"] < 0.7
    assert np.mean(fitted.estimator.predict(x) == y) > 0.9
    entry = fitted.card_entry
    assert entry["family"] == "hist-gradient-boosting" and entry["param.max_iter"] == 100


def test_features_of_very_different_scales_fit_linear_without_convergence_warnings():
    rng = np.random.default_rng(1)
    x = np.column_stack([rng.normal(0, 1e4, 1200), rng.normal(0, 1e-3, 1200)])
    y = (x[:, 0] / 1e4 + x[:, 1] / 1e-3 > 0).astype(int)
    with warnings.catch_warnings():
        warnings.simplefilter("error", ConvergenceWarning)
        fitted = fit_candidate(x, list(y))
    assert fitted.family == "logistic-regression"  # a tie or better: the simpler family
    assert fitted.params["scaled"] is True
    assert np.mean(fitted.estimator.predict(x) == y) > 0.97


def test_too_few_rows_to_choose_fit_the_simplest_family():
    x = np.array([[0.0], [1.0], [2.0], [3.0]] * 10)
    fitted = fit_candidate(x, [0, 0, 1, 1] * 10)
    assert fitted.family == "logistic-regression" and fitted.validation == {}


def test_mcnemar_on_the_rows_the_two_disagree_on():
    new = [True] * 8 + [False] * 2 + [True] * 90
    old = [False] * 8 + [True] * 2 + [True] * 90
    b, c, p = paired_test(new, old)
    assert (b, c) == (8, 2)
    assert p == pytest.approx((45 + 10 + 1) / 1024)  # P(X >= 8), X ~ Binomial(10, 1/2)
    assert paired_test([True] * 5, [True] * 5) == (0, 0, 1.0)


@pytest.mark.parametrize("n", [201, 1000, 5000])
def test_mcnemar_beyond_the_exact_sum_agrees_with_it(n):
    for b in range(0, n + 1, max(1, n // 100)):
        exact = sum(math.comb(n, k) for k in range(b, n + 1)) / 2**n
        assert mcnemar_p(b, n - b) == pytest.approx(exact, rel=1e-4, abs=1e-12)
    assert mcnemar_p(0, n) == 1.0 and mcnemar_p(n, 0) == pytest.approx(2.0**-n, rel=1e-4)
    assert mcnemar_p(52_000, 48_000) < 1e-30 < 0.99 < mcnemar_p(48_000, 52_000)


def test_promotion_needs_the_gain_and_the_test():
    assert promotion(0.9, None, 1.0, min_gain=0.01, max_p=0.05) == (True, "")
    ok, why = promotion(0.905, 0.9, 0.001, min_gain=0.01, max_p=0.05)
    assert not ok and "min_gain 0.01" in why
    ok, why = promotion(0.95, 0.9, 0.2, min_gain=0.01, max_p=0.05)
    assert not ok and "not shown better" in why
    assert promotion(0.95, 0.9, 0.01, min_gain=0.01, max_p=0.05)[0]


def test_a_card_without_a_learner_signs_as_before_the_field_existed():
    card = ModelCard(
        name="m", version="1", framework="sklearn", features=["a"], created_at=datetime.now(UTC)
    )
    assert "learner" not in json.loads(card.signed_bytes())
    chosen = card.model_copy(update={"learner": {"family": "hist-gradient-boosting"}})
    assert json.loads(chosen.signed_bytes())["learner"] == {"family": "hist-gradient-boosting"}

"""McNemar's exact test: is one model better than another on the same records?

Only the discordant records count: ``b`` that the new model got right and the
old one wrong, ``c`` the other way round. Under "no better" each is a fair coin,
so the one-sided p is the binomial tail P(X ≥ b | n = b + c, ½). Pure standard
library, so any role can judge a pair without importing scikit-learn.
"""

from __future__ import annotations

import math
from collections.abc import Sequence


def mcnemar_p(b: int, c: int) -> float:
    """One-sided p that the model right on ``b`` discordant records is no better."""
    n = b + c
    return sum(math.comb(n, k) for k in range(b, n + 1)) / 2**n


def paired_test(new_right: Sequence[bool], old_right: Sequence[bool]) -> tuple[int, int, float]:
    """McNemar's exact test on the same rows: (rows only the new model got right, rows only
    the old one did, one-sided p that the new one is no better)."""
    b = sum(n and not o for n, o in zip(new_right, old_right, strict=True))
    c = sum(o and not n for n, o in zip(new_right, old_right, strict=True))
    return b, c, mcnemar_p(b, c)

"""The canary contest: is the canary as good as the active version on live labels?

Pure logic, no I/O. The performance role feeds :class:`CanaryJudge` every
served outcome of its model and the routes of the control fold; the judge
counts, per contest (one canary version against one active version), how
often each was right, and looks at the evidence every
``WEIR_CANARY__MIN_OUTCOMES`` canary outcomes:

* the interval of (canary - active) accuracy, Newcombe's hybrid score interval
  (two Wilson intervals, good at small counts and near 0 or 1), at a level
  corrected for the looks: a contest takes at most ``max_outcomes /
  min_outcomes`` looks, so each look uses ``(1 - confidence) / looks``
  (Bonferroni), and the chance that any look of the contest is wrong stays
  under ``1 - confidence`` however often it looks;
* **rollback** when the whole interval is below ``-error_budget`` (worse
  beyond the budget), **step** to the next weight of ``WEIR_CANARY__STEPS`` when
  the whole interval is above it (not worse beyond the budget), **promote**
  when that happens at the last step, **rollback** when ``max_outcomes`` canary
  outcomes did not settle it (not shown to be as good), and otherwise wait for
  the next look. A verdict is sent once per weight; the looks after it go on
  (a rollback may still follow a step that was not carried out yet), and it is
  sent again after ``RESEND_LOOKS`` looks if the routes never followed it.

The canary and the active version serve different records (a stable hash of
the record id splits them), so the test is of two independent proportions,
not a paired one. A verdict is a proposal: the retrainer, which holds the
signing key, turns it into route events (:func:`routes_for`) only while the
routes are still the ones it was judged on.
"""

from __future__ import annotations

import math
import uuid
from dataclasses import asdict, dataclass
from statistics import NormalDist
from typing import Any

from agents.routing import ModelRoutes, Route
from schemas import CanaryVerdict, ModelVersionEvent
from schemas.settings import CanarySettings


def wilson(correct: int, total: int, z: float) -> tuple[float, float]:
    """Wilson score interval of a proportion ``correct / total`` (``total`` > 0)."""
    p = correct / total
    denominator = 1 + z * z / total
    centre = (p + z * z / (2 * total)) / denominator
    half = z * math.sqrt(p * (1 - p) / total + z * z / (4 * total * total)) / denominator
    return max(0.0, centre - half), min(1.0, centre + half)


def difference_interval(k1: int, n1: int, k2: int, n2: int, *, alpha: float) -> tuple[float, float]:
    """Newcombe's hybrid score interval of ``k1/n1 - k2/n2`` at level ``1 - alpha``."""
    z = NormalDist().inv_cdf(1 - alpha / 2)
    p1, p2 = k1 / n1, k2 / n2
    l1, u1 = wilson(k1, n1, z)
    l2, u2 = wilson(k2, n2, z)
    d = p1 - p2
    low = d - math.sqrt((p1 - l1) ** 2 + (u2 - p2) ** 2)
    high = d + math.sqrt((u1 - p1) ** 2 + (p2 - l2) ** 2)
    return max(-1.0, low), min(1.0, high)


RESEND_LOOKS = 3  # looks after which a verdict the routes did not follow is sent again


@dataclass
class Contest:
    """One canary version against one active version, since the canary went on."""

    canary: str
    active: str
    weight: float
    canary_outcomes: int = 0
    canary_correct: int = 0
    active_outcomes: int = 0
    active_correct: int = 0
    looks: int = 0
    low: float | None = None  # the interval at the last look
    high: float | None = None
    standing: str = "gathering"  # what the last look said: gathering | undecided | a verdict
    sent: str | None = None  # the verdict sent at this weight, until the routes follow it
    sent_look: int = 0

    @property
    def canary_accuracy(self) -> float | None:
        return self.canary_correct / self.canary_outcomes if self.canary_outcomes else None

    @property
    def active_accuracy(self) -> float | None:
        return self.active_correct / self.active_outcomes if self.active_outcomes else None

    def count(self, version: str, correct: bool) -> bool:
        """Count one outcome; whether it was one of the contest's two versions."""
        if version == self.canary:
            self.canary_outcomes += 1
            self.canary_correct += correct
        elif version == self.active:
            self.active_outcomes += 1
            self.active_correct += correct
        else:
            return False
        return True


class CanaryJudge:
    """Judges the canary of one model; see the module docstring."""

    def __init__(self, model: str, policy: CanarySettings) -> None:
        self.model = model
        self.policy = policy
        self.contest: Contest | None = None

    @property
    def alpha(self) -> float:
        """The error rate of one look: the contest's, shared among its looks."""
        return (1 - self.policy.confidence) / self.policy.looks

    def follow(self, routes: ModelRoutes) -> None:
        """Match the contest to the routes: a new canary (or active) starts a new one."""
        canary, active = routes.serving_canary, routes.active
        if canary is None or active is None:
            self.contest = None
            return
        held = self.contest
        if held is None or held.canary != canary.version or held.active != active.version:
            self.contest = Contest(canary.version, active.version, routes.canary_weight)
        elif held.weight != routes.canary_weight:  # a step carried out: a new stage
            held.weight, held.sent, held.standing = routes.canary_weight, None, "gathering"

    def update(self, version: str, correct: bool) -> CanaryVerdict | None:
        """Count one served outcome; a verdict when this outcome completes a look."""
        contest = self.contest
        if contest is None or not contest.count(version, correct):
            return None
        if version != contest.canary or contest.canary_outcomes % self.policy.min_outcomes:
            return None
        return self._look(contest)

    def _next_weight(self, weight: float) -> float | None:
        return next((w for w in self.policy.steps if w > weight + 1e-9), None)

    def _look(self, contest: Contest) -> CanaryVerdict | None:
        policy = self.policy
        contest.looks += 1
        if contest.active_outcomes == 0:
            verdict, reason = None, "no outcome of the active version yet"
        else:
            low, high = difference_interval(
                contest.canary_correct,
                contest.canary_outcomes,
                contest.active_correct,
                contest.active_outcomes,
                alpha=self.alpha,
            )
            contest.low, contest.high = low, high
            budget = policy.error_budget
            span = f"canary - active accuracy in [{low:+.3f}, {high:+.3f}]"
            if high < -budget:
                verdict, reason = "rollback", f"worse: {span}, all below -{budget:g}"
            elif low > -budget:
                verdict = "promote" if self._next_weight(contest.weight) is None else "step"
                reason = f"not worse: {span}, all above -{budget:g}"
            else:
                verdict, reason = None, f"undecided: {span} spans -{budget:g}"
        if verdict is None and contest.canary_outcomes >= policy.max_outcomes:
            verdict = "rollback"
            reason = f"not shown as good in {contest.canary_outcomes} outcomes ({reason})"
        contest.standing = verdict or ("undecided" if contest.low is not None else "gathering")
        if verdict is None or (
            verdict == contest.sent and contest.looks - contest.sent_look < RESEND_LOOKS
        ):
            return None  # nothing to do, or said already and the routes have not followed yet
        contest.sent, contest.sent_look = verdict, contest.looks
        return CanaryVerdict(
            alert_id=f"verdict-{uuid.uuid4().hex[:12]}",
            model=self.model,
            version=contest.canary,
            active_version=contest.active,
            verdict=verdict,
            weight=contest.weight,
            next_weight=self._next_weight(contest.weight) if verdict == "step" else None,
            canary_outcomes=contest.canary_outcomes,
            canary_correct=contest.canary_correct,
            active_outcomes=contest.active_outcomes,
            active_correct=contest.active_correct,
            low=contest.low if contest.low is not None else -1.0,
            high=contest.high if contest.high is not None else 1.0,
            confidence=policy.confidence,
            error_budget=policy.error_budget,
            look=contest.looks,
            reason=reason,
        )

    def checkpoint(self) -> dict[str, Any]:
        return {"contest": asdict(self.contest) if self.contest else None}

    def restore(self, saved: dict[str, Any]) -> None:
        held = saved.get("contest")
        self.contest = Contest(**held) if held else None


def routes_for(verdict: CanaryVerdict, routes: ModelRoutes) -> list[ModelVersionEvent] | str:
    """The route events that carry out ``verdict``, or why it no longer applies.

    A verdict applies only to the routes it was judged on: the same canary at
    the same weight against the same active version. A later verdict, a
    person's change or a replay of an old one then changes nothing.
    """
    canary, active = routes.serving_canary, routes.active
    if canary is None or canary.version != verdict.version:
        return f"{verdict.version} is not the canary of {verdict.model} now"
    if active is None or active.version != verdict.active_version:
        return f"{verdict.active_version} is not the active version of {verdict.model} now"
    if abs(routes.canary_weight - verdict.weight) > 1e-9:
        return f"the canary's weight is {routes.canary_weight:g} now, not {verdict.weight:g}"

    def event(action: str, route: Route, weight: float | None = None) -> ModelVersionEvent:
        return ModelVersionEvent(
            action=action,
            model=route.model,
            version=route.version,
            url=None if action == "clear-canary" else route.url,
            protocol=route.protocol,
            weight=weight,
            features=list(route.features) if route.features else None,
            metrics=verdict.evidence,
            run_id=route.run_id,
            alert_id=verdict.alert_id,
        )

    if verdict.verdict == "step":
        return [event("canary", canary, verdict.next_weight)]
    if verdict.verdict == "promote":
        return event("activate", canary).implied()
    return [event("clear-canary", canary)]

"""Scoring first (agents.pacing): when an insight role waits, and how long."""

from __future__ import annotations

import pytest

from agents.pacing import MAX_WAIT_S, ScoringFirst


def test_no_wait_until_scoring_is_behind():
    pacing = ScoringFirst(0.2, min_records=5_000)
    assert pacing.worked(0.1, now=0.0) == 0.0  # no sample yet
    assert not pacing.observe(lag=4_000, end=10_000, at=0.0)  # within min_records
    assert pacing.worked(0.1, now=0.5) == 0.0


def test_behind_caps_the_role_at_its_share_of_a_core():
    pacing = ScoringFirst(0.2, min_records=5_000)
    assert pacing.observe(lag=80_000, end=100_000, at=0.0)  # changed: now behind
    assert pacing.behind
    # 0.1 s of CPU at a share of 0.2: 0.4 s of waiting, so 0.1 s of every 0.5 s
    assert pacing.worked(0.1, now=0.5) == pytest.approx(0.4)
    assert pacing.worked(1.0, now=0.5) == MAX_WAIT_S  # one wait is bounded
    assert pacing.worked(0.0, now=0.5) == 0.0


def test_a_lag_that_is_only_the_commit_interval_is_not_behind():
    """Scoring commits once a second: keeping up at 30,000 records/s it shows ~30,000."""
    pacing = ScoringFirst(0.2, min_records=5_000)
    pacing.observe(lag=30_000, end=1_000_000, at=10.0)  # no rate yet: behind
    assert pacing.behind
    assert pacing.observe(lag=31_000, end=1_030_000, at=11.0)  # changed
    assert not pacing.behind  # 30,000/s x 3 s = 90,000 > 31,000
    assert pacing.worked(0.1, now=11.5) == 0.0
    # the records stop coming and the lag stays: a backlog
    assert pacing.observe(lag=31_000, end=1_030_000, at=12.0)
    assert pacing.behind


def test_a_stale_verdict_never_holds_the_role_back():
    pacing = ScoringFirst(0.2, min_records=5_000, stale_s=5.0)
    pacing.observe(lag=80_000, end=100_000, at=0.0)
    assert pacing.worked(0.1, now=5.0) > 0
    assert pacing.worked(0.1, now=5.1) == 0.0  # no sample since (broker away)


def test_share_one_never_waits():
    pacing = ScoringFirst(1.0, min_records=0)
    pacing.observe(lag=10**6, end=10**6, at=0.0)
    assert pacing.behind and pacing.worked(1.0, now=0.0) == 0.0


def test_caught_up_again():
    pacing = ScoringFirst(0.2, min_records=5_000)
    pacing.observe(lag=80_000, end=100_000, at=0.0)
    assert pacing.observe(lag=900, end=100_000, at=1.0)  # changed: caught up
    assert not pacing.behind and pacing.worked(0.1, now=1.0) == 0.0
    assert not pacing.observe(lag=800, end=100_000, at=2.0)  # no change

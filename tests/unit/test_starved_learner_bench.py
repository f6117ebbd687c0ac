"""The starved-learner benchmark's simulation (bench/starved_learner.py): time is the
simulation's, so the figures do not depend on this machine's load."""

from __future__ import annotations

from bench.starved_learner import Costs, mean, simulate
from schemas.settings import Settings
from streams.synthetic import drifting_stream

SETTINGS = Settings().learner.model_copy(update={"kind": "arf+linear", "enabled": True})
# a quarter of what learning whole at 400/s would need: 2 ms a record whole, 0.1 ms light
STARVED = Costs(whole=2e-3, light=1e-4, skip=1e-5).shared(0.25)


def test_a_learner_that_keeps_up_learns_every_outcome_whole():
    rows = list(drifting_stream(1_500, 800, seed=1))
    r = simulate("keeps up", SETTINGS, rows, STARVED, rate=400.0, start=0)
    assert (r.whole, r.light_only, r.shed) == (1_500, 0, 0)
    assert len(r.right) == 1_500, "every record is answered once"


def test_starved_it_sheds_records_or_the_forest_and_the_forest_first_learns_them_all():
    rows = list(drifting_stream(3_000, 1_500, seed=2))
    records = simulate("sheds records", SETTINGS, rows, STARVED, rate=400.0, start=1_000)
    forest = simulate("sheds the forest first", SETTINGS, rows, STARVED, rate=400.0, start=1_000)
    assert records.light_only == 0 and records.shed > 1_000
    assert records.whole + records.shed == 3_000
    assert forest.shed == 0 and forest.light_only > 1_000
    assert forest.whole + forest.light_only == 3_000
    assert len(records.right) == len(forest.right) == 2_000
    # on the new concept the learner that learnt every outcome answers better
    assert mean(forest.right[1_000:]) > mean(records.right[1_000:])

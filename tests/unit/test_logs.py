"""Log floods are rate-limited per message kind; quiet kinds and INFO lines pass untouched."""

from __future__ import annotations

import logging

from streams.logs import RateLimit


def record(msg: str, level: int = logging.ERROR, name: str = "weir.x", *args) -> logging.LogRecord:
    return logging.LogRecord(name, level, __file__, 1, msg, args, None)


def test_a_flood_is_cut_to_the_burst_and_the_next_window_says_how_many_were_dropped():
    now = [0.0]
    limit = RateLimit(burst=3, window_s=10.0, clock=lambda: now[0])
    passed = [
        limit.filter(record("broker %s down", logging.ERROR, "weir.x", "a")) for _ in range(50)
    ]
    assert passed.count(True) == 3
    # another kind of message is not held back by the flood
    assert limit.filter(record("model server slow"))
    assert limit.filter(record("broker %s down", logging.INFO))  # INFO is never limited
    now[0] = 10.5
    first = record("broker %s down", logging.ERROR, "weir.x", "b")
    assert limit.filter(first)
    assert first.getMessage() == "broker b down [47 more like this in the previous 10s dropped]"
    assert sum(limit.filter(record("broker %s down")) for _ in range(10)) == 2


def test_a_percent_in_the_note_does_not_break_formatting():
    now = [0.0]
    limit = RateLimit(burst=1, window_s=1.0, clock=lambda: now[0])
    for _ in range(3):
        limit.filter(record("%d%% busy", logging.ERROR, "weir.x", 100))
        limit.filter(record("100% idle"))
    now[0] = 2.0
    again, plain = record("%d%% busy", logging.ERROR, "weir.x", 100), record("100% idle")
    assert limit.filter(again) and limit.filter(plain)
    assert again.getMessage() == "100% busy [2 more like this in the previous 1s dropped]"
    assert plain.getMessage() == "100% idle [2 more like this in the previous 1s dropped]"

"""Logs that stay readable during an outage: repeated warnings and errors are rate-limited.

With the broker down, every client in a role retries and logs each failure —
tens of thousands of lines in a minute that hide the one line that matters.
:class:`RateLimit` lets the first ``burst`` records of a kind (same logger,
level and message template) through in each ``window_s``, drops the rest, and
says how many it dropped on the first record of the kind in the next window.
Records below WARNING pass untouched. :func:`limit_logs` puts it on the root
logger's handlers (call it after the logging set-up: Faust's worker makes its
own handlers when it starts).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

MAX_KINDS = 2048  # message kinds remembered; past that the oldest windows are forgotten


@dataclass
class _Window:
    start: float
    count: int = 0
    dropped: int = 0


class RateLimit(logging.Filter):
    def __init__(
        self,
        *,
        burst: int = 5,
        window_s: float = 10.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        super().__init__()
        self.burst = burst
        self.window_s = window_s
        self._clock = clock
        self._windows: dict[tuple[str, int, str], _Window] = {}

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno < logging.WARNING:
            return True
        key = (record.name, record.levelno, str(record.msg))
        now = self._clock()
        window = self._windows.get(key)
        if window is None or now - window.start >= self.window_s:
            if len(self._windows) >= MAX_KINDS:
                self._windows.clear()
            dropped = window.dropped if window is not None else 0
            self._windows[key] = _Window(now, count=1)
            if dropped:
                note = f" [{dropped} more like this in the previous {self.window_s:.0f}s dropped]"
                record.msg = str(record.msg) + (note.replace("%", "%%") if record.args else note)
            return True
        window.count += 1
        if window.count <= self.burst:
            return True
        window.dropped += 1
        return False


def limit_logs(*, burst: int = 5, window_s: float = 10.0) -> RateLimit:
    """Rate-limit every handler of the root logger (once); returns the filter."""
    root = logging.getLogger()
    for handler in root.handlers:
        for existing in handler.filters:
            if isinstance(existing, RateLimit):
                return existing
    limit = RateLimit(burst=burst, window_s=window_s)
    for handler in root.handlers:
        handler.addFilter(limit)
    return limit

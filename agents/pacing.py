"""Scoring first: how an insight role gives way while the scoring role is behind.

On one machine every role shares the cores. Niceness decides who runs when two
want the same core, but an insight role that lags (which it may: it reads in
its own consumer group) still takes every idle moment of the other core, and
on two cores that slows scoring by a fifth (measured with ``bench/peers.py``:
the scoring role's own CPU per record did not change; its share of a core fell
from 0.87 to 0.70 while feedback took 0.4 to 0.5 of a core, even with the insight
roles at ``SCHED_IDLE``). So while scoring has a backlog, an insight role caps
itself at ``share`` of one core: after work that took ``c`` seconds of its
CPU, it waits ``c · (1 - share) / share`` before reading its next batch.

*Behind* is judged from the scoring group's lag on the records topic, sampled
every second or so: more than ``min_records`` uncommitted, and more than
``seconds`` of the records' arrival rate (scoring commits once a second, so
a group that keeps up at 30,000 records/s shows a lag of tens of thousands).
With no sample for ``stale_s`` (broker away), the role stops yielding: a stale
verdict never holds the loop back. Under a CPU hog the cap rarely bites: a
role that gets little CPU uses little, and waits in proportion to what it used.
"""

from __future__ import annotations

from dataclasses import dataclass, field

MAX_WAIT_S = 1.0  # one wait at most; a role that stops waits for its current one


@dataclass
class ScoringFirst:
    """Whether scoring is behind (:meth:`observe`), and how long to wait (:meth:`worked`)."""

    share: float  # of one core, while scoring is behind; 1: never wait
    min_records: int = 5_000
    seconds: float = 3.0
    stale_s: float = 5.0
    behind: bool = False
    _last: tuple[float, int] | None = field(default=None, repr=False)  # (at, end offsets)

    def observe(self, lag: int, end: int, at: float) -> bool:
        """A lag sample of the scoring group (``end``: the records' end offsets summed, at
        time ``at``); True when the verdict changed."""
        rate = 0.0
        if self._last is not None and at > self._last[0]:
            rate = max(0, end - self._last[1]) / (at - self._last[0])
        self._last = (at, end)
        behind = lag > max(self.min_records, rate * self.seconds)
        changed, self.behind = behind != self.behind, behind
        return changed

    def worked(self, cpu_s: float, now: float) -> float:
        """Seconds to wait after work that took ``cpu_s`` of CPU (0 unless scoring is behind,
        going by a sample younger than ``stale_s``)."""
        fresh = self._last is not None and now - self._last[0] <= self.stale_s
        if not (self.behind and fresh) or self.share >= 1 or cpu_s <= 0:
            return 0.0
        return min(MAX_WAIT_S, cpu_s * (1 - self.share) / self.share)

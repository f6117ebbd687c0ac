"""Detector cores: drift on numeric streams and live error rate. Pure logic.

The monitor and performance roles (``streams/roles/``) feed these objects one
value at a time and turn what they return into alert events; nothing here does I/O,
reads a clock or keeps global state. Every window, cooldown and warm-up is
counted in updates, so a replay of the same stream gives the same alerts.

* :class:`DriftDetector` is the one contract every drift detector meets;
  :func:`make_detector` builds one around a river detector.
* :class:`StreamDriftMonitor` keeps one detector per named stream (an input
  feature, the predictions) and returns a :class:`DriftSignal`.
* Outlier scores are :mod:`agents.outliers` (``OutlierScorer`` is still found here, for
  checkpoints written when it lived here).
* :class:`ErrorRateMonitor` keeps live accuracy per model version and watches
  its error stream, returning a :class:`PerformanceSignal`.

Defaults, measured on river 0.26.1 (``tests/unit/test_detectors.py`` pins the
alarm positions; ``bench/drift_delay.py`` measures the demo):

* ``adwin``: river's ``delta=0.002``. N(0,1)→N(1,1): no false alarm in
  50 x 20,000 stable values, median delay 47.
* ``page-hinkley``: ``delta=0.15, threshold=50, alpha=1.0`` instead of river's
  ``0.005, 50, 1 - 1e-4``. River's fading factor keeps the cumulative sum
  spread around ~71 sigma, above the threshold, so its defaults raised 138 false
  alarms on 50 stable N(0,1) streams of 5,000; these raised none on 50 x 20,000,
  with median delay 57 for a shift of 1 sigma. Page-Hinkley is not scale-free:
  ``delta`` and ``threshold`` are in units of the stream (sigma = 1 here).
* ``ddm``: ``warm_start=500`` instead of 30. DDM keeps the lowest error rate
  seen after its warm-up; after only 30 outcomes that minimum is noise (often
  zero), and the next errors look like drift: 47 false alarms before the drift
  in 30 demo runs with river's default, 2 with 500 (0.15 per 10,000 stable
  outcomes), at the same median delay (~126).
* ``eddm``: ``warm_start=100, beta=0.7`` instead of 30 and 0.9. EDDM is the
  noisiest here: river's defaults alarmed on 48 of 50 stable 5 %-error streams
  of 5,000; these on 11 of 50, at the cost of a long delay (median 475 for
  5 %→20 %). Prefer another kind for abrupt drift at low error rates.
* ``hddm-a``: river's defaults (one-sided, ``drift_confidence=0.001``).
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol, get_args

from river import drift
from river.base import BinaryDriftDetector
from river.base import DriftDetector as RiverDriftDetector
from river.drift import binary

DetectorKind = Literal["adwin", "page-hinkley", "ddm", "eddm", "hddm-a"]
DETECTOR_KINDS: tuple[DetectorKind, ...] = get_args(DetectorKind)
BINARY_KINDS: frozenset[DetectorKind] = frozenset({"ddm", "eddm", "hddm-a"})

Param = float | str

_DEFAULTS: dict[DetectorKind, dict[str, Param]] = {
    "adwin": {"delta": 0.002},
    "page-hinkley": {"delta": 0.15, "threshold": 50.0, "alpha": 1.0},
    "ddm": {"warm_start": 500},
    "eddm": {"warm_start": 100, "alpha": 0.95, "beta": 0.7},
    "hddm-a": {},
}


class DriftDetector(Protocol):
    """One drift detector on one stream of numbers."""

    name: str

    def update(self, x: float) -> bool:
        """Learn ``x``; True exactly on the update where drift is detected."""
        ...

    def reset(self) -> None:
        """Forget everything learned; the next update starts afresh."""
        ...


class RiverDetector:
    """A river drift detector behind :class:`DriftDetector`.

    Binary kinds take 0/1 (1 = error) and reject anything else; every kind
    rejects NaN and infinities, which river would silently absorb.
    """

    def __init__(self, name: str, detector: RiverDriftDetector | BinaryDriftDetector) -> None:
        self.name = name
        self._detector = detector

    def update(self, x: float) -> bool:
        if not math.isfinite(x):
            raise ValueError(f"{self.name}: value must be finite, got {x!r}")
        if isinstance(self._detector, BinaryDriftDetector):
            if x not in (0, 1):
                raise ValueError(f"{self.name}: takes 0 or 1 (1 = error), got {x!r}")
            self._detector.update(x == 1)
        else:
            self._detector.update(x)
        return self._detector.drift_detected

    def reset(self) -> None:
        self._detector = self._detector.clone()


def make_detector(kind: DetectorKind, **params: Param) -> DriftDetector:
    """A fresh detector of ``kind``; ``params`` override weir's defaults (module docstring)."""
    if kind not in _DEFAULTS:
        raise ValueError(f"unknown detector kind {kind!r}; expected one of {DETECTOR_KINDS}")
    merged: dict[str, Any] = {**_DEFAULTS[kind], **params}  # river checks names and types
    detector: RiverDriftDetector | BinaryDriftDetector
    if kind == "adwin":
        detector = drift.ADWIN(**merged)
    elif kind == "page-hinkley":
        detector = drift.PageHinkley(**merged)
    elif kind == "ddm":
        detector = binary.DDM(**merged)
    elif kind == "eddm":
        detector = binary.EDDM(**merged)
    else:
        detector = binary.HDDMA(**merged)
    return RiverDetector(kind, detector)


@dataclass
class Cooldown:
    """Lets one alarm through as a signal, then holds the next ``length`` updates quiet."""

    length: int
    _remaining: int = field(default=0, init=False)

    def __post_init__(self) -> None:
        if self.length < 0:
            raise ValueError(f"cooldown must be >= 0 updates, got {self.length}")

    def admit(self, alarm: bool) -> bool:
        """Count one update; True when its ``alarm`` becomes a signal."""
        quiet = self._remaining > 0
        if quiet:
            self._remaining -= 1
        if alarm and not quiet:
            self._remaining = self.length
            return True
        return False


@dataclass(frozen=True)
class DriftSignal:
    """A drift in one stream: which, by what, after how many of its values, and the means.

    The detector fires some values after the change, so the means are split
    where the change most likely happened: within the newest ``mean_window``
    values, at the point that best separates them into two levels (least
    squares, the usual single change-point estimate). ``mean_before`` is the
    mean of the reference period (every value since the stream's detector last
    started) up to that point, ``mean_after`` the mean from it to the value that
    raised the alarm. ``None`` when a side has no values.
    """

    stream: str
    detector: str
    records_seen: int
    mean_before: float | None
    mean_after: float | None


@dataclass
class _Stream:
    detector: DriftDetector
    cooldown: Cooldown
    recent: deque[float]
    seen: int = 0
    ref_sum: float = 0.0
    ref_count: int = 0
    # standardising the detector's input: the first values of each reference period set
    # the centre and spread; until then they wait in ``warm`` (empty when not scaling)
    warm: list[float] = field(default_factory=list)
    scale: tuple[float, float] | None = None

    def restart(self) -> None:
        self.detector.reset()
        self.recent.clear()
        self.ref_sum, self.ref_count = 0.0, 0
        self.warm, self.scale = [], None

    def scaled(self, value: float, warmup: int) -> list[float]:
        """The values to feed the detector now: ``value`` in units of the reference
        period's spread, or (while warming up) nothing, then all the warm-up values."""
        if warmup <= 0:
            return [value]
        if self.scale is not None:
            centre, spread = self.scale
            return [(value - centre) / spread]
        self.warm.append(value)
        if len(self.warm) < warmup:
            return []
        centre = math.fsum(self.warm) / len(self.warm)
        variance = math.fsum((v - centre) ** 2 for v in self.warm) / (len(self.warm) - 1)
        spread = math.sqrt(variance) if variance > 0 else max(abs(centre), 1.0)
        self.scale = (centre, spread)
        values, self.warm = self.warm, []
        return [(v - centre) / spread for v in values]

    def split_means(self) -> tuple[float | None, float | None]:
        """(before, after) means, split where the two levels differ most (least squares)."""
        values = list(self.recent)
        total = self.ref_sum + sum(values)
        count = self.ref_count + len(values)
        best: tuple[float, float | None, float | None] = (-1.0, None, total / count)
        head_sum, head_count = self.ref_sum, self.ref_count
        for value in values:
            if head_count:
                before = head_sum / head_count
                after = (total - head_sum) / (count - head_count)
                gain = head_count * (count - head_count) / count * (after - before) ** 2
                if gain > best[0]:
                    best = (gain, before, after)
            head_sum += value
            head_count += 1
        return best[1], best[2]


class StreamDriftMonitor:
    """One drift detector per named stream, created on the stream's first value.

    At most ``max_streams`` streams get a detector; values of streams first seen
    after that are counted in ``untracked`` and otherwise ignored, so records
    that bring ever new feature names cannot grow the state without bound.

    After an alarm the stream's detector and its reference period restart, so
    one change gives one signal; alarms in the ``cooldown`` updates of that
    stream after a signal are dropped (the detector still learns and restarts).

    With ``scale_warmup`` > 0 the detector sees standardised values: the first
    ``scale_warmup`` values of each reference period set its centre and spread
    (sample mean and standard deviation), then every value is fed as
    ``(value - centre) / spread``. Detectors tuned on N(0, 1) (Page-Hinkley's
    ``delta`` and ``threshold`` are in the stream's units) then behave the same
    on a feature measured in thousands as on one in thousandths. Detection
    starts after the warm-up; the signal's means stay in the feature's units.
    """

    max_streams: int = 64
    untracked: int = 0

    def __init__(
        self,
        kind: DetectorKind = "adwin",
        *,
        cooldown: int = 1000,
        mean_window: int = 200,
        max_streams: int = 64,
        scale_warmup: int = 0,
        **params: Param,
    ) -> None:
        if mean_window < 1:
            raise ValueError(f"mean_window must be >= 1, got {mean_window}")
        make_detector(kind, **params)  # fail now, not on the first value
        self.kind = kind
        self.cooldown = cooldown
        self.mean_window = mean_window
        self._params = params
        self.max_streams = max_streams
        self.scale_warmup = scale_warmup
        self.untracked = 0
        self._streams: dict[str, _Stream] = {}

    def records_seen(self, stream: str) -> int:
        state = self._streams.get(stream)
        return 0 if state is None else state.seen

    def update(self, stream: str, value: float) -> DriftSignal | None:
        """Feed one value of ``stream``; a signal when it drifted (outside the cooldown)."""
        if not math.isfinite(value):
            raise ValueError(f"stream {stream!r}: value must be finite, got {value!r}")
        state = self._streams.get(stream)
        if state is None:
            if len(self._streams) >= self.max_streams:
                self.untracked += 1
                return None
            state = _Stream(
                make_detector(self.kind, **self._params),
                Cooldown(self.cooldown),
                deque(maxlen=self.mean_window),
            )
            self._streams[stream] = state
        warmup = getattr(self, "scale_warmup", 0)  # a checkpoint from before scaling: none
        if not hasattr(state, "warm"):
            state.warm, state.scale = [], None
        alarm = False
        for x in state.scaled(value, warmup):
            alarm = state.detector.update(x) or alarm
        state.seen += 1
        if len(state.recent) == self.mean_window:
            state.ref_sum += state.recent[0]
            state.ref_count += 1
        state.recent.append(value)
        signal = None
        if state.cooldown.admit(alarm):
            before, after = state.split_means()
            signal = DriftSignal(stream, state.detector.name, state.seen, before, after)
        if alarm:
            state.restart()
        return signal


@dataclass(frozen=True)
class PerformanceSignal:
    """The error stream of one model version drifted.

    ``accuracy`` is over the last ``window`` outcomes at the moment of the
    alarm, so it still mixes outcomes from before the change.
    """

    version: str
    detector: str
    accuracy: float
    window: int
    outcomes_seen: int
    cumulative_accuracy: float
    baseline: float | None = None  # a re-alert: the model's accuracy before the drift
    model_outcomes: int = 0  # outcomes of every version so far (the retrainer's cooldown clock)


@dataclass
class _Version:
    detector: DriftDetector
    cooldown: Cooldown
    recent: deque[bool]
    recent_correct: int = 0
    seen: int = 0
    correct: int = 0
    baseline: float | None = None  # accuracy before its first alarm, while it is watched
    recheck_at: int = 0  # outcomes seen at which the watch looks again
    best: float | None = None  # best accuracy over a full window so far

    def before_drift(self) -> float:
        """The version's accuracy before it drifted: every outcome so far, or its best full
        window less two standard errors when that is higher (a gradual drift drags the
        running mean down before any alarm; the best of many windows is lucky by about
        two standard errors)."""
        mean = self.correct / self.seen
        if self.best is None:
            return mean
        n = self.recent.maxlen or len(self.recent)
        return max(mean, self.best - 2 * math.sqrt(mean * (1 - mean) / n))


class ErrorRateMonitor:
    """Live accuracy per model version and a drift detector on its error stream.

    Each version gets its own rolling window of the last ``window`` outcomes,
    cumulative counts, and a detector fed 1 for a wrong prediction and 0 for a
    right one. The default is ADWIN (delta 0.002): on the demo's drift it raised
    no false alarm in 50 seeds, at a median delay of 259 outcomes. DDM with a
    500-outcome warm-up (``"ddm"``) finds it in about half that delay (median
    139) but at 0.2 false alarms per 10,000 stable outcomes, and since the
    performance role keeps one detector per model over every worker's outcomes,
    a false alarm costs a whole retraining run before the real drift's run can
    start (the compose rehearsal met one in most runs); ``"hddm-a"`` raised none,
    at a median delay of 405. Alarms in the ``cooldown`` outcomes after a signal
    are dropped.

    A detector resets on its alarm and then settles on the new, higher error
    rate, so a drift would give one signal and no more, and a retraining run
    that promoted nothing would leave the version serving, degraded, with no
    second chance. So after a signal the model is **watched**: each time the
    ``cooldown`` (in outcomes) lets a signal through, while the version's
    accuracy over its full window is still more than ``recovery_margin`` below
    the accuracy before the first signal (:meth:`_Version.before_drift`: a
    gradual drift must not lower the mark), it signals again (detector
    ``"<name>, still degraded"``, ``baseline`` set). A version that first
    appears while the watch is on (the one a run promoted) is held to the same
    mark once its window is full, so a new version that is better than the old
    but still degraded is not the end of the loop. The watch ends once a
    version is back within half the margin (a window just inside the margin
    only postpones the next look).
    """

    def __init__(
        self,
        kind: DetectorKind = "adwin",
        *,
        window: int = 500,
        cooldown: int = 1000,
        recovery_margin: float = 0.05,
        **params: Param,
    ) -> None:
        if window < 1:
            raise ValueError(f"window must be >= 1, got {window}")
        make_detector(kind, **params)  # fail now, not on the first outcome
        self.kind = kind
        self.window = window
        self.cooldown = cooldown
        self.recovery_margin = recovery_margin
        self._params = params
        self._versions: dict[str, _Version] = {}

    _watch: float | None = None  # the model's accuracy before the drift, while degraded
    outcomes: int = 0  # every version's outcomes so far: cooldowns count in these, not seconds
    _closely_until: int = 0  # a feature drift was seen: look closely until this many outcomes

    def watch_closely(self, outcomes: int) -> None:
        """A feature drift was seen: for the next ``outcomes`` outcomes, a version not yet
        alerted on signals as soon as its accuracy over a full window is more than
        ``recovery_margin`` below its accuracy before (``"<name>, confirmed after feature
        drift"``), without waiting for its detector. Feature drift raises the watch level;
        only the outcomes can confirm it."""
        self._closely_until = max(self._closely_until, self.outcomes + outcomes)

    def update(self, version: str, correct: bool) -> PerformanceSignal | None:
        """Record one outcome of ``version``; a signal when its error rate drifted."""
        self.outcomes += 1
        state = self._versions.get(version)
        if state is None:
            state = _Version(
                make_detector(self.kind, **self._params),
                Cooldown(self.cooldown),
                deque(maxlen=self.window),
                # a version that replaces a degraded one is held to the same mark
                baseline=self._watch,
                recheck_at=self.window,
            )
            self._versions[version] = state
        if len(state.recent) == self.window:
            state.recent_correct -= state.recent[0]
        state.recent.append(correct)
        state.recent_correct += correct
        state.seen += 1
        state.correct += correct
        if len(state.recent) == self.window:
            now = state.recent_correct / self.window
            state.best = now if state.best is None else max(state.best, now)
        alarm = state.detector.update(0.0 if correct else 1.0)
        if alarm:
            state.detector.reset()
        still = not alarm and self._still_degraded(state)
        confirmed = not alarm and not still and self._confirmed(state)
        if not state.cooldown.admit(alarm or still or confirmed):
            return None
        if state.baseline is None:
            state.baseline = state.before_drift()
        self._watch = state.baseline
        state.recheck_at = state.seen + self.cooldown + 1  # the first the cooldown lets through
        name = state.detector.name
        if still:
            name = f"{name}, still degraded"
        elif confirmed:
            name = f"{name}, confirmed after feature drift"
        return PerformanceSignal(
            version=version,
            detector=name,
            accuracy=state.recent_correct / len(state.recent),
            window=len(state.recent),
            outcomes_seen=state.seen,
            cumulative_accuracy=state.correct / state.seen,
            baseline=state.baseline if still else None,
            model_outcomes=self.outcomes,
        )

    def _confirmed(self, state: _Version) -> bool:
        """Watched closely after a feature drift: a version not alerted on yet, its full
        window below its accuracy before by more than the margin?"""
        if self.outcomes > self._closely_until or state.baseline is not None:
            return False
        if len(state.recent) < self.window:
            return False
        now = state.recent_correct / self.window
        return now < state.before_drift() - self.recovery_margin

    def _still_degraded(self, state: _Version) -> bool:
        """A watched version, due for a look: still below its accuracy before the drift?"""
        if state.baseline is None or state.seen < state.recheck_at:
            return False
        if len(state.recent) < self.window:
            return False
        now = state.recent_correct / len(state.recent)
        if now < state.baseline - self.recovery_margin:
            return True
        if now >= state.baseline - self.recovery_margin / 2:  # recovered, with room to spare:
            state.baseline = self._watch = None  # the watch ends (not on one lucky window)
        else:
            state.recheck_at = state.seen + self.cooldown + 1
        return False

    def accuracy(self, version: str) -> float | None:
        """Accuracy over the last ``window`` outcomes of ``version``; None before any."""
        state = self._versions.get(version)
        return state.recent_correct / len(state.recent) if state and state.recent else None

    def cumulative_accuracy(self, version: str) -> float | None:
        """Accuracy over every outcome of ``version`` seen; None before any."""
        state = self._versions.get(version)
        return state.correct / state.seen if state and state.seen else None

    def outcomes_seen(self, version: str) -> int:
        state = self._versions.get(version)
        return 0 if state is None else state.seen


def __getattr__(name: str) -> Any:
    """``OutlierScorer`` and ``OutlierSignal`` lived here: monitor checkpoints written then
    name this module (imported on that first use, so roles without outliers never load
    river's trees)."""
    if name in ("OutlierScorer", "OutlierSignal"):
        from agents import outliers

        return getattr(outliers, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")

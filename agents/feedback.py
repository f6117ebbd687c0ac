"""Joining what was served with what turned out to be true, by record id.

Records, predictions and labels share their Kafka key (the record id), so with
equal partition counts one worker sees all three for a record. The joiner keeps
a bounded window of recent record ids; labels may arrive before or after their
prediction (late labels are joined as long as the record is in the window).

Two things come out of a join:

* a :class:`~schemas.training.TrainingRow` (features ⨝ label), which the stream
  archives to MinIO for retraining;
* an :class:`~schemas.Outcome` (prediction ⨝ label): was this model version right,
  sent to the ``outcomes`` topic keyed by model for the performance role (and,
  carrying the record's features when ``with_features``, for the online learner).

A record may also have a shadow prediction (``shadow: true``, mirrored to the
model's shadow route): once the label and the served prediction are both in, it
is judged the same way, into an outcome marked ``shadow`` that also says whether
it agrees with the served one; it never stands in for the served one. A shadow prediction that
arrives after its record was joined and let go is still judged, against the
label kept for it among the last ``window`` labels.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, NamedTuple

from schemas import InputRecord, Label, Outcome, Prediction
from schemas.payloads import Output
from schemas.training import TrainingRow


class _Served(NamedTuple):
    """What a join needs of a prediction. The window holds up to ``window`` of them and
    is checkpointed every few seconds: a tuple pickles about 5x faster than the
    pydantic model (a checkpoint written before kept the model, which reads alike)."""

    record_id: str
    model: str
    version: str
    url: str
    output: Output
    latency_ms: float
    shadow: bool

    @classmethod
    def of(cls, p: Prediction) -> _Served:
        return cls(p.record_id, p.model, p.version, p.url, p.output, p.latency_ms, p.shadow)


class _Truth(NamedTuple):
    """What a join needs of a label (as :class:`_Served` of a prediction)."""

    label: Output


@dataclass
class _Pending:
    features: dict[str, float] | None = None
    prediction: _Served | None = None
    label: _Truth | None = None
    label_time: datetime | None = None
    archived: bool = False
    judged: bool = False
    shadow: _Served | None = None


@dataclass
class JoinResult:
    training_rows: list[TrainingRow] = field(default_factory=list)
    outcomes: list[Outcome] = field(default_factory=list)


class FeedbackJoiner:
    def __init__(self, window: int = 50_000, *, with_features: bool = False) -> None:
        self._window = window
        # served outcomes carry the record's features (for the online learner)
        self.with_features = with_features
        self._pending: OrderedDict[str, _Pending] = OrderedDict()
        # label and served prediction of records joined and let go, for late shadow answers
        self._labels: OrderedDict[str, tuple[_Truth, _Served | None]] = OrderedDict()
        self.evicted_unlabelled = 0
        self.labels_without_record = 0

    def __getstate__(self) -> dict[str, object]:
        """The window in columns of plain tuples: it is checkpointed every few seconds, on
        the role's event loop. A window of 50,000 records pickled in ~450 ms as entries of
        dicts and named tuples, in ~145 ms so (~80 of them building the columns: each set
        of feature names once, a record's values as a tuple)."""
        state = dict(self.__dict__)
        names: dict[tuple[str, ...], int] = {}  # a feature-name set → its place in "names"
        rows = [
            (
                k,
                None if e.features is None else names.setdefault(tuple(e.features), len(names)),
                None if e.features is None else tuple(e.features.values()),
                _plain(e.prediction),
                _plain(e.label),
                e.label_time,
                e.archived,
                e.judged,
                _plain(e.shadow),
            )
            for k, e in self._pending.items()
        ]
        state["_pending"] = (list(names), rows)
        state["_labels"] = [(k, tuple(t), _plain(p)) for k, (t, p) in self._recent_labels().items()]
        return state

    def __setstate__(self, state: dict[str, object]) -> None:
        pending, labels = state["_pending"], state.get("_labels")
        if isinstance(pending, tuple):  # columns (:meth:`__getstate__`)
            names, rows = pending
            state["_pending"] = OrderedDict(
                (k, _Pending(_features(names, n, v), _served(p), _truth(t), at, a, j, _served(s)))
                for k, n, v, p, t, at, a, j, s in rows
            )
        elif isinstance(pending, list):  # rows of a checkpoint written before 2026-12-03
            state["_pending"] = OrderedDict((row[0], _Pending(*row[1:])) for row in pending)
        # else a checkpoint written before 2026-12-01, of _Pending
        if isinstance(labels, list):
            state["_labels"] = OrderedDict((k, (_Truth(*t), _served(p))) for k, t, p in labels)
        self.__dict__.update(state)

    def _entry(self, record_id: str) -> _Pending:
        entry = self._pending.get(record_id)
        if entry is None:
            entry = self._pending[record_id] = _Pending()
            while len(self._pending) > self._window:
                _, old = self._pending.popitem(last=False)
                if old.label is None:
                    self.evicted_unlabelled += 1
                elif old.features is None:
                    self.labels_without_record += 1
        return entry

    def _join(self, record_id: str, entry: _Pending) -> JoinResult:
        out = JoinResult()
        if entry.label is None:
            return out
        if entry.features is not None and not entry.archived and entry.label_time is not None:
            out.training_rows.append(
                TrainingRow(
                    record_id=record_id,
                    features=entry.features,
                    label=entry.label.label,
                    time=entry.label_time,
                    served=None if entry.prediction is None else entry.prediction.output,
                    served_version=None if entry.prediction is None else entry.prediction.version,
                )
            )
            entry.archived = True
        if entry.prediction is not None and not entry.judged:
            features = entry.features if self.with_features else None
            out.outcomes.append(
                _outcome(
                    entry.prediction,
                    entry.label,
                    features=features,
                    labelled_at=entry.label_time,
                )
            )
            entry.judged = True
        if entry.shadow is not None and entry.prediction is not None:  # compared when both are in
            out.outcomes.append(_outcome(entry.shadow, entry.label, entry.prediction))
            entry.shadow = None
        if entry.archived and entry.judged:
            del self._pending[record_id]
            recent = self._recent_labels()
            recent[record_id] = (entry.label, entry.prediction)
            while len(recent) > self._window:
                recent.popitem(last=False)
        return out

    def _recent_labels(self) -> OrderedDict[str, tuple[_Truth, _Served | None]]:
        # a joiner restored from a checkpoint written before shadows were judged has none
        if not hasattr(self, "_labels"):
            self._labels = OrderedDict()
        return self._labels

    def on_record(self, record: InputRecord) -> JoinResult:
        entry = self._entry(record.id)
        entry.features = dict(record.features)
        return self._join(record.id, entry)

    def on_prediction(self, served: Prediction) -> JoinResult:
        prediction = _Served.of(served)
        if prediction.shadow:
            joined = self._recent_labels().get(prediction.record_id)
            if joined is not None:  # its record was joined and let go already
                return JoinResult(outcomes=[_outcome(prediction, *joined)])
            entry = self._entry(prediction.record_id)
            entry.shadow = prediction
            return self._join(prediction.record_id, entry)
        entry = self._entry(prediction.record_id)
        entry.prediction = prediction
        return self._join(prediction.record_id, entry)

    def on_label(self, label: Label, at: datetime) -> JoinResult:
        entry = self._entry(label.record_id)
        entry.label = _Truth(label.label)
        entry.label_time = label.timestamp or at
        return self._join(label.record_id, entry)


def _plain(row: tuple[object, ...] | None) -> tuple[object, ...] | None:
    """A named tuple as a plain one: pickled without a call back into Python per row."""
    return None if row is None else tuple(row)


def _served(row: Sequence[Any] | None) -> _Served | None:
    return None if row is None else _Served(*row)


def _truth(row: Sequence[Any] | None) -> _Truth | None:
    return None if row is None else _Truth(*row)


def _features(
    names: Sequence[tuple[str, ...]], at: int | None, values: Sequence[float] | None
) -> dict[str, float] | None:
    return None if at is None or values is None else dict(zip(names[at], values, strict=True))


def _outcome(
    p: _Served,
    label: _Truth,
    served: _Served | None = None,
    *,
    features: dict[str, float] | None = None,
    labelled_at: datetime | None = None,
) -> Outcome:
    """``p`` judged by ``label`` (given at ``labelled_at``); a shadow's also compared with the
    ``served`` prediction."""
    return Outcome(
        record_id=p.record_id,
        model=p.model,
        version=p.version,
        output=p.output,
        label=label.label,
        correct=p.output == label.label,
        latency_ms=p.latency_ms,
        shadow=p.shadow,
        agrees=p.output == served.output if p.shadow and served is not None else None,
        features=features,
        url=p.url if features is not None else None,
        labelled_at=labelled_at,
    )

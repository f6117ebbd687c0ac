"""Records to a model's rows, and its answer rows to weir predictions: one place for the
scoring and shadow paths."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import datetime
from functools import cached_property
from math import isfinite
from typing import Any, overload

from pydantic import TypeAdapter, ValidationError
from pydantic_core import to_json

from agents.routing import Route
from connectors.kserve_client import InferenceResult
from connectors.predictor import rows_from_features
from schemas import Event, KafkaRecord, Lineage, Prediction
from schemas.binding import binary_kafka_alike
from schemas.events import new_id

_EVENTS = TypeAdapter(list[Event[Prediction]])


def route_rows(route: Route, features: Sequence[dict[str, float]]) -> list[Any]:
    """Each record's row in the route's feature order (the first record's names, sorted,
    when the route names none), or the ValueError that says why it does not fit."""
    order = route.features or tuple(sorted(features[0]))
    out: list[Any] = []
    for named in features:
        try:
            out.append([float(named[name]) for name in order])  # per record: a plain list
        except KeyError:
            try:
                rows_from_features(order, [named])
            except ValueError as err:  # names the missing feature
                out.append(err)
    return out


def route_lineage(route: Route) -> Lineage:
    return Lineage(modelname=route.model, modelversion=route.version, runid=route.run_id)


def prediction_of(
    route: Route, record_id: str, result: InferenceResult, i: int, *, shadow: bool = False
) -> Prediction:
    """The prediction for row ``i`` of ``result``; a ValidationError for an invalid row."""
    return Prediction(
        record_id=record_id,
        model=route.model,
        version=route.version,
        url=route.url,
        output=result.labels[i],
        scores=result.probabilities[i] if result.probabilities else None,
        latency_ms=result.latency_ms,
        shadow=shadow,
    )


def prediction_events(
    route: Route,
    record_ids: Sequence[str],
    result: InferenceResult,
    *,
    source: str,
    at: datetime,
    lineage: Lineage,
    shadow: bool = False,
) -> Sequence[Event[Prediction]] | None:
    """The prediction event of every row of ``result`` (``at``: the model call's time), or
    None when a row is not a valid prediction (:func:`prediction_of` then says which).

    The scoring path makes one per record, so the usual answer (every label an int, a
    finite float or a string, every score a finite float) is kept as its rows
    (:class:`CallPredictions`: written to Kafka without making an event a row); any
    other is built and validated in one pydantic-core call."""
    if not record_ids:
        return []
    ids = [new_id() for _ in record_ids]
    common = {
        "model": route.model,
        "version": route.version,
        "url": route.url,
        "latency_ms": result.latency_ms,
        "shadow": shadow,
    }

    def rows(which: range) -> list[dict[str, Any]]:
        probabilities = result.probabilities
        return [
            {
                "id": ids[i],
                "source": source,
                "time": at,
                "lineage": lineage,
                "data": {
                    "record_id": record_ids[i],
                    "output": result.labels[i],
                    "scores": probabilities[i] if probabilities else None,
                    **common,
                },
            }
            for i in which
        ]

    try:
        if not _plain(record_ids, result):
            return _EVENTS.validate_python(rows(range(len(record_ids))))
        (first,) = _EVENTS.validate_python(rows(range(1)))  # the shared fields, validated
    except ValidationError:
        return None
    made = CallPredictions(first, ids, record_ids, result, lambda: rows(range(1, len(ids))))
    return made if made.encodes_as_pydantic() else list(made)


def _plain(record_ids: Sequence[str], result: InferenceResult) -> bool:
    """Whether every row is one pydantic takes as it is: a record id of 1 to 256
    characters, a label of type int, str or float (finite), and scores (if any) a dict of
    str to finite float. Exact types only: a bool, a numpy number or an int score goes
    the long way, through pydantic."""
    for label in result.labels:
        kind = type(label)
        if not (kind is int or kind is str or (type(label) is float and isfinite(label))):
            return False
    for rid in record_ids:
        if type(rid) is not str or not 0 < len(rid) <= 256:
            return False
    for scores in result.probabilities or ():
        for name, p in scores.items():
            if type(name) is not str or type(p) is not float or not isfinite(p):
                return False
    return True


class CallPredictions(Sequence[Event[Prediction]]):
    """The prediction events of one model call, kept as its answer rows.

    :meth:`kafka_records` writes them (binary mode) straight from the rows, as
    :func:`~schemas.binding.to_kafka` would write each event, at a fraction of the cost
    of making and encoding an event per row; the events (the same ids, validated) are
    made the first time they are read. The first is made at once: it validates what
    the rows share (model, version, URL, latency) and is the template of the others'
    headers and JSON. It reads the answer when asked, so the answer must not change
    after (the scorer never changes one)."""

    def __init__(
        self,
        first: Event[Prediction],
        ids: list[str],
        record_ids: Sequence[str],
        result: InferenceResult,
        rest: Callable[[], list[dict[str, Any]]],
    ) -> None:
        self.first = first
        self._ids = ids
        self._record_ids = record_ids
        self._result = result
        self._rest = rest
        self._events: list[Event[Prediction]] | None = None

    def __len__(self) -> int:
        return len(self._ids)

    @overload
    def __getitem__(self, i: int) -> Event[Prediction]: ...
    @overload
    def __getitem__(self, i: slice) -> Sequence[Event[Prediction]]: ...
    def __getitem__(self, i: int | slice) -> Event[Prediction] | Sequence[Event[Prediction]]:
        if i == 0:
            return self.first  # what BatchOutcome.add_call reads: no need to make the rest
        if self._events is None:
            self._events = [self.first, *_EVENTS.validate_python(self._rest())]
        return self._events[i]

    @cached_property
    def _pieces(self) -> tuple[bytes, bytes]:
        """The JSON every row shares: after the record id up to the label, and after the
        scores (worked out once per call)."""
        data = self.first.data
        shared = to_json({"model": data.model, "version": data.version, "url": data.url})
        tail = to_json(
            {
                "latency_ms": data.latency_ms,
                "shadow": data.shadow,
                "decider": data.decider,
                "answers": data.answers,
            }
        )
        return b"," + shared[1:-1] + b',"output":', b"," + tail[1:]

    def _values(self, upto: int | None = None) -> list[bytes]:
        """The first ``upto`` rows' data (all: None) as JSON, in the order and form pydantic
        writes a Prediction."""
        mid, tail = self._pieces
        labels, probabilities = self._result.labels, self._result.probabilities
        scores = [to_json(p) for p in probabilities[:upto]] if probabilities else None
        return [
            b"".join(
                (
                    b'{"record_id":',
                    to_json(rid),
                    mid,
                    to_json(label),
                    b',"scores":',
                    scores[i] if scores else b"null",
                    tail,
                )
            )
            for i, (rid, label) in enumerate(zip(self._record_ids[:upto], labels, strict=False))
        ]

    def encodes_as_pydantic(self) -> bool:
        """Whether the first row's JSON is the bytes pydantic writes for its event's data
        (not so if Prediction's fields changed and :meth:`_values` did not follow)."""
        data = self.first.data
        return self._values(1)[0] == data.__pydantic_serializer__.to_json(data)

    def kafka_records(self) -> list[KafkaRecord]:
        """The events as :func:`~schemas.binding.to_kafka` writes them in binary mode."""
        return binary_kafka_alike(self.first, self._ids, self._values(), self._record_ids)

"""Records to a model's rows, and its answer rows to weir predictions: one place for the
scoring and shadow paths."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from pydantic import TypeAdapter, ValidationError

from agents.routing import Route
from connectors.kserve_client import InferenceResult
from connectors.predictor import rows_from_features
from schemas import Event, Lineage, Prediction
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
) -> list[Event[Prediction]] | None:
    """The prediction event of every row of ``result`` (``at``: the model call's time), built
    and validated in one pydantic-core call — what :func:`prediction_of` and ``new_event``
    make row by row, at two thirds of the cost (the scoring path makes one per record).
    None when a row is not a valid prediction: :func:`prediction_of` then says which."""
    probabilities = result.probabilities
    common = {
        "model": route.model,
        "version": route.version,
        "url": route.url,
        "latency_ms": result.latency_ms,
        "shadow": shadow,
    }
    try:
        return _EVENTS.validate_python(
            [
                {
                    "id": new_id(),
                    "source": source,
                    "time": at,
                    "lineage": lineage,
                    "data": {
                        "record_id": record_id,
                        "output": result.labels[i],
                        "scores": probabilities[i] if probabilities else None,
                        **common,
                    },
                }
                for i, record_id in enumerate(record_ids)
            ]
        )
    except ValidationError:
        return None

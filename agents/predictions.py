"""A model's answer row as a weir prediction: one place for the scoring and shadow paths."""

from __future__ import annotations

from agents.routing import Route
from connectors.kserve_client import InferenceResult
from schemas import Lineage, Prediction


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

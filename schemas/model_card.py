"""The metadata stored next to every model artifact in the registry.

``models/{name}/{version}/model.joblib`` holds the estimator and
``models/{name}/{version}/card.json`` this card: what the model expects
(feature order), what it was trained on, how well it did, and its lineage.
"""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from schemas.payloads import FeatureName, Identifier, ModelName, Version


class ModelCard(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid", allow_inf_nan=False)

    name: ModelName
    version: Version
    framework: Literal["sklearn", "river"]
    features: list[FeatureName] = Field(min_length=1)
    classes: list[int | str] | None = None
    metrics: dict[str, float] = Field(default_factory=dict)
    created_at: datetime
    training_data: str | None = None
    training_rows: int | None = Field(default=None, ge=0)
    run_id: Identifier | None = None
    alert_id: Identifier | None = None

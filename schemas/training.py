"""One labelled training example, as the stream archives it to MinIO."""

from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel, ConfigDict, Field

from schemas.payloads import FeatureName, Identifier, Output


class TrainingRow(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid", allow_inf_nan=False)

    record_id: Identifier
    features: dict[FeatureName, float] = Field(min_length=1)
    label: Output
    time: datetime

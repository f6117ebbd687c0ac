"""One labelled training example, as the stream archives it to MinIO."""

from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel, ConfigDict

from schemas.payloads import Features, Identifier, Output


class TrainingRow(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid", allow_inf_nan=False)

    record_id: Identifier
    features: Features
    label: Output
    time: datetime

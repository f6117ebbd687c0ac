"""One labelled training example, as the stream archives it to MinIO."""

from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel, ConfigDict, Field

from schemas.payloads import Features, Identifier, Output, Version


class TrainingRow(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid", allow_inf_nan=False)

    record_id: Identifier
    features: Features
    label: Output
    time: datetime
    served: Output | None = Field(
        None,
        description="what the serving version answered for this record, when its prediction "
        "was in before the row was archived: an online learner's snapshot answered before it "
        "learnt the record, so a run compares candidates with it on rows it had not seen",
    )
    served_version: Version | None = Field(None, description="the route version that answered")

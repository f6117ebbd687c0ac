"""The metadata stored next to every model artifact in the registry.

``models/{name}/{version}/model.joblib`` holds the estimator and
``models/{name}/{version}/card.json`` this card: what the model expects
(feature order), what it was trained on, how well it did, and its lineage.
"""

from __future__ import annotations

import json
from datetime import datetime
from typing import Annotated, Literal

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
    # which model family the pipeline chose, its hyperparameters and validation scores
    learner: dict[str, str | float | int | bool | None] | None = None
    # set by the registry when it stores the artifact: its sha256, and the publisher's
    # signature over the card (connectors/registry.py); a card without them is refused
    # where signatures are required
    artifact_sha256: Annotated[str, Field(pattern=r"^[0-9a-f]{64}$")] | None = None
    signature: Annotated[str, Field(max_length=512)] | None = None

    def signed_bytes(self) -> bytes:
        """What the card's signature covers: every field but the signature, canonical JSON."""
        # a card without a learner signs as cards did before the field existed
        body = self.model_dump(
            mode="json", exclude={"signature"} | ({"learner"} if self.learner is None else set())
        )
        return json.dumps(body, sort_keys=True, separators=(",", ":")).encode()

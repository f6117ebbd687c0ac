"""The model registry in MinIO: versioned artifacts with their cards.

Layout (bucket ``WEIR_MINIO__MODELS_BUCKET``)::

    {name}/{version}/model.joblib   the estimator (scikit-learn or river), joblib-pickled
    {name}/{version}/card.json      its ModelCard

Artifacts are pickles: load only from a registry you control.
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from typing import Any

import joblib

from connectors.minio_store import ObjectStore
from schemas.model_card import ModelCard

ARTIFACT = "model.joblib"
CARD = "card.json"


@dataclass(frozen=True)
class LoadedModel:
    card: ModelCard
    estimator: Any


class ModelRegistry:
    def __init__(self, store: ObjectStore, bucket: str) -> None:
        self._store = store
        self._bucket = bucket

    def uri(self, name: str, version: str) -> str:
        return f"s3://{self._bucket}/{name}/{version}/"

    def publish(self, card: ModelCard, estimator: Any) -> str:
        """Store the artifact, then the card (the card's presence marks it complete)."""
        buf = io.BytesIO()
        joblib.dump(estimator, buf)
        prefix = f"{card.name}/{card.version}/"
        self._store.put_bytes(self._bucket, prefix + ARTIFACT, buf.getvalue())
        self._store.put_bytes(
            self._bucket, prefix + CARD, card.model_dump_json(indent=2).encode(), "application/json"
        )
        return self.uri(card.name, card.version)

    def card(self, name: str, version: str) -> ModelCard:
        raw = self._store.get_bytes(self._bucket, f"{name}/{version}/{CARD}")
        return ModelCard.model_validate_json(raw)

    def load(self, name: str, version: str) -> LoadedModel:
        card = self.card(name, version)
        blob = self._store.get_bytes(self._bucket, f"{name}/{version}/{ARTIFACT}")
        return LoadedModel(card=card, estimator=joblib.load(io.BytesIO(blob)))

    def versions(self, name: str) -> list[str]:
        """Versions with a card, oldest first by creation time."""
        found = {
            key.split("/")[1]
            for key in self._store.list_keys(self._bucket, f"{name}/")
            if key.endswith("/" + CARD)
        }
        cards = [self.card(name, v) for v in found]
        return [c.version for c in sorted(cards, key=lambda c: c.created_at)]

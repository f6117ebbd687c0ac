"""The model registry in MinIO: versioned artifacts with their cards.

Layout (bucket ``WEIR_MINIO__MODELS_BUCKET``)::

    {name}/{version}/model.joblib   the estimator (scikit-learn or river), joblib-pickled
                                    (an online learner's snapshot: a plain pickle, said in its card)
    {name}/{version}/card.json      its ModelCard
    {name}/{learner}.state/state.pickle, state.json
                                    an online learner's whole state and its card, for
                                    its own restart (not a version: no card.json)

Artifacts are pickles, so loading one runs its code. The registry therefore
writes the artifact's sha256 into the card and signs the card with the route
signing key (:mod:`connectors.signing`); where signatures are required
(``WEIR_CONTROL__REQUIRE_SIGNATURES``, the default) :meth:`ModelRegistry.load`
refuses a card that is unsigned or signed by an unknown key, and an artifact
whose digest does not match the card — before unpickling anything. Write
access to the bucket alone is no longer enough to run code in a model server.
"""

from __future__ import annotations

import hashlib
import io
import pickle
from dataclasses import dataclass
from typing import Any

import joblib

from connectors.minio_store import ObjectNotFound, ObjectStore
from connectors.signing import KeyPair, Verifier, load_signer, signature_of
from schemas import ConfigurationError, ServiceError
from schemas.model_card import ModelCard
from schemas.settings import Settings

ARTIFACT = "model.joblib"
CARD = "card.json"
STATE = ("state.pickle", "state.json")  # a learner's state: artifact and card file names
PLAIN_PICKLE = "pickle"  # a card's learner.format for artifacts written with dumps(plain=True)


@dataclass(frozen=True)
class LoadedModel:
    card: ModelCard
    estimator: Any


class ArtifactRefused(ServiceError):
    """A model artifact that may not be loaded: unsigned card, bad signature, wrong digest."""

    retriable = False


class ModelRegistry:
    def __init__(
        self,
        store: ObjectStore,
        bucket: str,
        *,
        signer: KeyPair | None = None,
        verifier: Verifier | None = None,
    ) -> None:
        self._store = store
        self._bucket = bucket
        self._signer = signer
        self._verifier = verifier

    @classmethod
    def for_settings(cls, settings: Settings) -> ModelRegistry:
        """The registry of ``settings``: it signs cards when this process holds the signing
        key, and checks cards and artifacts when signatures are required."""
        try:
            signer: KeyPair | None = load_signer(settings)
        except ConfigurationError:  # a reader: it does not publish
            signer = None
        required = settings.control.require_signatures
        return cls(
            ObjectStore(settings.minio),
            settings.minio.models_bucket,
            signer=signer,
            verifier=Verifier(settings) if required else None,
        )

    def uri(self, name: str, version: str) -> str:
        return f"s3://{self._bucket}/{name}/{version}/"

    @staticmethod
    def dumps(estimator: Any, *, plain: bool = False) -> bytes:
        """The stored form of ``estimator``; call it where nothing mutates the estimator.

        ``plain``: a plain pickle, about ten times faster to write and four times faster
        to read than joblib's for a river forest (a few MB of small objects, no arrays);
        its card must then say ``learner.format = "pickle"``, which :meth:`load` reads.
        """
        if plain:
            return pickle.dumps(estimator, protocol=pickle.HIGHEST_PROTOCOL)
        buf = io.BytesIO()
        joblib.dump(estimator, buf)
        return buf.getvalue()

    def publish(self, card: ModelCard, estimator: Any) -> str:
        """Store the artifact, then its card with the artifact's digest, signed when this
        registry has a signer (the card's presence marks the version complete)."""
        return self.publish_bytes(card, self.dumps(estimator))

    def publish_bytes(
        self, card: ModelCard, blob: bytes, files: tuple[str, str] = (ARTIFACT, CARD)
    ) -> str:
        """:meth:`publish` of an artifact already dumped (:meth:`dumps`); ``files``: the
        artifact's and the card's names (:meth:`save_state` stores under others)."""
        card = card.model_copy(
            update={"artifact_sha256": hashlib.sha256(blob).hexdigest(), "signature": None}
        )
        if self._signer is not None:
            card = card.model_copy(
                update={"signature": signature_of(self._signer, card.signed_bytes())}
            )
        prefix = f"{card.name}/{card.version}/"
        artifact, card_file = files
        self._store.put_bytes(self._bucket, prefix + artifact, blob)
        self._store.put_bytes(
            self._bucket,
            prefix + card_file,
            card.model_dump_json(indent=2).encode(),
            "application/json",
        )
        return self.uri(card.name, card.version)

    def save_state(self, card: ModelCard, blob: bytes) -> None:
        """Store an online learner's whole state (``card.version``: ``<learner>.state``),
        signed and checked as a version is, where no reader of versions looks."""
        self.publish_bytes(card, blob, STATE)

    def load_state(self, name: str, learner: str) -> LoadedModel:
        """The state :meth:`save_state` stored for ``learner`` (raises ObjectNotFound,
        ArtifactRefused)."""
        return self.load(name, f"{learner}.state", STATE)

    def card(self, name: str, version: str, card_file: str = CARD) -> ModelCard:
        raw = self._store.get_bytes(self._bucket, f"{name}/{version}/{card_file}")
        return ModelCard.model_validate_json(raw)

    def checked_card(self, name: str, version: str, card_file: str = CARD) -> ModelCard:
        """The card of ``name`` ``version``, its signature and artifact digest required when
        signatures are (raises ObjectNotFound, ArtifactRefused)."""
        card = self.card(name, version, card_file)
        where = self.uri(name, version)
        if self._verifier is not None:
            problem = (
                "its card is unsigned"
                if card.signature is None
                else self._verifier.check(card.signature, card.signed_bytes())
            )
            if problem is not None:
                raise ArtifactRefused(
                    f"refusing to load {where}: {problem}", service="minio", address=where
                )
            if card.artifact_sha256 is None:
                raise ArtifactRefused(
                    f"refusing to load {where}: its card has no artifact digest",
                    service="minio",
                    address=where,
                )
        return card

    def load(
        self, name: str, version: str, files: tuple[str, str] = (ARTIFACT, CARD)
    ) -> LoadedModel:
        """The estimator of ``name`` ``version``, checked before it is unpickled."""
        artifact, card_file = files
        card = self.checked_card(name, version, card_file)
        where = self.uri(name, version)
        blob = self._store.get_bytes(self._bucket, f"{name}/{version}/{artifact}")
        digest = hashlib.sha256(blob).hexdigest()
        if card.artifact_sha256 is not None and digest != card.artifact_sha256:
            raise ArtifactRefused(
                f"refusing to load {where}{artifact}: its sha256 {digest} is not the card's "
                f"{card.artifact_sha256} (the artifact was replaced)",
                service="minio",
                address=where,
            )
        plain = card.learner is not None and card.learner.get("format") == PLAIN_PICKLE
        estimator = pickle.loads(blob) if plain else joblib.load(io.BytesIO(blob))
        return LoadedModel(card=card, estimator=estimator)

    def load_or_newer(self, name: str, version: str) -> LoadedModel:
        """``version``; for an online learner's snapshot ``<learner>.<n>`` deleted since it
        was named (the learner keeps its newest few), the newest snapshot of the same
        learner: a later state of the model that was named. Its card says which."""
        try:
            return self.load(name, version)
        except ObjectNotFound:
            series = version.rpartition(".")[0]
            wanted = snapshot_number(series, version)
            if wanted is None:  # not a learner's snapshot: nothing stands in for it
                raise
            newer = [
                n
                for v in self.version_names(name)
                if (n := snapshot_number(series, v)) is not None and n > wanted
            ]
            if not newer:
                raise
            return self.load(name, f"{series}.{max(newer)}")

    def delete(self, name: str, version: str) -> None:
        """Remove a version: its card first (so it stops being a version), then its artifact."""
        self._store.delete(self._bucket, f"{name}/{version}/{CARD}")
        self._store.delete(self._bucket, f"{name}/{version}/{ARTIFACT}")

    def version_names(self, name: str) -> list[str]:
        """Versions with a card, unordered, without reading the cards."""
        return sorted(
            {
                key.split("/")[1]
                for key in self._store.list_keys(self._bucket, f"{name}/")
                if key.endswith("/" + CARD)
            }
        )

    def versions(self, name: str) -> list[str]:
        """Versions with a card, oldest first by creation time."""
        cards = [self.card(name, v) for v in self.version_names(name)]
        return [c.version for c in sorted(cards, key=lambda c: c.created_at)]


def snapshot_number(name: str, version: str) -> int | None:
    """n of a registry version ``<name>.<n>`` (an online learner's snapshot), else None."""
    prefix, dot, number = version.rpartition(".")
    return int(number) if dot and prefix == name and number.isdigit() else None

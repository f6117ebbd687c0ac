"""The model registry in MinIO: versioned artifacts with their cards.

Layout (bucket ``WEIR_MINIO__MODELS_BUCKET``)::

    {name}/{version}/model.joblib   the estimator (scikit-learn or river), joblib-pickled
                                    (an online learner's snapshot: a plain pickle, said in its card)
    {name}/{version}/card.json      its ModelCard
    {name}/{learner}.state/state.json, state.<sha256>.pickle
                                    an online learner's whole state, for its own
                                    restart (not a version: no card.json); the card,
                                    written last, names the pickle by its digest

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
import random
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
STATE_CARD = "state.json"  # a learner's saved state: its card; the pickle: state_file()
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
        its card must then say ``learner.format = "pickle"``, which :meth:`load` reads
        (:func:`lean_pickle` writes one too, without the random generators' state).
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

    def publish_bytes(self, card: ModelCard, blob: bytes) -> str:
        """:meth:`publish` of an artifact already dumped (:meth:`dumps`)."""
        self._store_pair(self._sealed(card, blob), blob, ARTIFACT, CARD)
        return self.uri(card.name, card.version)

    def _sealed(self, card: ModelCard, blob: bytes) -> ModelCard:
        """``card`` with ``blob``'s digest, signed when this registry has a signer."""
        card = card.model_copy(
            update={"artifact_sha256": hashlib.sha256(blob).hexdigest(), "signature": None}
        )
        if self._signer is None:
            return card
        signature = signature_of(self._signer, card.signed_bytes())
        return card.model_copy(update={"signature": signature})

    def _store_pair(self, card: ModelCard, blob: bytes, artifact: str, card_file: str) -> None:
        """The artifact, then its card: a card names only an artifact already stored."""
        prefix = f"{card.name}/{card.version}/"
        self._store.put_bytes(self._bucket, prefix + artifact, blob)
        self._store.put_bytes(
            self._bucket,
            prefix + card_file,
            card.model_dump_json(indent=2).encode(),
            "application/json",
        )

    def save_state(self, card: ModelCard, blob: bytes) -> None:
        """Store an online learner's whole state (``card.version``: ``<learner>.state``),
        signed and checked as a version is, where no reader of versions looks.

        The pickle is stored under its digest and the card after it, so a reader (or a
        crash between the two writes) meets the old card with the old pickle, or the new
        with the new, never a mix; pickles of older saves are removed after the card."""
        card = self._sealed(card, blob)
        keep = state_file(card.artifact_sha256 or "")
        self._store_pair(card, blob, keep, STATE_CARD)
        prefix = f"{card.name}/{card.version}/"
        for key in list(self._store.list_keys(self._bucket, prefix)):
            if key.removeprefix(prefix) not in (keep, STATE_CARD):
                self._store.delete(self._bucket, key)

    def load_state(self, name: str, learner: str) -> LoadedModel:
        """The state :meth:`save_state` stored for ``learner`` (raises ObjectNotFound,
        ArtifactRefused). A save that replaced the state between reading its card and its
        pickle is met by reading the card again."""
        version = f"{learner}.state"
        try:
            return self._load_state(name, version)
        except ObjectNotFound:
            return self._load_state(name, version)

    def _load_state(self, name: str, version: str) -> LoadedModel:
        card = self.checked_card(name, version, STATE_CARD)
        if card.artifact_sha256 is None:  # written by save_state, which always sets it
            raise ArtifactRefused(
                f"refusing to load {self.uri(name, version)}: its card names no state",
                service="minio",
                address=self.uri(name, version),
            )
        return self._loaded(name, version, card, state_file(card.artifact_sha256))

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

    def load(self, name: str, version: str) -> LoadedModel:
        """The estimator of ``name`` ``version``, checked before it is unpickled."""
        return self._loaded(name, version, self.checked_card(name, version), ARTIFACT)

    def _loaded(self, name: str, version: str, card: ModelCard, artifact: str) -> LoadedModel:
        """``artifact`` of ``name`` ``version`` (``card`` checked), its digest checked
        against the card before it is unpickled."""
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
            newer = self.newer_snapshot(name, version)
            if newer is None:  # not a learner's snapshot, or none after it
                raise
            return self.load(name, newer)

    def newer_snapshot(self, name: str, version: str) -> str | None:
        """The newest snapshot of the learner whose snapshot ``version`` (``<learner>.<n>``)
        is, when newer than ``n``; None for a version that is not a snapshot."""
        series = version.rpartition(".")[0]
        wanted = snapshot_number(series, version)
        if wanted is None:
            return None
        newest = next(iter(self.snapshot_numbers(name, series)), None)
        return f"{series}.{newest}" if newest is not None and newest > wanted else None

    def snapshot_numbers(self, name: str, learner: str) -> list[int]:
        """The numbers of ``learner``'s snapshots of ``name`` (``<learner>.<n>``), newest
        first."""
        return sorted(
            (n for v in self.version_names(name) if (n := snapshot_number(learner, v)) is not None),
            reverse=True,
        )

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


def lean_pickle(model: Any) -> bytes:
    """How an online learner stores its snapshots and its saved state: a plain pickle
    (the card says ``learner.format = "pickle"``) without its random generators' state
    (:class:`_Lean`): a river forest's is about twenty times smaller, and as much faster
    to write and to load."""
    buf = io.BytesIO()
    _Lean(buf, protocol=pickle.HIGHEST_PROTOCOL).dump(model)
    return buf.getvalue()


_SEEDS = random.Random()


def _reseeded() -> random.Random:
    """A random generator standing in for one :class:`_Lean` left out."""
    return random.Random(_SEEDS.getrandbits(64))


class _Lean(pickle.Pickler):
    """A pickler that stores every ``random.Random`` as a fresh generator.

    river keeps a Mersenne Twister (2,500 bytes of state, 3.8 KB pickled) in every
    Gaussian estimator of every leaf of a Hoeffding tree, and one in every leaf: 95 %
    of a forest's pickle (7.6 MB → 0.33 MB for an ARF after 10,000 records of the
    adaptation benchmark's nonlinear stream; writing 0.126 → 0.013 s, loading 0.178 →
    0.020 s). Predictions never draw from them, so they come out the same. A model that
    learns on from such a pickle (a learner restarted) draws other random numbers than
    it would have (which features a leaf tries, ARF's Poisson weights): the same
    distribution, not the same draws.
    """

    def reducer_override(self, obj: Any) -> Any:
        if type(obj) is random.Random:
            return _reseeded, ()
        return NotImplemented


def state_file(digest: str) -> str:
    """The name of a learner's saved state pickle of sha256 ``digest``."""
    return f"state.{digest}.pickle"

"""Signed routes: Ed25519 keys for model-version events (``cryptography``, no home-made crypto).

Whoever publishes a route (the CLI, the retrainer, ``weir models bootstrap``)
signs the event with the private key; every worker verifies it against the
public keys it accepts before doing anything with it. The signature covers
:meth:`~schemas.Event.signed_bytes` — id, type, source, time, subject,
lineage and the data — and rides in the ``weirsig`` extension attribute as
``<key id>:<base64 signature>``; the key id is the first 16 hex digits of the
public key's sha256, so a worker names the key it did not know.

Keys live in ``WEIR_CONTROL__KEYS_DIR`` (default ``<cache>/keys``):
``control.key`` (the private key, raw 32 bytes in base64, mode 0600) and
``control.pub`` (the accepted public keys, one base64 line each, newest
first). :func:`rotate` makes a new pair and keeps the old public keys
accepted until they are dropped from the file. ``WEIR_CONTROL__SIGNING_KEY``
and ``WEIR_CONTROL__PUBLIC_KEYS`` give them from the environment instead
(containers, Kubernetes secrets).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from schemas import ConfigurationError, Event
from schemas.settings import Settings

PRIVATE_FILE = "control.key"
PUBLIC_FILE = "control.pub"


def keys_dir(settings: Settings) -> Path:
    return settings.control.keys_dir or settings.stack.cache_dir / "keys"


def _raw_public(key: Ed25519PublicKey) -> bytes:
    return key.public_bytes(Encoding.Raw, PublicFormat.Raw)


def key_id(public: bytes) -> str:
    """The short name of a public key (16 hex digits of its sha256)."""
    return hashlib.sha256(public).hexdigest()[:16]


def _b64(text: str, what: str) -> bytes:
    try:
        raw = base64.b64decode(text.strip(), validate=True)
    except binascii.Error as err:
        raise ConfigurationError(f"{what} is not base64: {err}") from err
    if len(raw) != 32:
        raise ConfigurationError(f"{what} is {len(raw)} bytes; an Ed25519 key is 32")
    return raw


@dataclass(frozen=True)
class KeyPair:
    private: Ed25519PrivateKey

    @property
    def public(self) -> bytes:
        return _raw_public(self.private.public_key())

    @property
    def id(self) -> str:
        return key_id(self.public)


def _write_private(path: Path, pair: Ed25519PrivateKey) -> None:
    raw = pair.private_bytes_raw()
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as out:
        out.write(base64.b64encode(raw).decode() + "\n")


def _read_public_file(path: Path) -> list[bytes]:
    if not path.exists():
        return []
    lines = [ln.split("#")[0].strip() for ln in path.read_text().splitlines()]
    return [_b64(ln, f"a key in {path}") for ln in lines if ln]


def ensure_keys(settings: Settings) -> tuple[KeyPair, bool]:
    """The signing key pair, made on first use; and whether it was made now."""
    if settings.control.signing_key is not None:
        return load_signer(settings), False
    directory = keys_dir(settings)
    private = directory / PRIVATE_FILE
    if private.exists():
        return load_signer(settings), False
    pair = Ed25519PrivateKey.generate()
    _write_private(private, pair)
    known = _read_public_file(directory / PUBLIC_FILE)
    _write_public_file(directory / PUBLIC_FILE, [_raw_public(pair.public_key()), *known])
    return KeyPair(pair), True


def rotate(settings: Settings, *, keep: int = 2) -> tuple[KeyPair, list[str]]:
    """A new signing key; the newest ``keep`` public keys stay accepted. Returns the pair and
    the ids of the keys dropped."""
    directory = keys_dir(settings)
    known = _read_public_file(directory / PUBLIC_FILE)
    pair = Ed25519PrivateKey.generate()
    accepted = [_raw_public(pair.public_key()), *known]
    _write_public_file(directory / PUBLIC_FILE, accepted[:keep])
    _write_private(directory / PRIVATE_FILE, pair)
    return KeyPair(pair), [key_id(k) for k in accepted[keep:]]


def _write_public_file(path: Path, keys: list[bytes]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    lines = [f"{base64.b64encode(k).decode()}  # {key_id(k)}" for k in dict.fromkeys(keys)]
    path.write_text("\n".join(lines) + "\n")


def load_signer(settings: Settings) -> KeyPair:
    """The private key that signs routes (setting, else the keys directory)."""
    secret = settings.control.signing_key
    if secret is not None:
        raw = _b64(secret.get_secret_value(), "WEIR_CONTROL__SIGNING_KEY")
    else:
        path = keys_dir(settings) / PRIVATE_FILE
        if not path.exists():
            raise ConfigurationError(
                f"no key to sign routes with: {path} does not exist and "
                "WEIR_CONTROL__SIGNING_KEY is not set; run `weir keys init`"
            )
        raw = _b64(path.read_text(), str(path))
    return KeyPair(Ed25519PrivateKey.from_private_bytes(raw))


def accepted_keys(settings: Settings) -> dict[str, Ed25519PublicKey]:
    """Key id → public key, for every key a worker accepts: WEIR_CONTROL__PUBLIC_KEYS, the
    keys directory's public keys, and the public half of WEIR_CONTROL__SIGNING_KEY."""
    raws = [_b64(k, "a key in WEIR_CONTROL__PUBLIC_KEYS") for k in settings.control.public_keys]
    raws += _read_public_file(keys_dir(settings) / PUBLIC_FILE)
    if settings.control.signing_key is not None:
        raws.append(load_signer(settings).public)
    return {key_id(r): Ed25519PublicKey.from_public_bytes(r) for r in raws}


def verify_only(settings: Settings) -> Settings:
    """``settings`` for a process that verifies routes but never signs one: the signing key
    is dropped and its public half is kept among the accepted keys."""
    secret = settings.control.signing_key
    if secret is None:
        return settings
    public = base64.b64encode(load_signer(settings).public).decode()
    control = settings.control.model_copy(
        update={
            "signing_key": None,
            "public_keys": tuple(dict.fromkeys((*settings.control.public_keys, public))),
        }
    )
    return settings.model_copy(update={"control": control})


def signature_of(pair: KeyPair, payload: bytes) -> str:
    """``<key id>:<base64 Ed25519 signature>`` of ``payload``."""
    return f"{pair.id}:{base64.b64encode(pair.private.sign(payload)).decode()}"


def sign(pair: KeyPair, event: Event[Any]) -> Event[Any]:
    """``event`` with its signature attribute set."""
    unsigned = event.model_copy(update={"signature": None})
    return unsigned.model_copy(update={"signature": signature_of(pair, unsigned.signed_bytes())})


def signed(settings: Settings, event: Event[Any]) -> Event[Any]:
    """``event`` signed with the configured signing key."""
    return sign(load_signer(settings), event)


class Verifier:
    """Checks signatures against the accepted public keys.

    The keys are read at start and again (at most every ``reload_s``) when an
    event names a key not known yet, so a rotation reaches running workers.
    """

    def __init__(
        self,
        settings: Settings,
        *,
        reload_s: float = 5.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._settings = settings
        self._reload_s = reload_s
        self._clock = clock
        self.keys = accepted_keys(settings)
        self._read_at = clock()

    def problem(self, event: Event[Any]) -> str | None:
        """Why ``event``'s signature is not acceptable, or None when it is."""
        if event.signature is None:
            return "unsigned: a route must be signed by a key the workers accept"
        return self.check(event.signature, event.signed_bytes())

    def check(self, signature: str, payload: bytes) -> str | None:
        """Why ``signature`` (``<key id>:<base64>``) does not sign ``payload``, or None."""
        key, _, b64 = signature.partition(":")
        if key not in self.keys and self._clock() - self._read_at >= self._reload_s:
            self.keys, self._read_at = accepted_keys(self._settings), self._clock()
        public = self.keys.get(key)
        if public is None:
            known = ", ".join(sorted(self.keys)) or "none"
            return f"signed by unknown key {key[:16]!r} (accepted: {known})"
        try:
            public.verify(base64.b64decode(b64, validate=True), payload)
        except (InvalidSignature, binascii.Error, ValueError):
            return f"bad signature for key {key}: altered, or not signed by it"
        return None

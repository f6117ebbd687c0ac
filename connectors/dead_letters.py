"""The whole raw value of a dead letter too large to carry inline, kept in MinIO.

A dead letter carries at most ``WEIR_EVENTS__DEAD_LETTER_INLINE_BYTES`` of its
raw value (:class:`~schemas.DeadLetter`); :class:`OversizeStore` puts the whole
value at ``s3://<dead_letter_bucket>/<sha256>`` and names it in the letter's
``raw_ref``. It never holds up the caller for long: each attempt is bounded by
``WEIR_EVENTS__DEAD_LETTER_STORE_TIMEOUT_S``, and after a failure it does not try
again for ``retry_after_s`` — meanwhile letters go out truncated, with the size
and sha256 of what they stood for. :func:`whole_value` reads it back (for
``weir dlq replay``), checking the digest.
"""

from __future__ import annotations

import hashlib
import logging
import time
from collections.abc import Callable

from connectors.bounded import Bounded
from connectors.minio_store import ObjectStore
from schemas import DeadLetter, Event, ServiceError
from schemas.settings import Settings

log = logging.getLogger("weir.dead_letters")


class OversizeStore:
    def __init__(
        self,
        settings: Settings,
        *,
        store: ObjectStore | None = None,
        retry_after_s: float = 30.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        timeout_s = settings.events.dead_letter_store_timeout_s
        self._bucket = settings.minio.dead_letter_bucket
        self._store = store or ObjectStore(settings.minio, timeout_s=timeout_s)
        self._minio = Bounded(timeout_s, pause_s=retry_after_s, clock=clock)
        self.stored = 0
        self.failed = 0

    async def complete(self, event: Event[DeadLetter], value: bytes) -> Event[DeadLetter]:
        """``event`` with its letter's ``raw_ref`` set when the value was cut and could be
        stored (``value``: the whole raw value the letter stands for)."""
        letter = event.data
        if letter.complete or letter.raw_ref is not None:
            return event
        if self._minio.paused:
            self.failed += 1
            return event
        key = letter.raw_sha256 or hashlib.sha256(value).hexdigest()
        try:
            ref = await self._minio.call(self._store.put_bytes, self._bucket, key, value)
        except (ServiceError, TimeoutError) as exc:
            self.failed += 1
            log.warning(
                "could not store a %d-byte dead-letter value in MinIO (%s); it goes out "
                "truncated with its sha256, and no value is stored for %.0fs",
                len(value),
                exc,
                self._minio.pause_s,
            )
            return event
        self.stored += 1
        return event.model_copy(update={"data": letter.model_copy(update={"raw_ref": ref})})


def whole_value(letter: DeadLetter, store: ObjectStore) -> bytes:
    """The dead letter's whole raw value: inline, or read from ``raw_ref`` and checked."""
    if letter.complete:
        return letter.raw
    if letter.raw_ref is None:
        raise ServiceError(
            f"dead letter {letter.raw_sha256} holds only {len(letter.raw)} of its "
            f"{letter.raw_size} bytes and the whole value was not stored",
            service="minio",
            address="-",
            retriable=False,
        )
    bucket, _, key = letter.raw_ref.removeprefix("s3://").partition("/")
    value = store.get_bytes(bucket, key)
    if hashlib.sha256(value).hexdigest() != letter.raw_sha256:
        raise ServiceError(
            f"{letter.raw_ref} does not match the dead letter's sha256",
            service="minio",
            address=letter.raw_ref,
            retriable=False,
        )
    return value

"""Decoding for the insight roles: each topic's bad messages are dead-lettered by one role.

Records are dead-lettered by the scoring role, which reads them first; the
monitor, feedback and performance roles skip bad records and predictions
instead of dead-lettering them again. Labels are read by the feedback role
alone, so it dead-letters theirs (:class:`Letters`).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from agents.letters import dead_letter
from connectors.dead_letters import OversizeStore
from schemas import (
    DeadLetter,
    Event,
    EventDecodeError,
    Payload,
    RawMessage,
    decode_many,
    decode_raw,
)
from schemas.topics import Topic
from streams.context import RoleContext, raw_message


def decoded(ctx: RoleContext, message: Any) -> Event[Any] | None:
    """The event in ``message`` (a Faust message or a RawMessage), or None when it does not
    decode."""
    raw = message if isinstance(message, RawMessage) else raw_message(message)
    try:
        return decode_raw(raw, max_bytes=ctx.settings.events.max_bytes)
    except EventDecodeError:
        return None


def decoded_batch(ctx: RoleContext, batch: Sequence[RawMessage]) -> list[Event[Any] | None]:
    """:func:`decoded` for each message of a batch, in order, decoded together
    (:func:`schemas.decode_many`)."""
    found = decode_many(batch, max_bytes=ctx.settings.events.max_bytes)
    return [None if isinstance(f, EventDecodeError) else f for f in found]


class Letters:
    """Dead letters of one batch for the topics a role owns, sent before the batch is done."""

    def __init__(self, ctx: RoleContext, owned: dict[Topic, type[Payload]]) -> None:
        self._ctx = ctx
        self._owned = {ctx.name(t): kind for t, kind in owned.items()}
        self._oversize = OversizeStore(ctx.settings)
        self._pending: list[tuple[Event[DeadLetter], bytes]] = []

    def decode_batch(self, batch: Sequence[RawMessage]) -> list[Event[Any] | None]:
        """The event in each message of ``batch``, in order (decoded together by
        :func:`schemas.decode_many`); None for one that does not decode or is of the wrong
        type for an owned topic: then, if it came from an owned topic, it is dead-lettered."""
        found = decode_many(batch, max_bytes=self._ctx.settings.events.max_bytes)
        return [self._checked(raw, f) for raw, f in zip(batch, found, strict=True)]

    def _checked(self, raw: RawMessage, found: Event[Any] | EventDecodeError) -> Event[Any] | None:
        settings = self._ctx.settings
        kind = self._owned.get(raw.origin.topic or "")
        if isinstance(found, EventDecodeError):
            if kind is not None:
                letter = dead_letter(
                    settings, found.raw, found.error_class, found.reason, event_id=found.event_id
                )
                self._pending.append((letter, raw.value))
            return None
        if kind is None or isinstance(found.data, kind):
            return found
        reason = f"{found.type} on {raw.origin.topic}; expected {kind.event_type}"
        letter = dead_letter(settings, raw, "WrongTopic", reason, event_id=found.id)
        self._pending.append((letter, raw.value))
        return None

    async def send(self) -> None:
        """Store the batch's dead letters in Kafka (whole values of cut ones in MinIO)."""
        pending, self._pending = self._pending, []
        if not pending:
            return
        events = [await self._oversize.complete(event, value) for event, value in pending]
        await self._ctx.send_all([(Topic.DEAD_LETTER, e) for e in events])
        for event in events:
            self._ctx.live.record_event(event)

"""Dead-letter events as every processor makes them: raw bytes inline up to the limit."""

from __future__ import annotations

from schemas import DeadLetter, Event, RawMessage, new_event
from schemas.events import Clock, utc_now
from schemas.settings import Settings


def dead_letter(
    settings: Settings,
    raw: RawMessage,
    error_class: str,
    reason: str,
    *,
    now: Clock = utc_now,
    event_id: str | None = None,
    attempts: int = 1,
    letter_id: str | None = None,
) -> Event[DeadLetter]:
    """The dead-letter event for ``raw``, cut to ``events.dead_letter_inline_bytes`` inline
    (:class:`~connectors.dead_letters.OversizeStore` keeps the whole value of a cut one)."""
    letter = DeadLetter.from_raw(
        raw,
        error_class=error_class,
        reason=reason,
        attempts=attempts,
        event_id=event_id,
        inline_max=settings.events.dead_letter_inline_bytes,
    )
    return new_event(letter, source=settings.events.source, now=now, event_id=letter_id)

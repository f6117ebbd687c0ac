"""Decoding for the insight roles: a bad message is the scoring role's to dead-letter."""

from __future__ import annotations

from typing import Any

from schemas import Event, EventDecodeError, RawMessage, decode_raw
from streams.context import RoleContext, raw_message


def decoded(ctx: RoleContext, message: Any) -> Event[Any] | None:
    """The event in ``message`` (a Faust message or a RawMessage), or None when it does not
    decode.

    Records and predictions that do not decode are dead-lettered once, by the
    scoring role that reads them first; the monitor, feedback and performance
    roles skip them instead of dead-lettering them again.
    """
    raw = message if isinstance(message, RawMessage) else raw_message(message)
    try:
        return decode_raw(raw, max_bytes=ctx.settings.events.max_bytes)
    except EventDecodeError:
        return None

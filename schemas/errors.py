"""weir's one exception tree.

Every error weir raises on purpose derives from :class:`WeirError`. Connectors
translate library errors (confluent-kafka, httpx, minio, kfp) into these at the
boundary, so callers decide with one attribute, ``retriable``, whether to retry
with backoff or to dead-letter::

    WeirError                       retriable: class default, may be overridden
    ├── ConfigurationError          a setting is wrong or a tool is missing (no)
    ├── ServiceError                a service cannot be reached or failed (yes)
    │   └── StackError              the local stack could not start/stop (no)
    └── EventDecodeError            bytes that are not a valid weir event (no)
        ├── EventTooLargeError      over the configured size limit
        ├── MalformedEventError     not a CloudEvent: bad JSON, bad headers, ...
        ├── UnknownEventTypeError   a CloudEvent whose ``type`` weir does not know
        └── SchemaViolationError    known type, data fails its schema (NaN, extra...)

:class:`EventDecodeError` carries everything a dead-letter event needs: the raw
value bytes, key and headers, the reason, and where the bytes came from.
"""

from __future__ import annotations

from typing import NamedTuple


class WeirError(Exception):
    """Root of every error weir raises on purpose."""

    retriable: bool = False

    def __init__(self, message: str, *, retriable: bool | None = None) -> None:
        super().__init__(message)
        self.message = message
        if retriable is not None:
            self.retriable = retriable


class ConfigurationError(WeirError):
    """A setting is invalid, or a tool the configuration needs is missing."""


class ServiceError(WeirError):
    """A service (broker, object store, model server) is unreachable or failed."""

    retriable = True

    def __init__(
        self, message: str, *, service: str, address: str, retriable: bool | None = None
    ) -> None:
        super().__init__(message, retriable=retriable)
        self.service = service
        self.address = address


class StackError(ServiceError):
    """The local stack could not be started, checked or stopped."""

    retriable = False


# Named tuples, not frozen dataclasses: one of each is made for every record read (a
# tuple costs about a third), and they are as immutable.


class Origin(NamedTuple):
    """Where undecodable bytes were read from (all optional: HTTP has no offset)."""

    topic: str | None = None
    partition: int | None = None
    offset: int | None = None


class RawMessage(NamedTuple):
    """The untouched bytes of a message, as received."""

    value: bytes
    key: bytes | None = None
    headers: tuple[tuple[str, bytes], ...] = ()
    origin: Origin = Origin()


class EventDecodeError(WeirError):
    """Bytes that could not be decoded into a weir event.

    ``error_class`` is a stable, short name for dashboards and the dead-letter
    topic; ``reason`` is the human explanation.
    """

    error_class = "EventDecodeError"

    def __init__(self, reason: str, raw: RawMessage, *, event_id: str | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.raw = raw
        self.event_id = event_id

    def at(self, origin: Origin) -> EventDecodeError:
        """Return the same error with the origin (topic, partition, offset) filled in."""
        return type(self)(self.reason, self.raw._replace(origin=origin), event_id=self.event_id)


class EventTooLargeError(EventDecodeError):
    error_class = "EventTooLarge"


class MalformedEventError(EventDecodeError):
    error_class = "MalformedEvent"


class UnknownEventTypeError(EventDecodeError):
    error_class = "UnknownEventType"


class SchemaViolationError(EventDecodeError):
    error_class = "SchemaViolation"

"""CloudEvents protocol bindings for Kafka and HTTP: encode and strictly decode.

Encoding goes through the CloudEvents SDK (``cloudevents.kafka`` and
``cloudevents.conversion``): binary mode by default, structured on request.

Decoding is weir's own and strict, because the SDK is lenient where a
dead-letter topic must not be: it invents an ``id`` and ``time`` when they are
missing, lets non-UTF-8 header bytes escape as ``UnicodeDecodeError``, and
turns every Kafka header into an attribute in structured mode. Here every
failure of any kind becomes one :class:`~schemas.errors.EventDecodeError`
subclass carrying the raw bytes, so a caller can dead-letter it.

Mode detection follows the bindings: Kafka is binary when a ``ce_specversion``
header is present and structured otherwise (``application/cloudevents+json``
or the SDK's ``application/json``); HTTP is binary with ``ce-specversion``,
structured with ``application/cloudevents+json``.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime
from functools import cache
from typing import Any, Literal, NamedTuple, NoReturn, cast
from urllib.parse import unquote

from cloudevents import conversion as ce_conversion
from cloudevents import kafka as ce_kafka
from cloudevents.http import CloudEvent as SdkEvent
from pydantic import BaseModel, ConfigDict, Field, Json, TypeAdapter, ValidationError

from schemas.errors import (
    EventDecodeError,
    EventTooLargeError,
    MalformedEventError,
    Origin,
    RawMessage,
    SchemaViolationError,
    UnknownEventTypeError,
)
from schemas.events import (
    JSON_CONTENT_TYPE,
    LINEAGE_ATTRIBUTES,
    SIGNATURE_ATTRIBUTE,
    SPEC_VERSION,
    Event,
    Lineage,
    as_utc,
)
from schemas.payloads import PAYLOAD_BY_TYPE, Payload

Mode = Literal["binary", "structured"]
STRUCTURED_CONTENT_TYPE = "application/cloudevents+json"
DEFAULT_MAX_BYTES = 1_048_576
LINEAGE_KEYS = tuple(Lineage.model_fields)
_NO_LINEAGE = Lineage()


class KafkaRecord(NamedTuple):
    """A Kafka message as weir produces it: key, value and headers as bytes (a named tuple:
    one is made per prediction, and a tuple costs a fifth of a frozen dataclass)."""

    value: bytes
    key: bytes | None
    headers: tuple[tuple[str, bytes], ...]


# ---------------------------------------------------------------- encoding


def _sdk_event(event: Event[Any]) -> SdkEvent:
    attrs: dict[str, Any] = dict(event.attributes())
    if event.partition_key is not None:
        attrs["partitionkey"] = event.partition_key
    return SdkEvent(attrs, event.data.model_dump(mode="json"))


def _json(obj: Any) -> bytes:
    return json.dumps(obj, allow_nan=False, separators=(",", ":")).encode()


_CE_NAME = {
    name: f"ce_{name}"
    for name in ("specversion", "source", "type", "time", "subject", SIGNATURE_ATTRIBUTE)
}
_CE_NAME |= {name: f"ce_{name}" for name in LINEAGE_ATTRIBUTES}
_ENCODED: dict[str, bytes] = {}  # attribute values that repeat from event to event


def _encoded(value: str) -> bytes:
    """``value`` as UTF-8: source, type, time, lineage repeat across a batch's events."""
    out = _ENCODED.get(value)
    if out is None:
        if len(_ENCODED) >= 1024:
            _ENCODED.clear()
        out = _ENCODED[value] = value.encode()
    return out


# The headers that repeat from event to event, by (type, source, time, subject, lineage,
# signature): the predictions of one model call share all but their id.
_SHARED: dict[tuple[Any, ...], tuple[Lineage, tuple[tuple[str, bytes], ...]]] = {}


def _shared_headers(event: Event[Any]) -> tuple[tuple[str, bytes], ...]:
    lineage = event.lineage
    key = (event.type, event.source, event.time, event.subject, id(lineage), event.signature)
    hit = _SHARED.get(key)
    if hit is not None and hit[0] is lineage:  # the same object, not one at a reused id
        return hit[1]
    attrs = event.attributes()
    del attrs["datacontenttype"], attrs["id"]
    shared = tuple((_CE_NAME.get(name) or f"ce_{name}", _encoded(v)) for name, v in attrs.items())
    if len(_SHARED) >= 256:
        _SHARED.clear()
    _SHARED[key] = (lineage, shared)
    return shared


_CONTENT_TYPE = ("content-type", JSON_CONTENT_TYPE.encode())


def _binary_kafka(event: Event[Any]) -> KafkaRecord:
    """Binary mode, written directly: every attribute a ``ce_`` header, the data as JSON.

    The same headers and key as the CloudEvents SDK's ``cloudevents.kafka.to_binary``
    and the same data (a unit test holds them equal), at a fraction of the
    cost: this runs once per prediction on the scoring path.
    """
    data = event.data
    key = data.partition_key
    return KafkaRecord(
        data.__pydantic_serializer__.to_json(data),
        None if key is None else key.encode(),
        (_CONTENT_TYPE, ("ce_id", event.id.encode()), *_shared_headers(event)),
    )


def binary_kafka_alike(
    template: Event[Any],
    ids: Sequence[str],
    values: Sequence[bytes],
    keys: Sequence[str],
) -> list[KafkaRecord]:
    """Binary-mode records of events that share every attribute but their id with
    ``template`` (the events of one model call), given each one's id, data (as JSON) and
    partition key: what :func:`to_kafka` writes for each, without making the events."""
    shared = _shared_headers(template)
    return [
        KafkaRecord(value, key.encode(), (_CONTENT_TYPE, ("ce_id", event_id.encode()), *shared))
        for event_id, value, key in zip(ids, values, keys, strict=True)
    ]


def to_kafka(event: Event[Any], *, mode: Mode = "binary") -> KafkaRecord:
    """Encode ``event`` for Kafka; the payload's partition key becomes the message key."""
    if mode == "binary":
        return _binary_kafka(event)
    msg = ce_kafka.to_structured(_sdk_event(event), envelope_marshaller=_json)
    msg = msg._replace(headers={"content-type": STRUCTURED_CONTENT_TYPE.encode()})
    key = msg.key.encode() if isinstance(msg.key, str) else msg.key
    value = msg.value.encode() if isinstance(msg.value, str) else msg.value
    return KafkaRecord(value=value, key=key, headers=tuple(msg.headers.items()))


def to_http(event: Event[Any], *, mode: Mode = "binary") -> tuple[dict[str, str], bytes]:
    """Encode ``event`` as an HTTP request's headers and body."""
    attrs = dict(event.attributes())
    sdk = SdkEvent(attrs, event.data.model_dump(mode="json"))
    if mode == "binary":
        headers, body = ce_conversion.to_binary(sdk, data_marshaller=_json)
    else:
        headers, body = ce_conversion.to_structured(sdk, data_marshaller=lambda d: d)
    return {k: v for k, v in headers.items()}, body


# ---------------------------------------------------------------- decoding


class _Attributes(BaseModel):
    """The context attributes a weir consumer requires, validated."""

    model_config = ConfigDict(extra="ignore")

    specversion: Literal["1.0"]
    id: str = Field(min_length=1, max_length=256)
    source: str = Field(min_length=1, max_length=1024)
    type: str = Field(min_length=1, max_length=256)
    time: datetime | None = None
    subject: str | None = Field(default=None, max_length=1024)
    datacontenttype: str | None = None


def _reject_constant(name: str) -> NoReturn:
    raise ValueError(f"{name} is not valid JSON")


def _strict_json(raw: bytes | str) -> Any:
    return json.loads(raw, parse_constant=_reject_constant)


def _fail(cls: type[EventDecodeError], reason: str, raw: RawMessage, **kw: Any) -> NoReturn:
    raise cls(reason, raw, **kw)


_BOUNDS = {
    "less_than_equal": "<=",
    "greater_than_equal": ">=",
    "less_than": "<",
    "greater_than": ">",
}


def _message(e: Any) -> str:
    """pydantic's message, with a float bound written short (``1e+150``, not 151 digits)."""
    op, ctx = _BOUNDS.get(e["type"]), e.get("ctx") or {}
    limit = next(iter(ctx.values()), None)
    if op is not None and isinstance(limit, float):
        return f"{e['input']!r} is beyond its bound: it should be {op} {limit:g}"
    return str(e["msg"])


def _validation_reason(err: ValidationError) -> str:
    parts = []
    for e in err.errors(include_url=False)[:5]:
        loc = ".".join(str(p) for p in e["loc"]) or "(root)"
        parts.append(f"{loc}: {_message(e)}")
    more = err.error_count() - len(parts)
    return "; ".join(parts) + (f" (and {more} more)" if more > 0 else "")


def _build(attrs: Mapping[str, Any], data: Any, raw: RawMessage) -> Event[Any]:
    """Validate attributes and data into an Event; ``data`` is bytes or parsed JSON."""
    try:
        ctx = _Attributes.model_validate(attrs)
    except ValidationError as err:
        _fail(MalformedEventError, f"invalid CloudEvent attributes: {_validation_reason(err)}", raw)
    event_id = ctx.id
    ctype = ctx.datacontenttype or JSON_CONTENT_TYPE
    if ctype != JSON_CONTENT_TYPE:
        ctype = ctype.split(";")[0].strip().lower()
    if ctype != JSON_CONTENT_TYPE and not ctype.endswith("+json"):
        _fail(
            MalformedEventError,
            f"unsupported datacontenttype {ctx.datacontenttype!r}: weir events carry JSON",
            raw,
            event_id=event_id,
        )
    payload_cls = PAYLOAD_BY_TYPE.get(ctx.type)
    if payload_cls is None:
        _fail(
            UnknownEventTypeError,
            f"unknown event type {ctx.type!r}; known types: {', '.join(sorted(PAYLOAD_BY_TYPE))}",
            raw,
            event_id=event_id,
        )
    if data is None:
        _fail(SchemaViolationError, f"{ctx.type} event has no data", raw, event_id=event_id)
    lineage_attrs = {k: attrs[k] for k in LINEAGE_KEYS if k in attrs}
    payload, lineage = _fast_payload(payload_cls, data, lineage_attrs)
    if payload is None:
        if isinstance(data, bytes):
            try:
                data = _strict_json(data)
            except (ValueError, UnicodeDecodeError, RecursionError) as err:
                _fail(MalformedEventError, f"data is not valid JSON: {err}", raw, event_id=event_id)
        try:
            payload = payload_cls.model_validate(data)
            lineage = Lineage.model_validate(lineage_attrs)
        except ValidationError as err:
            _fail(
                SchemaViolationError,
                f"{ctx.type} data does not match its schema: {_validation_reason(err)}",
                raw,
                event_id=event_id,
            )
    signature = attrs.get(SIGNATURE_ATTRIBUTE)
    time = None if ctx.time is None else as_utc(ctx.time)
    return Event(
        id=ctx.id,
        source=ctx.source,
        time=time,
        subject=ctx.subject,
        data=payload,
        lineage=lineage,
        signature=signature if isinstance(signature, str) and 0 < len(signature) <= 512 else None,
    )


def _fast_payload(
    payload_cls: type[Payload], data: Any, lineage_attrs: dict[str, Any]
) -> tuple[Payload | None, Lineage]:
    """The fast path (the scoring role decodes every record): the data's bytes validated
    in one pydantic-core call; ``(None, …)`` for whatever it rejects, which the strict
    path then explains in weir's own terms (malformed JSON vs. schema violation)."""
    if not isinstance(data, bytes):
        return None, _NO_LINEAGE
    try:
        payload = payload_cls.model_validate_json(data)
        return payload, Lineage.model_validate(lineage_attrs) if lineage_attrs else _NO_LINEAGE
    except ValidationError:
        return None, _NO_LINEAGE


def _check_size(raw: RawMessage, max_bytes: int) -> None:
    size = len(raw.value) + sum(len(k) + len(v) for k, v in raw.headers)
    if size > max_bytes:
        _fail(EventTooLargeError, f"message is {size} bytes, over the limit of {max_bytes}", raw)


def _decode_structured(raw: RawMessage) -> Event[Any]:
    try:
        envelope = _strict_json(raw.value)
    except (ValueError, UnicodeDecodeError, RecursionError) as err:
        _fail(MalformedEventError, f"structured CloudEvent is not valid JSON: {err}", raw)
    if not isinstance(envelope, dict):
        _fail(MalformedEventError, "structured CloudEvent must be a JSON object", raw)
    if "data" in envelope and "data_base64" in envelope:
        _fail(MalformedEventError, "structured CloudEvent has both data and data_base64", raw)
    data: Any = envelope.get("data")
    if "data_base64" in envelope:
        try:
            data = base64.b64decode(envelope["data_base64"], validate=True)
        except (binascii.Error, TypeError, ValueError) as err:
            _fail(MalformedEventError, f"data_base64 is not base64: {err}", raw)
    attrs = {k: v for k, v in envelope.items() if k not in ("data", "data_base64")}
    return _build(attrs, data, raw)


def _header_text(name: str, value: bytes, raw: RawMessage) -> str:
    try:
        return value.decode("utf-8")
    except UnicodeDecodeError:
        _fail(MalformedEventError, f"header {name!r} is not UTF-8", raw)


def _header_bytes(value: bytes | str | None) -> bytes:
    if isinstance(value, bytes):
        return value
    return b"" if value is None else str(value).encode("utf-8", "replace")


def from_kafka(
    value: bytes | None,
    key: bytes | None = None,
    headers: Iterable[tuple[str, bytes | str | None]] | None = None,
    *,
    max_bytes: int = DEFAULT_MAX_BYTES,
    origin: Origin | None = None,
) -> Event[Any]:
    """Decode a Kafka message (binary or structured mode) into an :class:`Event`.

    Raises only :class:`~schemas.errors.EventDecodeError` subclasses.
    """
    hdrs = tuple((str(k), _header_bytes(v)) for k, v in (headers or ()))
    raw = RawMessage(value=value or b"", key=key, headers=hdrs, origin=origin or Origin())
    if value is None:
        _check_size(raw, max_bytes)
        _fail(MalformedEventError, "message has no value (a tombstone is not an event)", raw)
    return decode_raw(raw, max_bytes=max_bytes)


def decode_raw(raw: RawMessage, *, max_bytes: int = DEFAULT_MAX_BYTES) -> Event[Any]:
    """Decode a message already captured as :class:`~schemas.errors.RawMessage`.

    Raises only :class:`~schemas.errors.EventDecodeError` subclasses.
    """
    usual = _usual(raw, max_bytes)
    if usual is not None:
        attrs, payload_cls = usual
        try:
            event: Event[Any] = Event(
                **_envelope(attrs, payload_cls.model_validate_json(raw.value))
            )
        except ValidationError:
            pass
        else:
            if _aware(event):
                return event
    return _decode_named(raw, max_bytes)


def decode_many(
    raws: Sequence[RawMessage], *, max_bytes: int = DEFAULT_MAX_BYTES
) -> list[Event[Any] | EventDecodeError]:
    """:func:`decode_raw` for each message, in order, each error in its message's place.

    The scoring role decodes every record through this. The usual binary-mode
    events of one type are validated together: their payloads in one pydantic-core
    call (each value parsed on its own, as ``model_validate_json`` would), their
    envelopes in another. A group in which anything fails is decoded message by
    message, by :func:`decode_raw`, which explains.
    """
    out: list[Event[Any] | EventDecodeError | None] = [None] * len(raws)
    groups: dict[type[Payload], list[tuple[int, dict[str, str]]]] = {}
    for i, raw in enumerate(raws):
        usual = _usual(raw, max_bytes)
        if usual is None:
            out[i] = _decoded(raw, max_bytes)
        else:
            attrs, payload_cls = usual
            groups.setdefault(payload_cls, []).append((i, attrs))
    for payload_cls, members in groups.items():
        payloads, events = _adapters(payload_cls)
        try:
            data = payloads.validate_python([raws[i].value for i, _ in members])
            made = events.validate_python(
                [_envelope(attrs, d) for (_, attrs), d in zip(members, data, strict=True)]
            )
        except ValidationError:
            made = [None] * len(members)
        for (i, _), event in zip(members, made, strict=True):
            out[i] = event if event is not None and _aware(event) else _decoded(raws[i], max_bytes)
    return cast(list[Event[Any] | EventDecodeError], out)


def _decoded(raw: RawMessage, max_bytes: int) -> Event[Any] | EventDecodeError:
    try:
        return decode_raw(raw, max_bytes=max_bytes)
    except EventDecodeError as err:
        return err


@cache
def _adapters(payload_cls: type[Payload]) -> tuple[TypeAdapter[Any], TypeAdapter[Any]]:
    """Validators of many ``payload_cls`` payloads from their JSON bytes, and of their
    envelopes (built by pydantic-core once per payload type)."""
    return TypeAdapter(list[Json[payload_cls]]), TypeAdapter(list[Event[payload_cls]])  # type: ignore[valid-type]


def _aware(event: Event[Any]) -> bool:
    """No time, or one with an offset: a naive time is made UTC by the strict path."""
    return event.time is None or event.time.tzinfo is not None


def _usual(raw: RawMessage, max_bytes: int) -> tuple[dict[str, str], type[Payload]] | None:
    """The attributes and payload class of ``raw`` when it is the usual binary-mode event
    of a known type, else None."""
    attrs = _usual_attributes(raw, max_bytes)
    payload_cls = PAYLOAD_BY_TYPE.get(attrs.get("type", "")) if attrs is not None else None
    return None if attrs is None or payload_cls is None else (attrs, payload_cls)


def _usual_attributes(raw: RawMessage, max_bytes: int) -> dict[str, str] | None:
    """The context attributes of ``raw`` when it is the usual binary-mode event — UTF-8
    headers, within ``max_bytes``, specversion 1.0, JSON data — else None.

    One pass over the headers (every role makes it once per message): the
    message's size and, as text, the attributes.
    """
    size = len(raw.value)
    attrs: dict[str, str] = {}
    known = _ATTRIBUTE_OF
    try:
        for name, value in raw.headers:
            size += len(name) + len(value)
            key = known.get(name)
            if key is None:
                key = _attribute_of(name)
            if key:
                attrs[key] = value.decode()
    except UnicodeDecodeError:
        return None
    ctype = attrs.get("datacontenttype")
    if size > max_bytes or attrs.get("specversion") != SPEC_VERSION:
        return None
    return attrs if ctype is None or ctype == JSON_CONTENT_TYPE else None


_ATTRIBUTE_OF: dict[str, str] = {}  # header name → context attribute ("": none), as met


def _attribute_of(name: str) -> str:
    """The context attribute a binary-mode header carries ("" for another header); the
    answer is kept for the first 1,024 distinct names (producers use a handful)."""
    low = name.lower()
    key = low[3:] if low[:3] == "ce_" else "datacontenttype" if low == "content-type" else ""
    if len(_ATTRIBUTE_OF) < 1024:
        _ATTRIBUTE_OF[name] = key
    return key


def _envelope(attrs: dict[str, str], data: Payload) -> dict[str, Any]:
    """An event's fields from binary-mode attributes (validated with the event: its fields
    have the attributes' own limits) and its validated payload."""
    lineage = {k: attrs[k] for k in LINEAGE_KEYS if k in attrs}
    signature = attrs.get(SIGNATURE_ATTRIBUTE)
    return {
        "id": attrs.get("id"),
        "source": attrs.get("source"),
        "time": attrs.get("time"),
        "subject": attrs.get("subject"),
        "data": data,
        "lineage": lineage or _NO_LINEAGE,
        "signature": signature if signature and len(signature) <= 512 else None,
    }


def _decode_named(raw: RawMessage, max_bytes: int) -> Event[Any]:
    """:func:`decode_raw` for any message but the usual: strict, and an error names what is
    wrong (the header that is not UTF-8, the attribute, the payload's field)."""
    _check_size(raw, max_bytes)
    names = {k.lower(): v for k, v in raw.headers}
    if "ce_specversion" not in names:
        return _decode_structured(raw)
    attrs: dict[str, Any] = {
        name[3:]: _header_text(name, val, raw) for name, val in names.items() if name[:3] == "ce_"
    }
    if "content-type" in names:
        attrs["datacontenttype"] = _header_text("content-type", names["content-type"], raw)
    return _build(attrs, raw.value, raw)


def from_http(
    headers: Mapping[str, str],
    body: bytes,
    *,
    max_bytes: int = DEFAULT_MAX_BYTES,
) -> Event[Any]:
    """Decode an HTTP request (binary or structured mode) into an :class:`Event`."""
    lowered = {k.lower(): v for k, v in headers.items()}
    raw = RawMessage(
        value=body, headers=tuple((k, v.encode("utf-8", "replace")) for k, v in lowered.items())
    )
    if len(body) > max_bytes:
        _fail(EventTooLargeError, f"body is {len(body)} bytes, over the limit of {max_bytes}", raw)
    ctype = lowered.get("content-type", "").split(";")[0].strip().lower()
    if "ce-specversion" in lowered:
        attrs: dict[str, Any] = {
            k[3:]: unquote(v) for k, v in lowered.items() if k.startswith("ce-")
        }
        if "content-type" in lowered:
            attrs["datacontenttype"] = lowered["content-type"]
        return _build(attrs, body, raw)
    if ctype == STRUCTURED_CONTENT_TYPE:
        return _decode_structured(raw)
    _fail(
        MalformedEventError,
        "not a CloudEvent: no ce-specversion header (binary mode) and content-type "
        f"{ctype or '(none)'!r} is not {STRUCTURED_CONTENT_TYPE} (structured mode)",
        raw,
    )


__all__ = [
    "DEFAULT_MAX_BYTES",
    "SPEC_VERSION",
    "STRUCTURED_CONTENT_TYPE",
    "KafkaRecord",
    "Mode",
    "binary_kafka_alike",
    "decode_many",
    "decode_raw",
    "from_http",
    "from_kafka",
    "to_http",
    "to_kafka",
]

"""CloudEvents bindings: round trips, modes, and strict typed errors for bad input."""

from __future__ import annotations

import json
from datetime import timedelta
from typing import Any

import pytest
from cloudevents import kafka as ce_kafka
from cloudevents.http import CloudEvent as SdkEvent
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from schemas import (
    PAYLOAD_TYPES,
    DeadLetter,
    Event,
    EventDecodeError,
    EventTooLargeError,
    InputRecord,
    Lineage,
    MalformedEventError,
    Origin,
    Payload,
    SchemaViolationError,
    UnknownEventTypeError,
    from_http,
    from_kafka,
    new_event,
    to_http,
    to_kafka,
)
from schemas.binding import _json, _sdk_event
from tests.samples import FIXED_TIME, PAYLOADS, SAMPLES

LINEAGE = Lineage(modelname="churn", modelversion="3", runid="run-1", alertid="a-1")


def fixed_clock():
    return FIXED_TIME


def test_samples_cover_every_event_type():
    assert {type(p) for p in SAMPLES} == set(PAYLOAD_TYPES)


@pytest.mark.parametrize("mode", ["binary", "structured"])
@pytest.mark.parametrize("payload", SAMPLES, ids=lambda p: p.event_type)
def test_kafka_round_trip(payload: Payload, mode: str):
    event = new_event(payload, source="tests", now=fixed_clock, lineage=LINEAGE, subject="s")
    rec = to_kafka(event, mode=mode)
    assert rec.key == (payload.partition_key.encode() if payload.partition_key else None)
    back = from_kafka(rec.value, rec.key, rec.headers)
    assert back == event
    assert back.type == payload.event_type
    assert back.lineage == LINEAGE


@pytest.mark.parametrize("mode", ["binary", "structured"])
@pytest.mark.parametrize("payload", SAMPLES, ids=lambda p: p.event_type)
def test_http_round_trip(payload: Payload, mode: str):
    event = new_event(payload, source="tests", now=fixed_clock, lineage=LINEAGE)
    headers, body = to_http(event, mode=mode)
    if mode == "binary":
        assert headers["ce-type"] == payload.event_type
        assert headers["ce-modelversion"] == "3"
    else:
        assert headers["content-type"] == "application/cloudevents+json"
        assert json.loads(body)["data"] == payload.model_dump(mode="json")
    assert from_http(headers, body) == event


def test_binary_mode_is_the_default_and_lineage_rides_in_headers():
    event = new_event(SAMPLES[0], source="tests", now=fixed_clock, lineage=LINEAGE)
    headers = dict(to_kafka(event).headers)
    assert headers["ce_type"] == b"io.weir.record.v1"
    assert headers["ce_runid"] == b"run-1"
    assert headers["content-type"] == b"application/json"


def test_structured_with_plain_json_content_type_from_the_sdk_decodes():
    # The SDK's own structured encoding says application/json, not application/cloudevents+json.
    sdk = SdkEvent(
        {
            "type": "io.weir.record.v1",
            "source": "other-producer",
            "id": "e-1",
            "datacontenttype": "application/json",
        },
        {"id": "r-2", "features": {"a": 1.0}},
    )
    msg = ce_kafka.to_structured(sdk)
    assert msg.headers["content-type"] == b"application/json"
    event = from_kafka(msg.value, None, list(msg.headers.items()))
    assert event.data == InputRecord(id="r-2", features={"a": 1.0})
    assert event.id == "e-1"


def test_a_time_without_an_offset_is_taken_as_utc():
    # another client's structured event whose time has no offset: consumers subtract it
    # from aware times (the learner's lag, the retrainer's archive window), so it must be aware
    value = json.dumps(
        {
            "specversion": "1.0",
            "type": "io.weir.record.v1",
            "source": "other-producer",
            "id": "e-naive",
            "time": "2026-11-30T08:00:00",
            "data": {"id": "r-3", "features": {"a": 1.0}},
        }
    ).encode()
    event = from_kafka(value, None, [("content-type", b"application/cloudevents+json")])
    assert event.time is not None and event.time.utcoffset() == timedelta(0)
    assert event.time.hour == 8


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow])
@given(payload=PAYLOADS, mode=st.sampled_from(["binary", "structured"]))
def test_any_valid_event_survives_kafka_encode_decode(payload: Payload, mode: str):
    event = new_event(payload, source="prop", now=fixed_clock)
    rec = to_kafka(event, mode=mode)
    assert from_kafka(rec.value, rec.key, rec.headers) == event


@settings(max_examples=150, suppress_health_check=[HealthCheck.too_slow])
@given(payload=PAYLOADS, mode=st.sampled_from(["binary", "structured"]))
def test_any_valid_event_survives_http_encode_decode(payload: Payload, mode: str):
    event = new_event(payload, source="prop", now=fixed_clock)
    headers, body = to_http(event, mode=mode)
    assert from_http(headers, body) == event


header_names = st.sampled_from(
    ["ce_specversion", "ce_id", "ce_source", "ce_type", "content-type", "ce_time", "x-other"]
)


@settings(max_examples=500)
@given(
    value=st.none() | st.binary(max_size=300),
    key=st.none() | st.binary(max_size=20),
    headers=st.lists(st.tuples(header_names, st.binary(max_size=40)), max_size=6),
)
def test_arbitrary_kafka_bytes_raise_only_the_typed_error(value, key, headers):
    try:
        from_kafka(value, key, headers, max_bytes=2048)
    except EventDecodeError as err:
        assert err.raw.value == (value or b"")
        assert err.raw.key == key
        assert err.reason


json_values = st.recursive(
    st.none() | st.booleans() | st.floats() | st.integers() | st.text(max_size=10),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=12,
)


@settings(max_examples=300)
@given(
    envelope=st.fixed_dictionaries(
        {},
        optional={
            "specversion": st.sampled_from(["1.0", "0.3", 1]),
            "id": json_values,
            "source": json_values,
            "type": st.sampled_from(sorted(p.event_type for p in PAYLOAD_TYPES)) | json_values,
            "data": json_values,
            "data_base64": json_values,
            "time": json_values,
        },
    )
)
def test_arbitrary_structured_json_raises_only_the_typed_error(envelope):
    raw = json.dumps(envelope).encode()
    try:
        from_kafka(raw)
    except EventDecodeError as err:
        assert err.raw.value == raw


@settings(max_examples=300)
@given(
    headers=st.dictionaries(
        st.sampled_from(["ce-specversion", "ce-id", "ce-type", "ce-source", "content-type"]),
        st.text(max_size=30),
    ),
    body=st.binary(max_size=200),
)
def test_arbitrary_http_requests_raise_only_the_typed_error(headers, body):
    try:
        from_http(headers, body)
    except EventDecodeError as err:
        assert err.raw.value == body


def _binary(data: bytes, **attrs: str) -> list[tuple[str, bytes]]:
    base = {"specversion": "1.0", "id": "e-1", "source": "t", "type": "io.weir.record.v1"}
    base.update(attrs)
    return [("content-type", b"application/json")] + [
        (f"ce_{k}", v.encode()) for k, v in base.items()
    ]


BAD_INPUTS = {
    "not json": (b"{nope", _binary(b""), MalformedEventError, "not valid JSON"),
    "NaN literal": (b'{"id":"r","features":{"x":NaN}}', _binary(b""), MalformedEventError, "NaN"),
    "overflow to inf": (
        b'{"id":"r","features":{"x":1e999}}',
        _binary(b""),
        SchemaViolationError,
        "finite",
    ),
    "missing field": (
        b'{"features":{"x":1}}',
        _binary(b""),
        SchemaViolationError,
        "id: Field required",
    ),
    "extra field": (
        b'{"id":"r","features":{"x":1},"colour":"red"}',
        _binary(b""),
        SchemaViolationError,
        "colour: Extra inputs are not permitted",
    ),
    "wrong type": (
        b'{"id":"r","features":{"x":"high"}}',
        _binary(b""),
        SchemaViolationError,
        "features.x",
    ),
    "number as a string": (
        b'{"id":"r","features":{"x":"1.5"}}',
        _binary(b""),
        SchemaViolationError,
        "features.x: Input should be a valid number",
    ),
    "boolean as a number": (
        b'{"id":"r","features":{"x":true}}',
        _binary(b""),
        SchemaViolationError,
        "features.x: Input should be a valid number",
    ),
    "finite but squares to inf": (
        b'{"id":"r","features":{"x":-1e308}}',
        _binary(b""),
        SchemaViolationError,
        "beyond",
    ),
    "too many features": (
        json.dumps({"id": "r", "features": {f"f{i}": 1.0 for i in range(257)}}).encode(),
        _binary(b""),
        SchemaViolationError,
        "at most 256 items",
    ),
    "unknown type": (
        b"{}",
        _binary(b"", type="com.example.unknown.v1"),
        UnknownEventTypeError,
        "com.example.unknown.v1",
    ),
    "missing id": (
        b'{"id":"r","features":{"x":1}}',
        [h for h in _binary(b"") if h[0] != "ce_id"],
        MalformedEventError,
        "id: Field required",
    ),
    "bad spec version": (
        b'{"id":"r","features":{"x":1}}',
        _binary(b"", specversion="0.3"),
        MalformedEventError,
        "specversion",
    ),
    "non-JSON content type": (
        b"abc",
        [("content-type", b"text/plain"), *_binary(b"")[1:]],
        MalformedEventError,
        "text/plain",
    ),
}


@pytest.mark.parametrize("case", sorted(BAD_INPUTS))
def test_bad_input_raises_a_clear_typed_error(case: str):
    value, headers, expected, words = BAD_INPUTS[case]
    with pytest.raises(expected) as info:
        from_kafka(value, b"k", headers, origin=Origin("weir.records", 2, 17))
    err = info.value
    assert words in err.reason
    assert err.raw.value == value
    assert err.raw.key == b"k"
    assert err.raw.origin == Origin("weir.records", 2, 17)


def test_oversized_message_is_rejected_before_parsing():
    value = b'{"id":"r","features":{"x":1}}' + b" " * 5000
    with pytest.raises(EventTooLargeError, match="over the limit of 4096"):
        from_kafka(value, None, _binary(b""), max_bytes=4096)


def test_tombstone_and_non_utf8_headers_are_malformed():
    with pytest.raises(MalformedEventError, match="tombstone"):
        from_kafka(None, b"k", _binary(b""))
    with pytest.raises(MalformedEventError, match="not UTF-8"):
        from_kafka(b"{}", None, [*_binary(b""), ("ce_subject", b"\xff\xfe")])


def test_http_without_cloudevent_markers_says_which_modes_exist():
    with pytest.raises(MalformedEventError, match="ce-specversion"):
        from_http({"content-type": "application/json"}, b"{}")


def test_dead_letter_from_error_keeps_raw_bytes_and_origin():
    raw = b"\xff\x00 not json"
    with pytest.raises(EventDecodeError) as info:
        from_kafka(raw, b"key-1", [("x", b"1")], origin=Origin("weir.records", 1, 99))
    letter = DeadLetter.from_error(info.value, attempts=3)
    assert letter.raw == raw
    assert letter.key == b"key-1"
    assert letter.error_class == "MalformedEvent"
    assert (letter.source_topic, letter.partition, letter.offset) == ("weir.records", 1, 99)
    assert letter.attempts == 3
    # and the dead letter is itself a valid event that round-trips
    event = new_event(letter, source="tests", now=fixed_clock)
    rec = to_kafka(event)
    assert from_kafka(rec.value, rec.key, rec.headers).data.raw == raw


def test_binary_mode_matches_the_cloudevents_sdk():
    """weir writes binary mode itself (the hot path); the SDK's output is the reference."""
    for payload in SAMPLES:
        event = new_event(payload, source="test", lineage=Lineage(modelname="churn", runid="r"))
        ours = to_kafka(event)
        sdk = ce_kafka.to_binary(_sdk_event(event), data_marshaller=_json)
        key = sdk.key.encode() if isinstance(sdk.key, str) else sdk.key
        assert (ours.key, dict(ours.headers)) == (key, dict(sdk.headers))
        assert json.loads(ours.value) == json.loads(sdk.value)
        assert from_kafka(ours.value, ours.key, ours.headers) == event


@pytest.mark.parametrize(
    "change",
    [
        {},
        {"ce_time": b"2026-11-30T08:00:00"},  # no offset: UTC, by the strict path
        {"ce_time": b"2026-11-30T08:00:00+02:00"},
        {"ce_time": b"yesterday"},
        {"ce_time": None},
        {"ce_subject": b"s" * 1025},
        {"ce_subject": b"orders/7"},
        {"ce_modelname": b"churn", "ce_runid": b"r-1"},
        {"ce_modelname": b""},
        {"ce_weirsig": b"x" * 513},  # too long a signature is dropped, not an error
        {"ce_weirsig": b"sig"},
        {"ce_id": b""},
        {"ce_id": None},
        {"ce_specversion": b"0.3"},
        {"content-type": b"application/json; charset=utf-8"},
        {"content-type": b"text/plain"},
        {"ce_type": b"io.weir.nothing.v1"},
    ],
)
@pytest.mark.parametrize("payload", SAMPLES, ids=lambda p: p.event_type)
def test_the_usual_binary_path_decodes_as_the_strict_one(
    payload: Payload, change: dict[str, bytes | None]
):
    """decode_raw's fast path for the usual event, and decode_many's for a batch of them,
    must give what the strict path gives, and leave everything else to it (then the
    error, if any, is the strict path's)."""
    from schemas.binding import _decode_named, decode_many, decode_raw
    from schemas.errors import RawMessage

    rec = to_kafka(new_event(payload, source="test", now=fixed_clock))
    headers = dict(rec.headers) | change
    pairs = tuple((k, v) for k, v in headers.items() if v is not None)
    raw = RawMessage(value=rec.value, key=rec.key, headers=pairs)
    usual = RawMessage(value=rec.value, key=rec.key, headers=rec.headers)
    try:
        strict: Event[Any] | EventDecodeError = _decode_named(raw, 1 << 20)
    except EventDecodeError as err:
        strict = err
    for decoded in (_decoded(decode_raw, raw), *decode_many([usual, raw, usual, raw])[1::2]):
        if isinstance(strict, EventDecodeError):
            assert isinstance(decoded, type(strict)) and decoded.reason == strict.reason
        else:
            assert decoded == strict
    assert decode_many([usual, usual]) == [decode_raw(usual)] * 2


def _decoded(decode: Any, raw: Any) -> Any:
    try:
        return decode(raw)
    except EventDecodeError as err:
        return err


def test_headers_shared_by_events_are_not_mixed_up():
    """to_kafka reuses the headers events share (type, source, time, lineage): events that
    differ in any of them get their own."""
    at = FIXED_TIME
    payload = SAMPLES[0]
    events = [
        new_event(payload, source="a", now=lambda: at),
        new_event(payload, source="b", now=lambda: at),
        new_event(payload, source="a", now=lambda: at + timedelta(seconds=1)),
        new_event(payload, source="a", now=lambda: at, lineage=Lineage(modelname="m")),
        new_event(payload, source="a", now=lambda: at, lineage=Lineage(modelname="n")),
        new_event(payload, source="a", now=lambda: at, subject="s"),
    ]
    for event in events * 2:
        rec = to_kafka(event)
        sdk = ce_kafka.to_binary(_sdk_event(event), data_marshaller=_json)
        assert dict(rec.headers) == dict(sdk.headers)
        assert from_kafka(rec.value, rec.key, rec.headers) == event


def test_a_consumed_message_keeps_its_bytes_headers_and_origin():
    from confluent_kafka import Message

    from connectors.kafka import raw_message
    from schemas import ServiceError

    msg = Message(topic="t", partition=1, offset=5, key=b"k", value=b"v", headers=[("a", b"x")])
    raw = raw_message(msg)
    assert (raw.value, raw.key, raw.headers) == (b"v", b"k", (("a", b"x"),))
    assert (raw.origin.topic, raw.origin.partition, raw.origin.offset) == ("t", 1, 5)
    # a header without a value is kept as empty bytes; a tombstone as empty bytes
    raw = raw_message(Message(topic="t", partition=0, offset=0, headers=[("a", None)]))
    assert (raw.value, raw.headers) == (b"", (("a", b""),))
    with pytest.raises(ServiceError, match="without topic/partition/offset"):
        raw_message(Message(value=b"v"))


def test_event_ids_are_unique_uuid4_text_and_a_forked_child_draws_its_own():
    import os
    import uuid

    from schemas.events import new_id

    ids = [new_id() for _ in range(20_000)]
    assert len(set(ids)) == len(ids)
    for text in (ids[0], ids[-1]):
        parsed = uuid.UUID(text)
        assert str(parsed) == text and parsed.version == 4 and parsed.variant == uuid.RFC_4122
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: its ids, then out without running pytest's teardown
        os.write(write, "\n".join(new_id() for _ in range(100)).encode())
        os._exit(0)
    os.close(write)
    with os.fdopen(read) as pipe:
        child = pipe.read().split("\n")
    os.waitpid(pid, 0)
    parent = [new_id() for _ in range(100)]
    assert len(child) == 100 and not set(child) & set(parent)
    assert child[0][:24] != parent[0][:24]  # not the parent's counter, from another stem

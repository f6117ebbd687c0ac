"""Kafka at the boundary: admin, producer and consumer over confluent-kafka.

Library errors become :class:`~schemas.errors.ServiceError` here, naming the
address tried and the setting to change. Messages leave as CloudEvents
(:func:`schemas.to_kafka`) and come back as :class:`ConsumedMessage`, which holds
either a decoded event or the typed decode error (bad records are data, not
crashes).
"""

from __future__ import annotations

import logging
import ssl
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import astuple, dataclass
from operator import itemgetter
from typing import Any, cast

from confluent_kafka import (
    Consumer,
    KafkaError,
    KafkaException,
    Message,
    Producer,
    TopicPartition,
)
from confluent_kafka.admin import AdminClient, ConfigResource, NewTopic

from schemas import (
    Event,
    EventDecodeError,
    Origin,
    RawMessage,
    ServiceError,
    decode_raw,
    to_kafka,
)
from schemas.settings import KafkaSettings, Settings
from schemas.topics import TopicSpec, topic_specs

SETTING_HINT = "set WEIR_KAFKA__BOOTSTRAP_SERVERS (or run `weir stack up`)"
DELETED_POLL_S = 0.1  # how often delete_topics looks whether the metadata forgot them


REFUSED = frozenset(
    {
        KafkaError.TOPIC_AUTHORIZATION_FAILED,
        KafkaError.GROUP_AUTHORIZATION_FAILED,
        KafkaError.CLUSTER_AUTHORIZATION_FAILED,
    }
)


def unreachable(settings: Settings, what: str, err: object) -> ServiceError:
    """The one error for a broker that failed: names the address and the setting to change
    (or, when its ACLs refused the request, the principal)."""
    addr = settings.kafka.bootstrap_servers
    if isinstance(err, KafkaError) and err.code() in REFUSED:
        return ServiceError(
            f"Kafka at {addr} refused principal {settings.kafka.sasl_username!r} {what}: "
            f"{err}; its ACLs do not allow it (routes are written by "
            "WEIR_KAFKA__CONTROL_USERNAME; docs/security.md)",
            service="kafka",
            address=addr,
        )
    return ServiceError(
        f"Kafka at {addr} did not answer while {what}: {err}; {SETTING_HINT}",
        service="kafka",
        address=addr,
    )


def not_authenticated(settings: Settings, err: object) -> ServiceError:
    """The error for a broker that answered but refused who we said we are."""
    k = settings.kafka
    return ServiceError(
        f"Kafka at {k.bootstrap_servers} refused principal {k.sasl_username!r} "
        f"({k.security_protocol}, {k.sasl_mechanism}): {err}; check WEIR_KAFKA__SASL_USERNAME "
        "and WEIR_KAFKA__SASL_PASSWORD",
        service="kafka",
        address=k.bootstrap_servers,
    )


LIBRDKAFKA_LOG = logging.getLogger("weir.librdkafka")


def security_config(kafka: KafkaSettings) -> dict[str, Any]:
    """librdkafka's security settings: every confluent-kafka client weir makes gets these."""
    config: dict[str, Any] = {"security.protocol": kafka.security_protocol.lower()}
    if kafka.sasl:
        assert kafka.sasl_password is not None  # KafkaSettings checks it
        config |= {
            "sasl.mechanism": kafka.sasl_mechanism,
            "sasl.username": kafka.sasl_username,
            "sasl.password": kafka.sasl_password.get_secret_value(),
        }
    if kafka.tls:
        for key, path in (
            ("ssl.ca.location", kafka.ssl_cafile),
            ("ssl.certificate.location", kafka.ssl_certfile),
            ("ssl.key.location", kafka.ssl_keyfile),
        ):
            if path is not None:
                config[key] = str(path)
    return config


def aiokafka_security(kafka: KafkaSettings) -> dict[str, Any]:
    """The same security settings as keyword arguments of aiokafka's clients."""
    kwargs: dict[str, Any] = {"security_protocol": kafka.security_protocol}
    if kafka.tls:
        kwargs["ssl_context"] = tls_context(kafka)
    if kafka.sasl:
        assert kafka.sasl_password is not None
        kwargs |= {
            "sasl_mechanism": kafka.sasl_mechanism,
            "sasl_plain_username": kafka.sasl_username,
            "sasl_plain_password": kafka.sasl_password.get_secret_value(),
        }
    return kwargs


def tls_context(kafka: KafkaSettings) -> ssl.SSLContext:
    """A TLS context that checks the broker against ``ssl_cafile`` (else the system's CAs)."""
    context = ssl.create_default_context(
        cafile=None if kafka.ssl_cafile is None else str(kafka.ssl_cafile)
    )
    if kafka.ssl_certfile is not None:
        context.load_cert_chain(
            str(kafka.ssl_certfile), None if kafka.ssl_keyfile is None else str(kafka.ssl_keyfile)
        )
    return context


def base_config(settings: Settings) -> dict[str, Any]:
    return {
        "bootstrap.servers": settings.kafka.bootstrap_servers,
        "client.id": settings.kafka.client_id,
        "log_level": 3,  # errors only; librdkafka warnings are retried internally
        # through Python's logging (served by poll), so its lines are rate-limited like ours
        "logger": LIBRDKAFKA_LOG,
    } | security_config(settings.kafka)


def admin(settings: Settings) -> AdminClient:
    return AdminClient(base_config(settings))


def ensure_topics(
    settings: Settings, *, timeout_s: float = 30.0, specs: Sequence[TopicSpec] | None = None
) -> dict[str, str]:
    """Create every weir topic that is missing; returns name → "created" | "exists"."""
    settings = settings.as_control()  # an operator's act: workers' principals may not create
    list_topics(settings, timeout_s=min(timeout_s, 10.0))  # fail fast, naming the address
    client = admin(settings)
    wanted = list(specs if specs is not None else topic_specs(settings.kafka))
    futures = client.create_topics(
        [
            NewTopic(
                s.name,
                num_partitions=s.partitions,
                replication_factor=s.replication_factor,
                config=dict(s.config),
            )
            for s in wanted
        ],
        request_timeout=timeout_s,
        operation_timeout=timeout_s,
    )
    outcome: dict[str, str] = {}
    for name, fut in futures.items():
        try:
            fut.result(timeout=timeout_s)
            outcome[name] = "created"
        except KafkaException as exc:
            err: KafkaError = exc.args[0]
            if err.code() == KafkaError.TOPIC_ALREADY_EXISTS:
                outcome[name] = "exists"
            else:
                raise unreachable(settings, f"creating topic {name}", err) from exc
        except Exception as exc:
            raise unreachable(settings, f"creating topic {name}", exc) from exc
    return outcome


def delete_topics(settings: Settings, starting_with: str, *, timeout_s: float = 30.0) -> list[str]:
    """Delete every topic whose name starts with ``starting_with`` (a run's own prefix);
    returns their names once the broker's metadata no longer lists them (the controller
    acknowledges a deletion before every listing forgets it, and a topic of the same
    name cannot be created meanwhile). For tests, benchmarks and demos that leave
    nothing behind."""
    if not starting_with:
        raise ValueError("refusing to delete every topic: give a prefix")
    settings = settings.as_control()
    names = sorted(t for t in list_topics(settings) if t.startswith(starting_with))
    if names:
        client = admin(settings)  # kept referenced until its futures are done
        for name, fut in client.delete_topics(names, operation_timeout=timeout_s).items():
            try:
                fut.result(timeout=timeout_s)
            except KafkaException as exc:
                if exc.args[0].code() != KafkaError.UNKNOWN_TOPIC_OR_PART:  # gone already
                    raise unreachable(settings, f"deleting topic {name}", exc.args[0]) from exc
        deadline = time.monotonic() + timeout_s
        while left := set(names) & set(list_topics(settings)):
            if time.monotonic() > deadline:
                raise ServiceError(
                    f"topics {', '.join(sorted(left))} still listed {timeout_s:g} s after "
                    "their deletion",
                    service="kafka",
                    address=settings.kafka.bootstrap_servers,
                )
            time.sleep(DELETED_POLL_S)
    return names


def topic_config(settings: Settings, name: str, *, timeout_s: float = 15.0) -> dict[str, str]:
    """The broker's effective configuration of one topic."""
    client = admin(settings)
    resource = ConfigResource(ConfigResource.Type.TOPIC, name)
    try:
        entries = client.describe_configs([resource])[resource].result(timeout=timeout_s)
    except Exception as exc:
        raise unreachable(settings, f"describing topic {name}", exc) from exc
    return {k: v.value for k, v in entries.items() if v.value is not None}


def list_topics(settings: Settings, *, timeout_s: float = 10.0) -> dict[str, int]:
    """Topic name → partition count; raises ServiceError when the broker is down."""
    refused: list[KafkaError] = []

    def on_error(err: KafkaError) -> None:
        if err.code() == KafkaError._AUTHENTICATION:
            refused.append(err)

    client = AdminClient(base_config(settings) | {"error_cb": on_error})
    try:
        meta = client.list_topics(timeout=timeout_s)
    except KafkaException as exc:
        client.poll(0)  # serves error_cb
        if refused:
            raise not_authenticated(settings, refused[0]) from exc
        raise unreachable(settings, "listing topics", exc.args[0]) from exc
    return {name: len(t.partitions) for name, t in meta.topics.items()}


def producer_config(settings: Settings) -> dict[str, Any]:
    """Every producer's config: acks from all replicas, idempotent, batched and compressed."""
    k = settings.kafka
    return base_config(settings) | {
        "acks": "all",
        "enable.idempotence": True,
        "linger.ms": k.linger_ms,
        "compression.type": k.compression,
        "message.timeout.ms": k.delivery_timeout_ms,
        "message.max.bytes": k.message_max_bytes,
    }


def consumer_config(
    settings: Settings, group_id: str, *, from_beginning: bool = True
) -> dict[str, Any]:
    """Every group consumer's config: the group, where a new group starts, liveness timeouts."""
    k = settings.kafka
    return base_config(settings) | {
        "group.id": group_id,
        "auto.offset.reset": "earliest" if from_beginning else "latest",
        "session.timeout.ms": k.session_timeout_ms,
        "heartbeat.interval.ms": max(500, k.session_timeout_ms // 4),
        "fetch.wait.max.ms": k.fetch_max_wait_ms,
    }


class EventProducer:
    """Produces weir events and waits for the broker's acknowledgement.

    ``acks=all`` and idempotence are on: :meth:`send` returns only after Kafka
    stored the event, or raises ``ServiceError``.
    """

    def __init__(self, settings: Settings, **overrides: Any) -> None:
        self._settings = settings
        self._producer = Producer(producer_config(settings) | overrides)
        self._errors: list[str] = []
        self._refused: dict[str, KafkaError] = {}  # topics this principal may not write

    def _on_delivery(self, err: KafkaError | None, msg: Message) -> None:
        if err is None:
            return
        self._errors.append(str(err))
        if err.code() in REFUSED:
            self._refused.setdefault(str(msg.topic()), err)

    def produce_raw(
        self,
        topic: str,
        value: bytes | None,
        key: bytes | None = None,
        headers: Sequence[tuple[str, bytes]] = (),
    ) -> None:
        """Queue raw bytes (for tests of bad input and for dead-letter replay)."""
        while True:
            try:
                self._producer.produce(
                    topic,
                    value=value,
                    key=key,
                    headers=list(headers),
                    on_delivery=self._on_delivery,
                )
                return
            except BufferError:
                self._producer.poll(0.1)

    def produce(self, topic: str, event: Event[Any]) -> None:
        """Queue one event (binary mode unless settings say structured)."""
        rec = to_kafka(event, mode=self._settings.events.mode)
        self.produce_raw(topic, rec.value, rec.key, rec.headers)

    def flush(self, timeout_s: float = 30.0) -> None:
        """Wait until every queued message is acknowledged; raise if any failed."""
        remaining = self._producer.flush(timeout_s)
        if remaining:
            raise unreachable(
                self._settings, f"flushing ({remaining} messages unacknowledged)", "timeout"
            )
        if self._errors:
            errors, self._errors = self._errors, []
            refused, self._refused = self._refused, {}
            if refused:
                what = f"writing to {', '.join(sorted(refused))}"
                raise unreachable(self._settings, what, next(iter(refused.values())))
            raise unreachable(self._settings, "delivering messages", "; ".join(errors[:3]))

    def send_raw(
        self,
        topic: str,
        value: bytes | None,
        key: bytes | None = None,
        headers: Sequence[tuple[str, bytes]] = (),
        timeout_s: float = 30.0,
    ) -> Delivered:
        """Produce one message and wait for it; returns where Kafka stored it."""
        delivered: list[Delivered] = []

        def on_delivery(err: KafkaError | None, msg: Message) -> None:
            if err is not None:
                self._on_delivery(err, msg)
            else:
                delivered.append(_where(msg))

        self._producer.produce(
            topic, value=value, key=key, headers=list(headers), on_delivery=on_delivery
        )
        self.flush(timeout_s)
        return delivered[0]

    def send(self, topic: str, event: Event[Any], timeout_s: float = 30.0) -> Delivered:
        """Produce one event and wait for it; returns where Kafka stored it."""
        rec = to_kafka(event, mode=self._settings.events.mode)
        return self.send_raw(topic, rec.value, rec.key, rec.headers, timeout_s)


@dataclass(frozen=True)
class Delivered:
    """Where the broker stored a message."""

    topic: str
    partition: int
    offset: int


@dataclass(frozen=True)
class ConsumedMessage:
    """One message read from Kafka: an event, or the reason it is not one."""

    topic: str
    partition: int
    offset: int
    event: Event[Any] | None
    error: EventDecodeError | None
    raw: RawMessage | None = None  # the bytes as received, for dead-lettering or replay

    @property
    def ok(self) -> bool:
        return self.error is None


def read_at(settings: Settings, where: Delivered, *, timeout_s: float = 30.0) -> ConsumedMessage:
    """Read the one message stored at ``where`` (no consumer group needed)."""
    consumer = Consumer(
        base_config(settings) | {"group.id": "weir-read-at", "enable.auto.commit": False}
    )
    try:
        consumer.assign([TopicPartition(where.topic, where.partition, where.offset)])
        end = time.monotonic() + timeout_s
        while time.monotonic() < end:
            msg = consumer.poll(1.0)
            if msg is None:
                continue
            if msg.error() is not None:
                raise unreachable(settings, f"reading {where}", msg.error())
            return decode_message(settings, msg)
        raise unreachable(settings, f"reading {where}", f"nothing arrived in {timeout_s:.0f}s")
    finally:
        consumer.close()


def _where(msg: Message) -> Delivered:
    topic, partition, offset = msg.topic(), msg.partition(), msg.offset()
    if topic is None or partition is None or offset is None:
        raise ServiceError(
            "Kafka returned a message without topic/partition/offset",
            service="kafka",
            address="",
            retriable=False,
        )
    return Delivered(topic, partition, offset)


def _headers(msg: Message) -> list[tuple[str, bytes | str | None]]:
    raw = msg.headers() or []
    return list(raw.items()) if isinstance(raw, dict) else list(raw)


_VALUE = itemgetter(1)


def raw_message(msg: Message) -> RawMessage:
    """A consumed message's bytes, key, headers and origin, as weir keeps them.

    Runs once per record on the scoring path: librdkafka's headers (a list of
    ``(name, bytes | None)`` pairs) are kept as they are when no value is None.
    """
    topic, partition, offset = msg.topic(), msg.partition(), msg.offset()
    if topic is None or partition is None or offset is None:
        _where(msg)  # raises, naming what is missing
    given = msg.headers() or ()
    # librdkafka gives each value as bytes, or None for a null one: only those are mended
    if isinstance(given, list) and None not in map(_VALUE, given):
        headers = cast(tuple[tuple[str, bytes], ...], tuple(given))
    else:
        headers = tuple(
            (k, v if isinstance(v, bytes) else (v or "").encode()) for k, v in _headers(msg)
        )
    return RawMessage(
        value=msg.value() or b"",
        key=msg.key(),
        headers=headers,
        origin=Origin(topic, partition, offset),
    )


def decode_message(settings: Settings, msg: Message) -> ConsumedMessage:
    """A consumed message as a weir event, or with the decode error and its raw bytes."""
    topic, partition, offset = astuple(_where(msg))
    raw = raw_message(msg)
    try:
        event = decode_raw(raw, max_bytes=settings.events.max_bytes)
    except EventDecodeError as err:
        return ConsumedMessage(topic, partition, offset, None, err, raw)
    return ConsumedMessage(topic, partition, offset, event, None, raw)


class EventConsumer:
    """Reads weir events from topics; undecodable messages come back with their error."""

    def __init__(
        self,
        settings: Settings,
        topics: Sequence[str],
        *,
        group_id: str,
        from_beginning: bool = True,
        **overrides: Any,
    ) -> None:
        self._settings = settings
        config = consumer_config(settings, group_id, from_beginning=from_beginning)
        self._consumer = Consumer(config | {"enable.auto.commit": False} | overrides)
        self._consumer.subscribe(list(topics))

    def poll(self, timeout_s: float = 1.0) -> ConsumedMessage | None:
        msg = self._consumer.poll(timeout_s)
        return None if msg is None else self._decoded(msg)

    def batch(self, count: int, timeout_s: float = 1.0) -> list[ConsumedMessage]:
        """Up to ``count`` messages: what is queued, waiting up to ``timeout_s`` for the first."""
        first = self.poll(timeout_s)
        if first is None:
            return []
        rest = (self._decoded(m) for m in self._consumer.consume(count - 1, 0)) if count > 1 else ()
        return [first, *(m for m in rest if m is not None)]

    def _decoded(self, msg: Message) -> ConsumedMessage | None:
        """A fetched message decoded; None for a partition's end; a broker error raised."""
        err = msg.error()
        if err is not None:
            if err.code() == KafkaError._PARTITION_EOF:
                return None
            raise unreachable(self._settings, "consuming", err)
        return decode_message(self._settings, msg)

    def take(
        self,
        count: int,
        *,
        deadline_s: float,
        stop: Callable[[], bool] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> Iterator[ConsumedMessage]:
        """Yield up to ``count`` messages until ``stop()`` is true or ``deadline_s`` passed.

        The deadline bounds the wait, so a test never hangs on a message that
        does not come; ``stop`` is checked after every message.
        """
        end = clock() + deadline_s
        taken = 0
        while taken < count and clock() < end and not (stop and stop()):
            got = self.poll(min(1.0, max(0.0, end - clock())))
            if got is not None:
                taken += 1
                yield got

    def __iter__(self) -> Iterator[ConsumedMessage]:
        while True:
            got = self.poll()
            if got is not None:
                yield got

    def commit(self) -> None:
        self._consumer.commit(asynchronous=False)

    def close(self) -> None:
        self._consumer.close()

    def __enter__(self) -> EventConsumer:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

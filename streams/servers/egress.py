"""Forwarding predictions and alerts as CloudEvents to a Knative sink (``K_SINK``).

A Knative ``SinkBinding`` injects the sink URL as ``K_SINK``; the egress reads
the configured topics (``WEIR_KNATIVE__EGRESS_TOPICS``, predictions and alerts
by default) in its own consumer group and POSTs every event in binary content
mode. A sink that is down, slow, or answers 429/5xx is retried with backoff
(``WEIR_KNATIVE__EGRESS_ATTEMPTS`` tries); a permanent failure (another 4xx, or
the tries exhausted) sends the original message to the dead-letter topic with
its raw bytes and the reason. The offset is committed only after the event was
delivered or dead-lettered: at-least-once, nothing dropped.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

import httpx
from tenacity import Retrying, retry_if_exception, stop_after_attempt, wait_exponential_jitter

from connectors.kafka import ConsumedMessage, EventConsumer, EventProducer
from schemas import ConfigurationError, DeadLetter, RawMessage, new_event, to_http
from schemas.settings import Settings
from schemas.topics import Topic, topic_name

log = logging.getLogger("weir.egress")


class SinkError(Exception):
    def __init__(self, message: str, *, retriable: bool) -> None:
        super().__init__(message)
        self.retriable = retriable


@dataclass
class EgressStats:
    delivered: int = 0
    dead_lettered: int = 0
    undecodable: int = 0


class Egress:
    def __init__(
        self,
        settings: Settings,
        *,
        transport: httpx.BaseTransport | None = None,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        if not settings.k_sink:
            raise ConfigurationError(
                "no sink to forward to: set K_SINK (a Knative SinkBinding injects it)"
            )
        self.settings = settings
        self.sink = settings.k_sink
        self._http = httpx.Client(transport=transport, timeout=settings.knative.egress_timeout_s)
        self._sleep = sleep
        self._producer = EventProducer(settings)
        self.stats = EgressStats()

    def _post(self, headers: dict[str, str], body: bytes) -> None:
        try:
            resp = self._http.post(self.sink, headers=headers, content=body)
        except httpx.HTTPError as exc:
            raise SinkError(f"sink {self.sink} unreachable: {exc!r}", retriable=True) from exc
        if resp.status_code >= 300:
            retriable = resp.status_code in (408, 429) or resp.status_code >= 500
            raise SinkError(
                f"sink {self.sink} answered {resp.status_code}: {resp.text[:200]}",
                retriable=retriable,
            )

    def forward(self, message: ConsumedMessage) -> bool:
        """Deliver one message or dead-letter it; True when delivered."""
        assert message.raw is not None
        raw = message.raw
        if message.event is None:
            # undecodable bytes on an output topic: keep them, with the reason
            assert message.error is not None
            self._dead_letter(raw, message.error.error_class, message.error.reason, 1)
            self.stats.undecodable += 1
            return False
        headers, body = to_http(message.event, mode="binary")
        attempts = 0

        def attempt() -> None:
            nonlocal attempts
            attempts += 1
            self._post(headers, body)

        retrying = Retrying(
            stop=stop_after_attempt(self.settings.knative.egress_attempts),
            wait=wait_exponential_jitter(multiplier=0.2, max=5.0, jitter=0.1),
            retry=retry_if_exception(lambda e: isinstance(e, SinkError) and e.retriable),
            sleep=self._sleep,
            reraise=True,
        )
        try:
            retrying(attempt)
        except SinkError as err:
            log.warning("giving up on %s after %d tries: %s", message.event.id, attempts, err)
            self._dead_letter(raw, "EgressFailed", str(err), attempts, message.event.id)
            return False
        self.stats.delivered += 1
        return True

    def _dead_letter(
        self,
        raw: RawMessage,
        error_class: str,
        reason: str,
        attempts: int,
        event_id: str | None = None,
    ) -> None:
        letter = DeadLetter.from_raw(
            raw, error_class=error_class, reason=reason, attempts=attempts, event_id=event_id
        )
        self._producer.send(
            topic_name(self.settings.kafka, Topic.DEAD_LETTER),
            new_event(letter, source=self.settings.events.source),
        )
        self.stats.dead_lettered += 1

    def run(
        self,
        *,
        stop: threading.Event | None = None,
        max_messages: int | None = None,
        from_beginning: bool = False,
    ) -> EgressStats:
        """Forward until ``stop`` is set or ``max_messages`` were handled."""
        topics = [
            topic_name(self.settings.kafka, Topic(t)) for t in self.settings.knative.egress_topics
        ]
        handled = 0
        with EventConsumer(
            self.settings,
            topics,
            group_id=f"{self.settings.kafka.topic_prefix}-egress",
            from_beginning=from_beginning,
        ) as consumer:
            while not (stop and stop.is_set()) and (max_messages is None or handled < max_messages):
                message = consumer.poll(1.0)
                if message is None:
                    continue
                self.forward(message)
                consumer.commit()
                handled += 1
        return self.stats


def run_egress(settings: Settings) -> None:
    """Forward until interrupted."""
    stats = Egress(settings).run()
    log.info("egress stopped: %s", stats)

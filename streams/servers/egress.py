"""Forwarding predictions and alerts as CloudEvents to a Knative sink (``K_SINK``).

A Knative ``SinkBinding`` injects the sink URL as ``K_SINK``; the egress reads
the configured topics (``WEIR_KNATIVE__EGRESS_TOPICS``, predictions and alerts
by default) in its own consumer group and POSTs every event in binary content
mode, up to ``WEIR_KNATIVE__EGRESS_CONCURRENCY`` at once (16; 1 keeps a
partition's order, which a Knative broker does not keep anyway). A sink that is
down, slow, or answers 408/429/5xx is retried with backoff, each event on its
own (``WEIR_KNATIVE__EGRESS_ATTEMPTS`` tries); a permanent failure (another 4xx,
or the tries exhausted) sends the original message to the dead-letter topic
with its raw bytes and the reason. Events are read in batches
(``WEIR_KNATIVE__EGRESS_BATCH``) and a batch's offsets are committed only after
every event of it was delivered or dead-lettered: at-least-once, nothing
dropped. Requests go through aiohttp, a first try without tenacity
(``connectors.retrying``). ``bench/egress.py`` measures it beside a naive
forwarder (one POST and one commit per event, as this egress used to do).
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass

import aiohttp

from connectors.kafka import ConsumedMessage, EventConsumer, EventProducer
from connectors.retrying import retried
from schemas import ConfigurationError, DeadLetter, RawMessage, new_event, to_http
from schemas.settings import Settings
from schemas.topics import Topic, topic_name

log = logging.getLogger("weir.egress")

RETRY_FIRST_WAIT_S = 0.2  # a sink's retries wait 0.2 s, 0.4 s, … up to 5 s, plus jitter
RETRY_MAX_WAIT_S = 5.0
RETRY_JITTER_S = 0.1


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
    """Reads the egress topics and POSTs their events to ``K_SINK`` (see the module doc).

    ``sleep`` waits out a retry's backoff (``asyncio.sleep``; a test may pass one that
    records the waits instead).
    """

    def __init__(
        self, settings: Settings, *, sleep: Callable[[float], Awaitable[None]] = asyncio.sleep
    ):
        if not settings.k_sink:
            raise ConfigurationError(
                "no sink to forward to: set K_SINK (a Knative SinkBinding injects it)"
            )
        self.settings = settings
        self.sink = settings.k_sink
        self._sleep = sleep
        self._producer = EventProducer(settings)
        self.stats = EgressStats()

    async def _post(
        self, http: aiohttp.ClientSession, headers: dict[str, str], body: bytes
    ) -> None:
        try:
            async with http.post(self.sink, headers=headers, data=body) as resp:
                if resp.status < 300:
                    await resp.read()
                    return
                status, text = resp.status, (await resp.read())[:200].decode("utf-8", "replace")
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise SinkError(f"sink {self.sink} unreachable: {exc!r}", retriable=True) from exc
        raise SinkError(
            f"sink {self.sink} answered {status}: {text}",
            retriable=status in (408, 429) or status >= 500,
        )

    async def _deliver(
        self, http: aiohttp.ClientSession, message: ConsumedMessage
    ) -> tuple[int, SinkError | None]:
        """POST one decoded event, retried with backoff: (tries, the last error or None)."""
        assert message.event is not None
        headers, body = to_http(message.event, mode="binary")
        attempts = 0

        async def post() -> None:
            nonlocal attempts
            attempts += 1
            await self._post(http, headers, body)

        try:
            await retried(
                post,
                attempts=self.settings.knative.egress_attempts,
                retriable=lambda e: isinstance(e, SinkError) and e.retriable,
                first_wait_s=RETRY_FIRST_WAIT_S,
                max_wait_s=RETRY_MAX_WAIT_S,
                jitter_s=RETRY_JITTER_S,
                sleep=self._sleep,
            )
        except SinkError as err:
            return attempts, err
        return attempts, None

    async def forward_all(
        self, http: aiohttp.ClientSession, messages: Sequence[ConsumedMessage]
    ) -> list[bool]:
        """Deliver ``messages`` (the session's connection limit is how many at once),
        then dead-letter what failed, in their order; True for each one delivered."""
        outcomes = iter(
            await asyncio.gather(*(self._deliver(http, m) for m in messages if m.event is not None))
        )
        delivered = []
        for message in messages:
            raw = message.raw
            assert raw is not None
            if message.event is None:
                # undecodable bytes on an output topic: keep them, with the reason
                assert message.error is not None
                await self._dead_letter(raw, message.error.error_class, message.error.reason, 1)
                self.stats.undecodable += 1
                delivered.append(False)
                continue
            attempts, err = next(outcomes)
            if err is not None:
                log.warning("giving up on %s after %d tries: %s", message.event.id, attempts, err)
                await self._dead_letter(raw, "EgressFailed", str(err), attempts, message.event.id)
                delivered.append(False)
                continue
            self.stats.delivered += 1
            delivered.append(True)
        return delivered

    async def _dead_letter(
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
        await asyncio.to_thread(
            self._producer.send,
            topic_name(self.settings.kafka, Topic.DEAD_LETTER),
            new_event(letter, source=self.settings.events.source),
        )
        self.stats.dead_lettered += 1

    def session(self) -> aiohttp.ClientSession:
        """The sink's HTTP session: keep-alive, ``egress_concurrency`` requests at most."""
        k = self.settings.knative
        return aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=k.egress_concurrency),
            timeout=aiohttp.ClientTimeout(total=k.egress_timeout_s),
        )

    def run(
        self,
        *,
        stop: threading.Event | None = None,
        max_messages: int | None = None,
        from_beginning: bool = False,
    ) -> EgressStats:
        """Forward until ``stop`` is set or ``max_messages`` were handled."""
        return asyncio.run(self._run(stop, max_messages, from_beginning))

    async def _run(
        self, stop: threading.Event | None, max_messages: int | None, from_beginning: bool
    ) -> EgressStats:
        k = self.settings.knative
        topics = [topic_name(self.settings.kafka, Topic(t)) for t in k.egress_topics]
        handled = 0
        with EventConsumer(
            self.settings,
            topics,
            group_id=f"{self.settings.kafka.topic_prefix}-egress",
            from_beginning=from_beginning,
        ) as consumer:
            async with self.session() as http:
                while not (stop and stop.is_set()):
                    left = None if max_messages is None else max_messages - handled
                    if left is not None and left <= 0:
                        break
                    want = k.egress_batch if left is None else min(left, k.egress_batch)
                    batch = await asyncio.to_thread(consumer.batch, want)
                    if not batch:
                        continue
                    await self.forward_all(http, batch)
                    await asyncio.to_thread(consumer.commit)  # all delivered or dead-lettered
                    handled += len(batch)
        return self.stats


def run_egress(settings: Settings) -> None:
    """Forward until interrupted."""
    stats = Egress(settings).run()
    log.info("egress stopped: %s", stats)

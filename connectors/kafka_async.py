"""confluent-kafka for asyncio code: a producer that awaits a batch's acks, a batch consumer.

The roles' event loops send through this instead of Faust's ``topic.send``
(aiokafka, one coroutine per message): librdkafka batches, compresses
(``WEIR_KAFKA__COMPRESSION``) and lingers (``WEIR_KAFKA__LINGER_MS``) in C, and
:meth:`AsyncProducer.send` costs one future per *batch*. Delivery callbacks
are served on the event loop itself, every ``POLL_S`` while messages are out
and never when none are: served from a thread of their own, every callback
took the GIL from the loop (measured: the scoring role's loop was busy 83 % of
the time under a backlog). ``acks=all`` and idempotence are on, so an awaited
batch is stored; a message the broker did not take within
``WEIR_KAFKA__DELIVERY_TIMEOUT_MS`` fails the whole send with a
:class:`~schemas.ServiceError` naming the broker.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from operator import attrgetter
from typing import Any, TypeVar

from confluent_kafka import Consumer, KafkaError, KafkaException, Message, Producer, TopicPartition

from connectors.kafka import consumer_config, producer_config, raw_message, unreachable
from schemas import KafkaRecord, RawMessage
from schemas.settings import Settings

log = logging.getLogger("weir.kafka")
_T = TypeVar("_T")

POLL_S = 0.002  # how often the loop serves delivery callbacks while messages are out
FULL_QUEUE_WAIT_S = 0.005  # librdkafka's queue is full: serve callbacks this long, look again


def _running_loop() -> asyncio.AbstractEventLoop | None:
    try:
        return asyncio.get_running_loop()
    except RuntimeError:
        return None


class _Batch:
    """Counts one queue's deliveries down; resolves its future with the errors, on the loop.

    Delivery callbacks run where librdkafka is polled: on the loop, or on the thread
    that flushes the producer when it closes, hence the lock.
    """

    def __init__(self, loop: asyncio.AbstractEventLoop, count: int) -> None:
        self.loop = loop
        self.left = count
        self.errors: list[str] = []
        self.done: asyncio.Future[list[str]] = loop.create_future()
        self._lock = threading.Lock()
        if count == 0:
            self.done.set_result([])

    def delivered(self, err: KafkaError | None, _msg: Message) -> None:
        with self._lock:
            if err is not None:
                self.errors.append(str(err))
            self.left -= 1
            last = self.left == 0
        if last:
            if _running_loop() is self.loop:  # served on the loop (the usual case)
                self._resolve()
            else:  # by close()'s flush, on a thread
                self.loop.call_soon_threadsafe(self._resolve)

    def _resolve(self) -> None:
        if not self.done.done():
            self.done.set_result(self.errors)


class AsyncProducer:
    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        self._producer = Producer(producer_config(settings))
        self.failed = 0  # messages of send_nowait that the broker never took
        self._serving: asyncio.TimerHandle | None = None  # the next serve_deliveries, if any

    def _serve_deliveries(self) -> None:
        """On the loop: run the delivery callbacks that are due, and again in ``POLL_S``
        while any message is still out (queued, in flight, or its callback not run)."""
        self._serving = None
        self._producer.poll(0)
        if len(self._producer):
            self._serving = asyncio.get_running_loop().call_later(POLL_S, self._serve_deliveries)

    def queue(self, records: Sequence[tuple[str, KafkaRecord]]) -> asyncio.Future[list[str]]:
        """Produce ``(topic, record)`` pairs now, in order; the future resolves once Kafka
        acknowledged (or finally refused) every one of them, with the errors, if any.

        Call it from the event loop. A full librdkafka queue is waited out right
        here (polling briefly), so batches queued one after another keep their order.
        """
        batch = _Batch(asyncio.get_running_loop(), len(records))
        for topic, rec in records:
            while True:
                try:
                    self._producer.produce(
                        topic,
                        value=rec.value,
                        key=rec.key,
                        headers=list(rec.headers),
                        on_delivery=batch.delivered,
                    )
                    break
                except BufferError:  # the queue is full: serve callbacks until there is room
                    self._producer.poll(FULL_QUEUE_WAIT_S)
        if self._serving is None and records:
            self._serving = batch.loop.call_later(POLL_S, self._serve_deliveries)
        return batch.done

    def check(self, errors: list[str]) -> None:
        """Raise the one broker error for a queue's delivery errors, if there were any."""
        if errors:
            raise unreachable(self._settings, "delivering events", "; ".join(errors[:3]))

    async def send(self, records: Sequence[tuple[str, KafkaRecord]]) -> None:
        """Produce ``(topic, record)`` pairs; return once Kafka acknowledged all of them."""
        self.check(await self.queue(records))

    def send_nowait(self, records: Sequence[tuple[str, KafkaRecord]]) -> None:
        """Queue ``(topic, record)`` pairs without waiting for the broker (best effort).

        For the insight roles' high-volume outputs (outcomes): librdkafka still
        retries each message until ``WEIR_KAFKA__DELIVERY_TIMEOUT_MS``; one that
        fails after that is counted in ``failed`` and logged, not raised.
        """
        self.queue(records).add_done_callback(self._count_failures)

    def _count_failures(self, done: asyncio.Future[list[str]]) -> None:
        errors = done.result()
        if not errors:
            return
        before, self.failed = self.failed, self.failed + len(errors)
        if before == 0 or before // 1000 != self.failed // 1000:
            log.error("%d events not delivered, latest: %s", self.failed, errors[-1])

    async def close(self, timeout_s: float = 10.0) -> None:
        """Deliver what is queued (up to ``timeout_s``; its callbacks run meanwhile)."""
        if self._serving is not None:
            self._serving.cancel()
            self._serving = None
        await asyncio.to_thread(self._producer.flush, timeout_s)


def fill_batch(
    consume: Callable[[int, float], list[_T]],
    count: int,
    wait_s: float,
    since: float | None,
    clock: Callable[[], float],
    queued: tuple[float, list[_T]],
) -> list[_T]:
    """Up to ``count`` messages from ``consume(n, timeout)``, no record waiting for its
    batch more than ``wait_s`` after it could be taken.

    What is queued already arrived after the previous batch was taken (at ``since``,
    a ``clock`` time) and has waited since then at most: the batch window opened
    then, and only what is left of it is waited out — not a whole new window on top
    of the time the previous batch was being worked on. With nothing queued, the
    window opens now. A full batch (a backlog) goes at once. ``queued``: the clock
    time and messages of the caller's own first look, a ``consume(count, 0)``.
    """
    now, got = queued
    opened = now if not got or since is None else min(since, now)
    left = opened + wait_s - clock()
    if len(got) < count and left > 0:
        got.extend(consume(count - len(got), left))
    return got


_ORIGIN = attrgetter("origin")


class BatchConsumer:
    """A librdkafka group consumer for asyncio code: whole batches in, offsets stored after.

    The scoring role's hot path. :meth:`take` returns up to ``count``
    messages; a record waits at most ``wait_s`` for its batch to fill, counted
    from when it could first be taken (:func:`fill_batch`); :meth:`done` stores
    their offsets once their outputs are acknowledged, and librdkafka commits
    stored offsets every ``commit_interval_ms`` and on close — so an offset is
    committed only after its record was handled (at-least-once). What
    librdkafka already holds is taken on the event loop (a call that does not
    wait); waiting for more, and closing, run on a thread of the consumer's own,
    so the event loop never blocks on the broker.
    """

    def __init__(
        self, settings: Settings, topics: Sequence[str], group_id: str, *, commit_interval_ms: int
    ) -> None:
        self._settings = settings
        config = consumer_config(settings, group_id) | {
            "enable.auto.commit": True,
            "enable.auto.offset.store": False,
            "auto.commit.interval.ms": commit_interval_ms,
            "partition.assignment.strategy": "cooperative-sticky",
        }
        self._consumer = Consumer(config)
        self._thread = ThreadPoolExecutor(1, thread_name_prefix="weir-consumer")
        self._topics = list(topics)
        self._subscribed = False
        self._taken_at: float | None = None  # when the previous batch was taken (monotonic)

    async def _call(self, fn: Callable[..., _T], *args: Any) -> _T:
        return await asyncio.get_running_loop().run_in_executor(self._thread, fn, *args)

    async def take(self, count: int, wait_s: float) -> list[RawMessage]:
        if not self._subscribed:
            await self._call(self._consumer.subscribe, self._topics)
            self._subscribed = True
        # what librdkafka holds already, taken on the loop: under a backlog the batch is
        # full and needs no trip to the consumer's thread (and back through the loop)
        now = time.monotonic()
        messages = self._consumer.consume(count, 0)
        if len(messages) < count:
            messages = await self._call(self._fill, count, wait_s, (now, messages))
        self._taken_at = time.monotonic()
        out = []
        for m in messages:
            err = m.error()
            if err is not None:
                if err.code() == KafkaError._PARTITION_EOF:
                    continue
                if err.retriable() or not err.fatal():
                    log.warning("consumer: %s", err)
                    continue
                raise unreachable(self._settings, "consuming", err)
            out.append(raw_message(m))
        return out

    def _fill(
        self, count: int, wait_s: float, queued: tuple[float, list[Message]]
    ) -> list[Message]:
        """On the consumer's thread: the rest of a batch, waited for."""
        return fill_batch(
            self._consumer.consume, count, wait_s, self._taken_at, time.monotonic, queued
        )

    def done(self, messages: Sequence[RawMessage]) -> None:
        """Mark ``messages`` handled: their offsets are committed with the next commit.

        Called on the caller's thread while :meth:`take` may be waiting on the
        consumer's own: librdkafka's offset store is thread-safe and does not block,
        so a batch's offsets never wait behind the next fetch.
        """
        # one partition's messages come in offset order (from take, which fills every
        # origin): the last one seen of a partition is its highest
        last = {(o.topic, o.partition): o.offset for o in map(_ORIGIN, messages)}
        offsets = [TopicPartition(t, p, o + 1) for (t, p), o in last.items() if o is not None]
        if offsets:
            try:
                self._consumer.store_offsets(offsets=offsets)
            except KafkaException as err:  # the partition moved meanwhile: its new owner redoes it
                log.warning("offsets not stored (%s); those records are delivered again", err)

    async def close(self) -> None:
        """Commit what is stored and leave the group."""
        await self._call(self._consumer.close)
        self._thread.shutdown(wait=False)

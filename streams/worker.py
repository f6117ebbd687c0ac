"""The Faust app factory and the worker: control task and scoring agent.

``create_app(settings)`` builds a ``faust.App`` whose

* **control task** reads the compacted ``models`` topic from the beginning with
  its own group-less consumer (every worker needs every route), folds it into
  the worker's routing table and emits route decisions to ``alerts``;
* **scoring agent** consumes ``records`` in micro-batches
  (``noack_take(batch_size, within=batch_wait_s)``), scores them with
  :class:`agents.scoring.Scorer`, sends predictions and dead letters, waits for
  Kafka to acknowledge them, and only then acks the records — so an offset is
  committed only after its outcome is stored (at-least-once). Scoring starts
  once the control task has caught up with the control topic.

Every agent reports what it did to ``WorkerState.live`` (:mod:`streams.live`),
which ``/metrics`` and the status page read when ``WEIR_LIVE__PORT`` is set
(:mod:`streams.status_page`).

The agent runs under mode's ``CrashingSupervisor``: an unexpected error stops
the worker instead of leaving a silent, stalled agent behind.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import faust
from aiokafka import AIOKafkaConsumer, TopicPartition
from mode import CrashingSupervisor

from agents.control import Controller
from agents.routing import RoutingTable
from agents.scoring import Scorer
from connectors.kafka import list_topics
from connectors.kserve_client import InferenceClient
from schemas import ConfigurationError, Event, Origin, RawMessage, to_kafka
from schemas.settings import Settings
from schemas.topics import Topic, topic_name
from streams import faust_transport
from streams.live import LiveView

log = logging.getLogger("weir.worker")


@dataclass
class WorkerState:
    """What one worker process holds: its routes, its clients and its live view."""

    settings: Settings
    routing: RoutingTable = field(default_factory=RoutingTable)
    caught_up: asyncio.Event = field(default_factory=asyncio.Event)
    scored: int = 0
    dead_lettered: int = 0
    labelled_rows: int = 0  # training rows joined (features ⨝ label) by the feedback agent
    flush_archive: Callable[[], Awaitable[None]] | None = None
    live: LiveView = field(init=False)  # metrics and status page state (streams/live.py)
    _client: InferenceClient | None = None

    def __post_init__(self) -> None:
        self.live = LiveView(self.settings)

    @property
    def client(self) -> InferenceClient:
        # created lazily, inside the worker's event loop
        if self._client is None:
            self._client = InferenceClient(self.settings.kserve)
        return self._client


def raw_message(message: Any) -> RawMessage:
    """A Faust/aiokafka message as weir's RawMessage (value, key, headers, origin)."""
    return RawMessage(
        value=message.value if message.value is not None else b"",
        key=message.key,
        headers=tuple((k, v or b"") for k, v in (message.headers or ())),
        origin=Origin(message.topic, message.partition, message.offset),
    )


def create_app(settings: Settings) -> tuple[faust.App, WorkerState]:
    k = settings.kafka
    s = settings.scoring
    datadir = settings.stack.run_dir / "faust"
    datadir.parent.mkdir(parents=True, exist_ok=True)  # Faust creates only the last level
    app = faust.App(
        f"{k.topic_prefix}-scoring-{s.model}",
        broker=[f"kafka://{hp.strip()}" for hp in k.bootstrap_servers.split(",")],
        value_serializer="raw",
        key_serializer="raw",
        store="memory://",
        web_enabled=False,
        topic_allow_declare=False,  # weir's topics are created by `weir topics create`
        topic_disable_leader=True,
        consumer_auto_offset_reset="earliest",
        broker_session_timeout=k.session_timeout_ms / 1000,
        broker_heartbeat_interval=max(0.5, k.session_timeout_ms / 4000),
        broker_commit_interval=1.0,
        producer_acks=-1,
        # On shutdown, do not wait for buffered records to be acked: the scoring
        # agent acks by hand, so records it holds but has not scored are simply
        # not committed and are delivered again (at-least-once), instead of the
        # worker hanging until it is killed.
        stream_wait_empty=False,
        datadir=str(datadir),
    )
    faust_transport.install(app, k.fetch_max_wait_ms)
    state = WorkerState(settings)
    topics = {
        t: app.topic(
            topic_name(k, t),
            value_type=bytes,
            key_type=bytes,
            value_serializer="raw",
            key_serializer="raw",
        )
        for t in Topic
    }
    wiring = Wiring(app, settings, state, topics)
    _attach_control(wiring)
    _attach_scoring(wiring)
    from streams.observers import attach_observers
    from streams.status_page import attach_live

    attach_observers(wiring)
    attach_live(wiring)
    return app, state


@dataclass
class Wiring:
    """What every agent of one worker is attached with."""

    app: faust.App
    settings: Settings
    state: WorkerState
    topics: dict[Topic, Any]

    async def send_all(self, pairs: list[tuple[Topic, Event[Any]]]) -> None:
        """Send events and wait until Kafka acknowledged every one of them."""
        futures = []
        for target, event in pairs:
            rec = to_kafka(event, mode=self.settings.events.mode)
            futures.append(
                await self.topics[target].send(
                    key=rec.key, value=rec.value, headers=list(rec.headers)
                )
            )
        await asyncio.gather(*futures)


def _attach_control(w: Wiring) -> None:
    app, settings, state, k = w.app, w.settings, w.state, w.settings.kafka

    @app.task
    async def control() -> None:
        controller = Controller(settings, state.routing, state.client)
        name = topic_name(k, Topic.MODELS)
        consumer = AIOKafkaConsumer(
            bootstrap_servers=k.bootstrap_servers,
            group_id=None,
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            client_id=f"{k.client_id}-control",
        )
        await consumer.start()
        try:
            count = (await asyncio.to_thread(list_topics, settings)).get(name, 0)
            if not count:
                raise ConfigurationError(
                    f"control topic {name} does not exist on {k.bootstrap_servers}; "
                    "run `weir topics create`"
                )
            partitions = [TopicPartition(name, p) for p in range(count)]
            consumer.assign(partitions)
            await consumer.seek_to_beginning(*partitions)
            end = await consumer.end_offsets(partitions)
            while True:
                if not state.caught_up.is_set():
                    positions = {tp: await consumer.position(tp) for tp in partitions}
                    if all(positions[tp] >= end[tp] for tp in partitions):
                        state.caught_up.set()
                        log.info("control caught up: %s", state.routing.models)
                batches = await consumer.getmany(timeout_ms=200)
                for msgs in batches.values():
                    for m in msgs:
                        raw = raw_message(m)
                        replaying = (
                            not state.caught_up.is_set()
                            and m.offset < end[TopicPartition(m.topic, m.partition)]
                        )
                        out = await controller.handle(raw, replaying=replaying)
                        state.live.record_routes(state.routing)
                        if out is not None:
                            target = (
                                Topic.DEAD_LETTER
                                if out.type == "io.weir.deadletter.v1"
                                else Topic.ALERTS
                            )
                            await w.send_all([(target, out)])
                            state.live.record_event(out)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # the worker must not score on a dead control loop
            log.exception("control task failed")
            await app.crash(exc)
        finally:
            await consumer.stop()


def _attach_scoring(w: Wiring) -> None:
    app, settings, state, s = w.app, w.settings, w.state, w.settings.scoring

    @app.agent(w.topics[Topic.RECORDS], supervisor_strategy=CrashingSupervisor)
    async def score(stream: Any) -> None:
        scorer = Scorer(settings, state.routing, state.client)
        await state.caught_up.wait()
        async for events in stream.noack_take(s.batch_size, within=s.batch_wait_s):
            started = time.perf_counter()
            outcome = await scorer.score([raw_message(e.message) for e in events])
            seconds = time.perf_counter() - started
            await w.send_all(
                [(Topic.PREDICTIONS, p) for p in outcome.predictions]
                + [(Topic.DEAD_LETTER, d) for d in outcome.dead_letters]
            )
            state.scored += len(outcome.predictions)
            state.dead_lettered += len(outcome.dead_letters)
            for event in events:
                await stream.ack(event)
            state.live.record_batch(outcome, consumed=len(events), seconds=seconds)


def run_worker(settings: Settings, *, loglevel: str = "info") -> None:
    """Run one worker in the foreground until interrupted."""
    app, _ = create_app(settings)
    worker = faust.Worker(app, loglevel=loglevel, quiet=True)
    worker.execute_from_commandline()

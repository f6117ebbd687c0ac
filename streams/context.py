"""What a role's agents are attached with: its app, settings, topics, producer, live view."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import faust

from agents.routing import RoutingTable
from connectors.embedded import ModelClient
from connectors.kafka_async import AsyncProducer
from connectors.kserve_client import InferenceClient
from schemas import Event, KafkaRecord, Origin, RawMessage, to_kafka
from schemas.settings import Settings
from schemas.topics import Topic, topic_name
from streams.live import LiveView

if TYPE_CHECKING:
    from connectors.registry import ModelRegistry

ROLES = ("scoring", "monitor", "feedback", "performance", "retrainer", "learner")
# the roles that publish routes: they hold the signing key and Kafka's control principal
PUBLISHERS = frozenset({"retrainer", "learner"})
# the roles that give way while scoring is behind, when `weir worker` runs them beside it
# (--scoring-first; streams/roles/scoring_first.py)
PACED_ROLES = frozenset({"monitor", "feedback", "learner"})


def role_off(settings: Settings, role: str) -> str | None:
    """Why ``role`` has no work with ``settings`` (then it is not run), or None."""
    if role == "retrainer" and not settings.retrainer_runs:
        return (
            "the retrainer role is off: WEIR_RETRAINING__ENABLED=false and "
            "WEIR_CANARY__AUTO=false; unset either to run it"
        )
    if role == "learner" and not settings.learner.enabled:
        return "the learner role is off: set WEIR_LEARNER__ENABLED=true to run it"
    return None


def role_group(settings: Settings, role: str) -> str:
    """The consumer group ``role`` reads its topics in."""
    return f"{settings.kafka.topic_prefix}-{role}-{settings.scoring.model}"


def raw_message(message: Any) -> RawMessage:
    """A Faust/aiokafka message as weir's RawMessage (value, key, headers, origin)."""
    return RawMessage(
        value=message.value if message.value is not None else b"",
        key=message.key,
        headers=tuple((k, v or b"") for k, v in (message.headers or ())),
        origin=Origin(message.topic, message.partition, message.offset),
    )


@dataclass
class RoleContext:
    """What one role process holds and its agents are attached with."""

    app: faust.App
    settings: Settings
    role: str
    group: str  # the role's consumer group
    topics: dict[Topic, Any]
    live: LiveView
    ready: asyncio.Event = field(default_factory=asyncio.Event)
    # what keeps the role from working now, by check ("broker", "model-server"); /readyz is
    # 503 while any is here
    problems: dict[str, str] = field(default_factory=dict)
    routing: RoutingTable | None = None  # the routes, in the roles that fold the control topic
    # waits until the control fold has folded what the control topic held when called;
    # False after its timeout (set by attach_control)
    folded_to_now: Callable[[], Awaitable[bool]] | None = None
    # it shares the machine's cores with a scoring role: give way while that is behind
    scoring_first: bool = False
    _producer: AsyncProducer | None = None
    _client: InferenceClient | None = None
    _names: dict[Topic, str] = field(default_factory=dict)

    @property
    def producer(self) -> AsyncProducer:
        # created lazily, inside the worker's event loop
        if self._producer is None:
            self._producer = AsyncProducer(self.settings)
        return self._producer

    @property
    def client(self) -> InferenceClient:
        """Model servers over HTTP, and embedded routes (registry snapshots) in-process."""
        if self._client is None:
            settings = self.settings

            def registry() -> ModelRegistry:
                from connectors.registry import ModelRegistry  # joblib: only when one is used

                return ModelRegistry.for_settings(settings.as_model_reader())  # reads only

            self._client = ModelClient(settings.kserve, registry)
        return self._client

    async def routes_caught_up(self) -> bool:
        """Wait until this role's control fold has taken in every route event sent until
        now; False when it did not within its timeout. True in a role with no fold."""
        return self.folded_to_now is None or await self.folded_to_now()

    def name(self, topic: Topic) -> str:
        name = self._names.get(topic)  # once a topic: the scoring path names one per event
        if name is None:
            name = self._names[topic] = topic_name(self.settings.kafka, topic)
        return name

    def _records(
        self, pairs: Sequence[tuple[Topic, Event[Any] | KafkaRecord]]
    ) -> list[tuple[str, KafkaRecord]]:
        mode = self.settings.events.mode
        return [
            (self.name(t), e if isinstance(e, KafkaRecord) else to_kafka(e, mode=mode))
            for t, e in pairs
        ]

    async def send_all(self, pairs: Sequence[tuple[Topic, Event[Any]]]) -> None:
        """Send events and wait until Kafka acknowledged every one of them."""
        await self.producer.send(self._records(pairs))

    def queue_all(
        self, pairs: Sequence[tuple[Topic, Event[Any] | KafkaRecord]]
    ) -> asyncio.Future[list[str]]:
        """Produce events (or records already encoded) now, in order; the future resolves
        once Kafka acknowledged them."""
        return self.producer.queue(self._records(pairs))

    def send_nowait(self, pairs: Sequence[tuple[Topic, Event[Any]]]) -> None:
        """Queue events without waiting for the broker: best-effort outputs (outcomes)."""
        self.producer.send_nowait(self._records(pairs))

    def channel(self, *logical: Topic) -> Any:
        """A Faust topic (raw bytes) over one or more weir topics."""
        return self.app.topic(
            *(self.name(t) for t in logical),
            value_type=bytes,
            key_type=bytes,
            value_serializer="raw",
            key_serializer="raw",
        )

    def on_shutdown(self, hook: Callable[[], Awaitable[object]]) -> None:
        """Run ``hook`` when the app shuts down (before its consumer and producer stop)."""

        async def receiver(_sender: Any, **_: Any) -> None:
            await hook()

        self.app.on_before_shutdown.connect(receiver)  # type: ignore[arg-type]

    async def close(self) -> None:
        """Deliver what is queued and close the clients (the app's shutdown hook)."""
        if self._producer is not None:
            await self._producer.close()
        if self._client is not None:
            await self._client.aclose()

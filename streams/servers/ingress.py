"""A Knative-compatible CloudEvents sink that produces to Kafka.

Anything that can deliver CloudEvents over HTTP — a Knative ``KafkaSource``,
a ``Trigger``, a ``SinkBinding``-injected producer, ``curl`` — can POST to it,
in binary or structured content mode. Each event is validated against weir's
schemas and produced to the topic its type belongs to:

=============================  ==========  =======================================
CloudEvents ``type``           topic       route
=============================  ==========  =======================================
``io.weir.record.v1``          records     ``POST /``
``io.weir.label.v1``           labels      ``POST /``
``io.weir.model.version.v1``   models      ``POST /admin``, with a bearer token
=============================  ==========  =======================================

Routes change only through ``POST /admin`` with ``Authorization: Bearer
<WEIR_KNATIVE__ADMIN_TOKEN>`` (without that setting the admin route refuses
everything), and only signed route events have any effect: every worker
verifies the signature (docs/security.md). The ingress never signs.

Answers: **202** only after Kafka acknowledged the event (the body says where
it was stored); **400** with the reason for anything that is not a valid weir
event of an accepted type; **401**/**403** for a control event without the
admin token, or for any event without a sender's token when
``WEIR_KNATIVE__INGRESS_TOKENS`` names senders (``{"sensor-a": "<token>", …}``;
delete a sender's entry to cut it off); **413** over ``WEIR_EVENTS__MAX_BYTES``; **503**
when Kafka did not acknowledge (retriable: Knative's delivery retries it).
The event keeps its ``id`` — the ingress relays the same event, it does not
make a new one.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import logging
from collections.abc import AsyncIterator, Mapping
from typing import Any

from confluent_kafka import KafkaError, Message, Producer
from pydantic import SecretStr
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from connectors.kafka import base_config
from schemas import (
    Event,
    EventDecodeError,
    EventTooLargeError,
    from_http,
    to_kafka,
)
from schemas.settings import Settings
from schemas.topics import Topic, topic_name

log = logging.getLogger("weir.ingress")

ACCEPTED: dict[str, Topic] = {  # on POST /
    "io.weir.record.v1": Topic.RECORDS,
    "io.weir.label.v1": Topic.LABELS,
}
ADMIN: dict[str, Topic] = {  # on POST /admin, with the admin token
    "io.weir.model.version.v1": Topic.MODELS,
}


def _bearer_owner(request: Request, tokens: Mapping[str, SecretStr]) -> str | None:
    """The sender whose token the request carries, or None. Every token is compared (in
    constant time), so timing does not tell which sender's token was close."""
    given = request.headers.get("authorization", "").encode()
    owner = None
    for name, token in tokens.items():
        if hmac.compare_digest(given, f"Bearer {token.get_secret_value()}".encode()):
            owner = name
    return owner


def _problem(status: int, error: str, reason: str) -> JSONResponse:
    return JSONResponse({"error": error, "reason": reason}, status_code=status)


class Ingress:
    """The ingress' state: settings and one idempotent producer."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        # with the admin route on, the ingress publishes routes: Kafka's control principal
        writer = settings.as_control() if settings.knative.admin_token else settings
        self.producer = Producer(
            base_config(writer)
            | {
                "client.id": f"{settings.kafka.client_id}-ingress",
                "acks": "all",
                "enable.idempotence": True,
                "linger.ms": 2,
            }
        )
        self._poller: asyncio.Task[None] | None = None

    async def _poll_forever(self) -> None:
        # delivery callbacks run inside poll(); keep it off the event loop thread
        while True:
            await asyncio.to_thread(self.producer.poll, 0.1)

    async def start(self) -> None:
        self._poller = asyncio.create_task(self._poll_forever())

    async def stop(self) -> None:
        if self._poller is not None:
            self._poller.cancel()
        await asyncio.to_thread(self.producer.flush, 10)

    async def produce(self, topic: str, event: Event[Any]) -> tuple[int, int]:
        """Produce ``event`` and wait for Kafka's acknowledgement; returns (partition, offset)."""
        loop = asyncio.get_running_loop()
        done: asyncio.Future[tuple[int, int]] = loop.create_future()

        def on_delivery(err: KafkaError | None, msg: Message) -> None:
            def settle() -> None:
                if done.done():
                    return
                if err is not None:
                    done.set_exception(RuntimeError(str(err)))
                else:
                    done.set_result((msg.partition() or 0, msg.offset() or 0))

            loop.call_soon_threadsafe(settle)

        rec = to_kafka(event, mode=self.settings.events.mode)
        self.producer.produce(
            topic, value=rec.value, key=rec.key, headers=list(rec.headers), on_delivery=on_delivery
        )
        return await asyncio.wait_for(done, timeout=30)

    async def handle(self, request: Request) -> JSONResponse:
        tokens = self.settings.knative.ingress_tokens
        if tokens:
            sender = _bearer_owner(request, tokens)
            if sender is None:
                return _problem(
                    401,
                    "Unauthorized",
                    "this ingress needs a sender's bearer token (WEIR_KNATIVE__INGRESS_TOKENS)",
                )
            log.debug("event from sender %s", sender)
        return await self._relay(request, ACCEPTED)

    async def handle_admin(self, request: Request) -> JSONResponse:
        token = self.settings.knative.admin_token
        if token is None:
            return _problem(
                403, "AdminOff", "the admin route is off: WEIR_KNATIVE__ADMIN_TOKEN is not set"
            )
        given = request.headers.get("authorization", "")
        expected = f"Bearer {token.get_secret_value()}"
        if not hmac.compare_digest(given.encode(), expected.encode()):
            return _problem(401, "Unauthorized", "the admin route needs its bearer token")
        return await self._relay(request, ADMIN)

    async def _relay(self, request: Request, accepted: dict[str, Topic]) -> JSONResponse:
        limit = self.settings.events.max_bytes
        declared = request.headers.get("content-length")
        if declared is not None and declared.isdigit() and int(declared) > limit:
            return _problem(413, "EventTooLarge", f"body is {declared} bytes, over {limit}")
        body = await request.body()
        try:
            event = from_http(dict(request.headers), body, max_bytes=limit)
        except EventTooLargeError as err:
            return _problem(413, err.error_class, err.reason)
        except EventDecodeError as err:
            return _problem(400, err.error_class, err.reason)
        target = accepted.get(event.type)
        if target is None and event.type in ADMIN:
            return _problem(
                403,
                "ControlNotAccepted",
                f"{event.type} changes routes: POST it to /admin with the admin token "
                "(WEIR_KNATIVE__ADMIN_TOKEN), signed (`weir keys`)",
            )
        if target is None:
            names = ", ".join(sorted(accepted))
            return _problem(
                400, "NotAccepted", f"{event.type} is not accepted here; send one of: {names}"
            )
        topic = topic_name(self.settings.kafka, target)
        try:
            partition, offset = await self.produce(topic, event)
        except (RuntimeError, TimeoutError) as err:
            log.error("Kafka did not acknowledge %s: %s", event.id, err)
            return _problem(
                503,
                "KafkaUnavailable",
                f"Kafka at {self.settings.kafka.bootstrap_servers} did not acknowledge: {err}",
            )
        return JSONResponse(
            {"id": event.id, "topic": topic, "partition": partition, "offset": offset},
            status_code=202,
        )


def create_ingress_app(settings: Settings) -> Starlette:
    ingress = Ingress(settings)

    async def healthz(_: Request) -> JSONResponse:
        return JSONResponse({"ok": True})

    @contextlib.asynccontextmanager
    async def lifespan(_: Starlette) -> AsyncIterator[None]:
        await ingress.start()
        try:
            yield
        finally:
            await ingress.stop()

    return Starlette(
        routes=[
            Route("/", ingress.handle, methods=["POST"]),
            Route("/admin", ingress.handle_admin, methods=["POST"]),
            Route("/healthz", healthz, methods=["GET"]),
        ],
        lifespan=lifespan,
    )


def run_ingress(settings: Settings, *, port: int | None = None) -> None:
    """Serve the ingress until interrupted (binds ``WEIR_KNATIVE__INGRESS_HOST``)."""
    import uvicorn

    uvicorn.run(
        create_ingress_app(settings),
        host=settings.knative.ingress_host,
        port=port or settings.knative.ingress_port,
        log_level="info",
    )

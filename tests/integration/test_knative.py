"""Knative Eventing surfaces with real HTTP on loopback and the real broker."""

from __future__ import annotations

import asyncio
import contextlib
import json
import threading
from collections.abc import Awaitable, Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import httpx
import pytest
import uvicorn
from pydantic import SecretStr

from connectors.kafka import Delivered, EventProducer, read_at
from connectors.process import free_port
from connectors.signing import signed
from schemas import (
    Event,
    InputRecord,
    ModelVersionEvent,
    OutlierAlert,
    Prediction,
    from_http,
    new_event,
    to_http,
)
from schemas.settings import EventSettings, KnativeSettings, Settings
from schemas.topics import Topic, topic_name
from streams.servers.egress import Egress
from streams.servers.ingress import create_ingress_app
from tests.helpers import group_lag

pytestmark = pytest.mark.integration

START_S = 30  # uvicorn start-up on loopback


ADMIN_TOKEN = "test-admin-token"


@contextlib.contextmanager
def serving(settings: Settings) -> Iterator[str]:
    """The ingress app on a free loopback port, served by uvicorn in a thread."""
    port = free_port()
    server = uvicorn.Server(
        uvicorn.Config(
            create_ingress_app(settings), host="127.0.0.1", port=port, log_level="warning"
        )
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    url = f"http://127.0.0.1:{port}"
    try:
        with httpx.Client() as client:
            for _ in range(int(START_S / 0.05)):
                if server.started:
                    break
                threading.Event().wait(0.05)  # bounded: START_S in all
            assert server.started, "ingress did not start"
            assert client.get(url + "/healthz").json() == {"ok": True}
        yield url
    finally:
        server.should_exit = True
        thread.join(timeout=15)


@pytest.fixture
def ingress_url(live_stack: Settings) -> Iterator[str]:
    settings = live_stack.model_copy(
        update={
            "events": EventSettings(max_bytes=4096),
            "knative": KnativeSettings(admin_token=SecretStr(ADMIN_TOKEN)),
        }
    )
    with serving(settings) as url:
        yield url


def test_per_sender_tokens_let_each_sender_in_and_cut_one_off(live_stack: Settings, unique: str):
    tokens = {"sensor-a": SecretStr("token-a"), "sensor-b": SecretStr("token-b")}
    event = new_event(InputRecord(id=f"tok-{unique}", features={"x": 1.0}), source="sensor-a")
    headers, body = to_http(event)

    def post(url: str, token: str | None) -> httpx.Response:
        auth = {} if token is None else {"authorization": f"Bearer {token}"}
        return httpx.post(url, headers=headers | auth, content=body)

    both = live_stack.model_copy(update={"knative": KnativeSettings(ingress_tokens=tokens)})
    with serving(both) as url:
        assert post(url, "token-a").status_code == 202
        assert post(url, "token-b").status_code == 202
        for token in (None, "token-c", "Bearer token-a"):
            refused = post(url, token)
            assert refused.status_code == 401, token
            assert "WEIR_KNATIVE__INGRESS_TOKENS" in refused.json()["reason"]
    # sensor-b is cut off: its entry is gone, sensor-a is unaffected
    only_a = live_stack.model_copy(
        update={"knative": KnativeSettings(ingress_tokens={"sensor-a": tokens["sensor-a"]})}
    )
    with serving(only_a) as url:
        assert post(url, "token-b").status_code == 401
        assert post(url, "token-a").status_code == 202


@pytest.mark.parametrize("mode", ["binary", "structured"])
def test_ingress_accepts_cloudevents_and_answers_after_kafka_acked(
    live_stack: Settings, ingress_url: str, unique: str, mode: str
):
    event = new_event(InputRecord(id=f"http-{unique}", features={"x": 1.5}), source="curl")
    headers, body = to_http(event, mode=mode)
    resp = httpx.post(ingress_url, headers=headers, content=body)
    assert resp.status_code == 202, resp.text
    where = resp.json()
    assert where["topic"] == topic_name(live_stack.kafka, Topic.RECORDS)
    stored = read_at(live_stack, Delivered(where["topic"], where["partition"], where["offset"]))
    assert stored.event == event, "the same event (same id) is on Kafka"


def test_ingress_rejects_bad_events_with_reasons(ingress_url: str):
    good_headers, _ = to_http(new_event(InputRecord(id="r", features={"x": 1.0}), source="t"))
    cases = {
        "not json": (good_headers, b"{nope", 400, "MalformedEvent"),
        "wrong schema": (
            good_headers,
            b'{"id": "r", "features": {"x": "high"}}',
            400,
            "SchemaViolation",
        ),
        "no cloudevent": ({"content-type": "application/json"}, b"{}", 400, "ce-specversion"),
        "too large": (good_headers, b" " * 5000, 413, "over"),
    }
    alert = new_event(
        OutlierAlert(alert_id="a", model="m", record_id="r", score=1.0, threshold=0.9), source="t"
    )
    h, b = to_http(alert)
    cases["type not accepted"] = (h, b, 400, "not accepted here")
    for name, (headers, body, status, words) in cases.items():
        resp = httpx.post(ingress_url, headers=headers, content=body)
        assert resp.status_code == status, (name, resp.text)
        assert words in json.dumps(resp.json()), (name, resp.json())


def test_routes_change_only_through_the_admin_route_with_its_token(
    live_stack: Settings, ingress_url: str, unique: str
):
    """The attack of the security issue: a POSTed activate pointing at a stranger's server."""
    change = ModelVersionEvent(
        action="activate",
        model=f"m{unique}",
        version="666",
        url="http://127.0.0.1:6666",
        features=["x"],
    )
    headers, body = to_http(signed(live_stack, new_event(change, source="curl")))
    on_data_route = httpx.post(ingress_url, headers=headers, content=body)
    assert on_data_route.status_code == 403, on_data_route.text
    assert "POST it to /admin" in on_data_route.json()["reason"]
    no_token = httpx.post(ingress_url + "/admin", headers=headers, content=body)
    wrong = httpx.post(
        ingress_url + "/admin", headers=headers | {"authorization": "Bearer nope"}, content=body
    )
    assert no_token.status_code == wrong.status_code == 401
    ok = httpx.post(
        ingress_url + "/admin",
        headers=headers | {"authorization": f"Bearer {ADMIN_TOKEN}"},
        content=body,
    )
    assert ok.status_code == 202 and ok.json()["topic"] == topic_name(
        live_stack.kafka, Topic.MODELS
    )
    # records are not taken on the admin route
    record_event = new_event(InputRecord(id="r", features={"x": 1.0}), source="t")
    record_headers, record = to_http(record_event)
    admin_record = httpx.post(
        ingress_url + "/admin",
        headers=record_headers | {"authorization": f"Bearer {ADMIN_TOKEN}"},
        content=record,
    )
    assert admin_record.status_code == 400


def test_the_admin_route_is_off_without_a_token(live_stack: Settings):
    async def post() -> httpx.Response:
        app = create_ingress_app(live_stack)  # no admin token in these settings
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://ingress") as client:
            return await client.post("/admin", content=b"{}")

    answer = asyncio.run(post())
    assert answer.status_code == 403 and "WEIR_KNATIVE__ADMIN_TOKEN" in answer.json()["reason"]


class Receiver:
    """A real HTTP CloudEvents receiver on loopback that answers from a script.

    Requests are handled on threads of their own (the egress POSTs several at once):
    ``received`` keeps (status, headers, body) in the order the answers were chosen;
    with ``gate`` set, the first ``gate`` requests are held until that many are in
    flight together (answered 500 if they never are, within 30 s).
    """

    def __init__(self, script: list[int], *, gate: int = 0) -> None:
        self.script = script
        self.received: list[tuple[int, dict[str, str], bytes]] = []
        self.in_flight = self.most_in_flight = 0
        self._lock = threading.Lock()
        self._gate = threading.Barrier(gate) if gate > 1 else None
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["content-length"]))
                with outer._lock:
                    outer.in_flight += 1
                    outer.most_in_flight = max(outer.most_in_flight, outer.in_flight)
                    gated = outer._gate is not None and not outer._gate.broken
                status = 200
                if gated:
                    try:
                        assert outer._gate is not None
                        outer._gate.wait(timeout=30)
                    except threading.BrokenBarrierError:
                        status = 500
                with outer._lock:
                    if status == 200:
                        status = outer.script.pop(0) if len(outer.script) > 1 else outer.script[0]
                    headers = {k.lower(): v for k, v in self.headers.items()}
                    outer.received.append((status, headers, body))
                    outer.in_flight -= 1
                self.send_response(status)
                self.end_headers()

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def answered(self, status: int) -> list[tuple[dict[str, str], bytes]]:
        return [(h, b) for code, h, b in self.received if code == status]

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def recorded(waits: list[float]) -> Callable[[float], Awaitable[None]]:
    """An egress ``sleep`` that notes the backoff instead of waiting it out."""

    async def sleep(seconds: float) -> None:
        waits.append(seconds)

    return sleep


def _egress_settings(live_stack: Settings, unique: str, sink: str) -> Settings:
    kafka = live_stack.kafka.model_copy(
        update={"topic_prefix": f"{live_stack.kafka.topic_prefix}-eg{unique}"}
    )
    return live_stack.model_copy(update={"kafka": kafka, "k_sink": sink})


def _prediction(i: int) -> Prediction:
    return Prediction(
        record_id=f"r{i}",
        model="m",
        version="1",
        url="http://127.0.0.1:1",
        output=i % 2,
        latency_ms=1.0,
    )


def test_egress_forwards_binary_cloudevents_and_retries(live_stack: Settings, unique: str):
    receiver = Receiver([503, 200])  # first delivery fails once, then all succeed
    settings = _egress_settings(live_stack, unique, receiver.url)
    sent = _sent_predictions(settings, 3)
    sleeps: list[float] = []
    try:
        stats = Egress(settings, sleep=recorded(sleeps)).run(max_messages=3, from_beginning=True)
    finally:
        receiver.close()
    assert stats.delivered == 3 and stats.dead_lettered == 0
    assert len(receiver.received) == 4 and len(sleeps) == 1, "one retry with backoff"
    assert len(receiver.answered(503)) == 1
    got = [from_http(h, b) for h, b in receiver.answered(200)]
    assert sorted(e.id for e in got) == sorted(e.id for e in sent)
    assert receiver.answered(503)[0][0]["ce-type"] == "io.weir.prediction.v1"


def _sent_predictions(settings: Settings, count: int) -> list[Event[Prediction]]:
    from connectors.kafka import ensure_topics

    ensure_topics(settings)
    sent = [new_event(_prediction(i), source="t") for i in range(count)]
    producer = EventProducer(settings)
    for e in sent:
        producer.send(topic_name(settings.kafka, Topic.PREDICTIONS), e)
    return sent


@pytest.mark.parametrize("concurrency", [1, 8])
def test_egress_posts_up_to_its_concurrency_at_once(
    live_stack: Settings, unique: str, concurrency: int
):
    """With ``egress_concurrency`` 8 the sink sees 8 requests in flight together (it holds
    the first 8 until they are); with 1, one at a time. Every event arrives once.

    The batch is read from Kafka first and handed to ``forward_all``: how many messages
    one ``consumer.batch`` returns depends on the fetch (a first batch of 3 would leave
    a gate of 8 waiting until the POSTs time out and are retried, rightly)."""
    from connectors.kafka import EventConsumer

    receiver = Receiver([200], gate=8 if concurrency > 1 else 0)
    settings = _egress_settings(live_stack, unique, receiver.url)
    settings = settings.model_copy(
        update={"knative": settings.knative.model_copy(update={"egress_concurrency": concurrency})}
    )
    sent = _sent_predictions(settings, 40)
    with EventConsumer(
        settings,
        [topic_name(settings.kafka, Topic.PREDICTIONS)],
        group_id=f"r-{unique}",
        from_beginning=True,
    ) as consumer:
        messages = list(consumer.take(len(sent), deadline_s=30))
    assert len(messages) == len(sent)
    egress = Egress(settings)

    async def forward() -> list[bool]:
        async with egress.session() as http:
            return await egress.forward_all(http, messages)

    try:
        delivered = asyncio.run(forward())
    finally:
        receiver.close()
    assert delivered == [True] * len(sent) and egress.stats.dead_lettered == 0
    got = sorted(from_http(h, b).id for h, b in receiver.answered(200))
    assert got == sorted(e.id for e in sent), "each event once (none was retried)"
    if concurrency > 1:
        assert receiver.most_in_flight >= 8
    else:
        assert receiver.most_in_flight == 1


def test_egress_commits_after_every_event_was_delivered(live_stack: Settings, unique: str):
    """End to end through ``run``: every event arrives and the group's committed offsets
    cover all of them once they were."""
    receiver = Receiver([200])
    settings = _egress_settings(live_stack, unique, receiver.url)
    sent = _sent_predictions(settings, 40)
    try:
        stats = Egress(settings).run(max_messages=len(sent), from_beginning=True)
    finally:
        receiver.close()
    assert stats.delivered == len(sent) and stats.dead_lettered == 0
    got = {from_http(h, b).id for h, b in receiver.answered(200)}
    assert got == {e.id for e in sent}
    group, topic = (
        f"{settings.kafka.topic_prefix}-egress",
        topic_name(settings.kafka, Topic.PREDICTIONS),
    )
    assert not any(group_lag(settings, group, topic).values()), "every offset committed"


def test_egress_dead_letters_on_permanent_failure(live_stack: Settings, unique: str):
    from connectors.kafka import EventConsumer, ensure_topics

    receiver = Receiver([400])
    settings = _egress_settings(live_stack, unique, receiver.url)
    ensure_topics(settings)
    event = new_event(_prediction(7), source="t")
    where = EventProducer(settings).send(topic_name(settings.kafka, Topic.PREDICTIONS), event)
    original = read_at(settings, where)
    try:
        stats = Egress(settings, sleep=recorded([])).run(max_messages=1, from_beginning=True)
    finally:
        receiver.close()
    assert stats.dead_lettered == 1 and len(receiver.received) == 1, "a 400 is not retried"
    with EventConsumer(
        settings, [topic_name(settings.kafka, Topic.DEAD_LETTER)], group_id=f"dl-{unique}"
    ) as consumer:
        letters = list(consumer.take(1, deadline_s=30))
    assert letters and letters[0].event is not None
    letter = letters[0].event.data
    assert letter.error_class == "EgressFailed" and "answered 400" in letter.reason
    assert original.raw is not None and letter.raw == original.raw.value
    assert (letter.source_topic, letter.offset) == (where.topic, where.offset)

"""The scoring core without a broker: routing, batching, dead letters, waiting through outages."""

from __future__ import annotations

import asyncio
import json

import httpx

from agents.routing import RoutingTable
from agents.scoring import Scorer
from connectors.kserve_client import InferenceClient
from schemas import InputRecord, ModelVersionEvent, Origin, RawMessage, new_event, to_kafka
from schemas.settings import KServeSettings, ScoringSettings, Settings
from tests.samples import FIXED_TIME

SETTINGS = Settings(scoring=ScoringSettings(model="churn"), kserve=KServeSettings(max_retries=0))
V1 = "http://127.0.0.1:8081"
V2 = "http://127.0.0.1:8082"


def raw_record(i: int, features: dict[str, float] | None = None) -> RawMessage:
    rec = to_kafka(
        new_event(
            InputRecord(id=f"r{i}", features=features or {"a": float(i), "b": 1.0}),
            source="test",
            now=lambda: FIXED_TIME,
        )
    )
    return RawMessage(rec.value, rec.key, rec.headers, Origin("weir.records", 0, i))


def activate(version: str, url: str, action: str = "activate") -> ModelVersionEvent:
    return ModelVersionEvent(action=action, model="churn", version=version, url=url, protocol="v1")


class FakeServers:
    """Model servers behind an httpx MockTransport; each URL can be up, down or rejecting."""

    def __init__(self) -> None:
        self.state = {V1: "up", V2: "up"}
        self.calls: list[tuple[str, int]] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        base = f"{request.url.scheme}://{request.url.host}:{request.url.port}"
        rows = json.loads(request.content)["instances"]
        self.calls.append((base, len(rows)))
        if self.state[base] == "down":
            raise httpx.ConnectError("refused")
        if self.state[base] == "reject":
            return httpx.Response(400, text="bad input")
        version = "1" if base == V1 else "2"
        return httpx.Response(
            200, json={"predictions": [int(r[0]) % 2 for r in rows], "model_version": version}
        )


def make(servers: FakeServers, on_sleep=None) -> tuple[Scorer, RoutingTable, list[float]]:
    table = RoutingTable()
    delays: list[float] = []

    async def sleep(seconds: float) -> None:
        delays.append(seconds)
        if on_sleep is not None:
            on_sleep(len(delays), table, servers)

    client = InferenceClient(SETTINGS.kserve, transport=httpx.MockTransport(servers), sleep=sleep)
    return Scorer(SETTINGS, table, client, now=lambda: FIXED_TIME, sleep=sleep), table, delays


def test_batch_goes_to_the_active_route_in_one_call_stamped_with_version():
    servers = FakeServers()
    scorer, table, _ = make(servers)
    table.apply(activate("1", V1), ready=True)
    out = asyncio.run(scorer.score([raw_record(i) for i in range(10)]))
    assert servers.calls == [(V1, 10)]
    assert [p.data.record_id for p in out.predictions] == [f"r{i}" for i in range(10)]
    assert {(p.data.version, p.data.url) for p in out.predictions} == {("1", V1)}
    assert out.predictions[3].data.output == 1
    assert out.predictions[0].lineage.modelversion == "1"
    assert out.dead_letters == []


def test_bad_messages_are_dead_lettered_with_raw_bytes_and_the_rest_scored():
    servers = FakeServers()
    scorer, table, _ = make(servers)
    table.apply(activate("1", V1), ready=True)
    garbage = RawMessage(b"\x00garbage", b"k", (), Origin("weir.records", 1, 5))
    alert = to_kafka(new_event(activate("9", V2), source="t"))
    wrong_type = RawMessage(alert.value, alert.key, alert.headers, Origin("weir.records", 1, 6))
    missing = raw_record(3, features={"a": 1.0})
    out = asyncio.run(scorer.score([raw_record(1), garbage, wrong_type, missing, raw_record(2)]))
    assert [p.data.record_id for p in out.predictions] == ["r1", "r2"]
    letters = {d.data.offset: d.data for d in out.dead_letters}
    assert letters[5].raw == b"\x00garbage" and letters[5].error_class == "MalformedEvent"
    assert letters[6].error_class == "WrongTopic"
    assert letters[3].error_class == "SchemaViolation" and "lacks feature 'b'" in letters[3].reason


def test_server_down_records_wait_with_backoff_and_none_is_lost():
    servers = FakeServers()
    servers.state[V1] = "down"

    def recover(n_sleeps: int, table: RoutingTable, s: FakeServers) -> None:
        if n_sleeps == 4:
            s.state[V1] = "up"

    scorer, table, delays = make(servers, recover)
    table.apply(activate("1", V1), ready=True)
    out = asyncio.run(scorer.score([raw_record(i) for i in range(5)]))
    assert len(out.predictions) == 5 and out.dead_letters == []
    assert out.retries == 4
    assert delays == sorted(delays) and delays[-1] > delays[0], "backoff grows"


def test_hot_swap_during_an_outage_moves_waiting_records_to_the_new_route():
    servers = FakeServers()
    servers.state[V1] = "down"

    def swap(n_sleeps: int, table: RoutingTable, s: FakeServers) -> None:
        if n_sleeps == 2:
            table.apply(activate("2", V2), ready=True)

    scorer, table, _ = make(servers, swap)
    table.apply(activate("1", V1), ready=True)
    out = asyncio.run(scorer.score([raw_record(i) for i in range(4)]))
    assert {p.data.version for p in out.predictions} == {"2"}
    assert out.by_version == {"2": 4}


def test_records_without_a_route_wait_for_one():
    servers = FakeServers()

    def publish(n_sleeps: int, table: RoutingTable, s: FakeServers) -> None:
        if n_sleeps == 3:
            table.apply(activate("1", V1), ready=True)

    scorer, _, delays = make(servers, publish)
    out = asyncio.run(scorer.score([raw_record(1)]))
    assert len(out.predictions) == 1 and len(delays) == 3


def test_a_rejecting_server_dead_letters_the_batch_with_its_reason():
    servers = FakeServers()
    servers.state[V1] = "reject"
    scorer, table, _ = make(servers)
    table.apply(activate("1", V1), ready=True)
    out = asyncio.run(scorer.score([raw_record(1), raw_record(2)]))
    assert out.predictions == []
    assert [d.data.error_class for d in out.dead_letters] == ["ModelServerRejected"] * 2
    assert "answered 400: bad input" in out.dead_letters[0].data.reason
    assert out.dead_letters[0].data.attempts == 1


def test_control_rejects_a_swap_to_an_endpoint_that_is_not_ready():
    from agents.control import Controller

    servers = FakeServers()
    table = RoutingTable()

    def ready_handler(request: httpx.Request) -> httpx.Response:
        base = f"{request.url.scheme}://{request.url.host}:{request.url.port}"
        return httpx.Response(200, json={"ready": servers.state[base] == "up"})

    async def no_sleep(_: float) -> None:
        return None

    client = InferenceClient(
        SETTINGS.kserve, transport=httpx.MockTransport(ready_handler), sleep=no_sleep
    )
    settings = SETTINGS.model_copy(
        update={"scoring": SETTINGS.scoring.model_copy(update={"control_ready_timeout_s": 0.01})}
    )
    control = Controller(settings, table, client, now=lambda: FIXED_TIME)

    def control_msg(change: ModelVersionEvent, offset: int) -> RawMessage:
        rec = to_kafka(new_event(change, source="t"))
        return RawMessage(rec.value, rec.key, rec.headers, Origin("weir.models", 0, offset))

    first = asyncio.run(control.handle(control_msg(activate("1", V1), 0), replaying=False))
    assert first is not None and first.data.accepted and first.data.active_version == "1"
    servers.state[V2] = "down"
    second = asyncio.run(control.handle(control_msg(activate("2", V2), 1), replaying=False))
    assert second is not None and not second.data.accepted
    assert "not ready" in second.data.reason and second.data.active_version == "1"
    assert table.route("churn", "r1").version == "1"
    # replaying history emits nothing but still folds the state
    servers.state[V2] = "up"
    assert asyncio.run(control.handle(control_msg(activate("2", V2), 1), replaying=True)) is None
    assert table.route("churn", "r1").version == "2"

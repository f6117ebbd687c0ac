"""The scoring core without a broker: routing, batching, dead letters, waiting through outages."""

from __future__ import annotations

import asyncio
import json

import httpx
from hypothesis import given, settings
from hypothesis import strategies as st

from agents.routing import RoutingTable
from agents.scoring import Scorer
from connectors.kserve_client import InferenceClient
from connectors.signing import signed
from schemas import InputRecord, ModelVersionEvent, Origin, RawMessage, new_event, to_kafka
from schemas.settings import KServeSettings, ScoringSettings, Settings
from tests.samples import FIXED_TIME, TEST_CONTROL

SETTINGS = Settings(
    scoring=ScoringSettings(model="churn"),
    kserve=KServeSettings(max_retries=0),
    control=TEST_CONTROL,
)
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


def activate(version: str, url: str, action: str = "activate", **kw) -> ModelVersionEvent:
    return ModelVersionEvent(
        action=action,
        model="churn",
        version=version,
        url=url,
        protocol="v1",
        features=["a", "b"],
        **kw,
    )


class FakeServers:
    """Model servers behind an httpx MockTransport; each URL can be up, down or rejecting."""

    def __init__(self) -> None:
        self.state = {V1: "up", V2: "up"}
        self.calls: list[tuple[str, int]] = []
        self.poison: set[float] = set()  # a row whose first value is here fails its call (500)
        self.labels: dict[float, object] = {}  # first value -> the label to answer

    def __call__(self, request: httpx.Request) -> httpx.Response:
        base = f"{request.url.scheme}://{request.url.host}:{request.url.port}"
        rows = json.loads(request.content)["instances"]
        self.calls.append((base, len(rows)))
        if self.state[base] == "down":
            raise httpx.ConnectError("refused")
        if self.state[base] == "reject":
            return httpx.Response(400, text="bad input")
        if any(r[0] in self.poison for r in rows):
            return httpx.Response(500, text="cannot score that")
        version = "1" if base == V1 else "2"
        labels = [self.labels.get(r[0], int(r[0]) % 2) for r in rows]
        return httpx.Response(200, json={"predictions": labels, "model_version": version})


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
    assert [(model, version) for model, version, _ in out.calls] == [("churn", "2")]
    assert sum(out.calls.values()) == 4  # one model call, its latency kept for the metrics


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
    # the batch was split to find the records at fault; a 4xx alone is final
    assert servers.calls == [(V1, 2), (V1, 1), (V1, 1)]
    assert [d.data.attempts for d in out.dead_letters] == [2, 2]


def test_a_poison_record_is_isolated_tried_a_bounded_number_of_times_and_dead_lettered():
    servers = FakeServers()
    servers.poison = {5.0}
    scorer, table, delays = make(servers)
    table.apply(activate("1", V1), ready=True)
    out = asyncio.run(scorer.score([raw_record(i) for i in range(8)]))
    assert sorted(p.data.record_id for p in out.predictions) == [
        f"r{i}" for i in range(8) if i != 5
    ]
    [letter] = [d.data for d in out.dead_letters]
    assert letter.error_class == "ModelServerFailed" and letter.offset == 5
    assert "answered 500: cannot score that" in letter.reason
    attempts = SETTINGS.scoring.record_attempts
    assert "4 failed calls alone" in letter.reason and attempts == 4
    assert len(delays) == attempts - 1, "backoff between its lone attempts, then dead-lettered"
    # 8 → 4+4 → 2+2 → 1+1: seven calls to isolate it, then one per retry
    assert servers.calls.count((V1, 1)) == 2 + attempts - 1


def test_invalid_answer_rows_dead_letter_only_their_records():
    servers = FakeServers()
    servers.labels = {1.0: None, 2.0: [1, 2], 3.0: "ok"}
    scorer, table, _ = make(servers)
    table.apply(activate("1", V1), ready=True)
    out = asyncio.run(scorer.score([raw_record(i) for i in range(5)]))
    assert [(p.data.record_id, p.data.output) for p in out.predictions] == [
        ("r0", 0),
        ("r3", "ok"),
        ("r4", 0),
    ]
    assert {d.data.offset: d.data.error_class for d in out.dead_letters} == {
        1: "ModelAnswerInvalid",
        2: "ModelAnswerInvalid",
    }
    assert "answered None for record r1" in out.dead_letters[0].data.reason
    assert out.by_version == {"1": 3}


def test_a_huge_dead_letter_is_cut_to_the_inline_limit_and_completed_by_the_store():
    class Store:
        def __init__(self) -> None:
            self.values: list[bytes] = []

        async def complete(self, event, value):
            self.values.append(value)
            letter = event.data.model_copy(update={"raw_ref": "s3://dead-letters/x"})
            return event.model_copy(update={"data": letter})

    servers = FakeServers()
    scorer, table, _ = make(servers)
    store = Store()
    scorer._oversize = store  # type: ignore[assignment]
    table.apply(activate("1", V1), ready=True)
    huge = RawMessage(b"\xff" * 800_000, b"k", (), Origin("weir.records", 0, 9))
    out = asyncio.run(scorer.score([huge, raw_record(1)]))
    assert [p.data.record_id for p in out.predictions] == ["r1"]
    [letter] = [d.data for d in out.dead_letters]
    inline = SETTINGS.events.dead_letter_inline_bytes
    assert letter.raw == b"\xff" * inline and letter.raw_truncated and not letter.complete
    assert letter.raw_size == 800_000 and letter.raw_ref == "s3://dead-letters/x"
    assert store.values == [huge.value]
    assert len(to_kafka(out.dead_letters[0]).value) < 100_000


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
        rec = to_kafka(signed(settings, new_event(change, source="t")))
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
    # a route without its feature order is refused at activation
    bare = activate("3", V1).model_copy(update={"features": None})
    third = asyncio.run(control.handle(control_msg(bare, 2), replaying=False))
    assert third is not None and not third.data.accepted and "feature order" in third.data.reason
    assert table.route("churn", "r1").version == "2"


def test_control_garbage_is_dead_lettered_once_under_one_id_and_skipped_in_replay():
    from agents.control import Controller

    client = InferenceClient(SETTINGS.kserve, transport=httpx.MockTransport(lambda r: None))
    garbage = RawMessage(b"\x00" * 900_000, b"churn", (), Origin("weir.models", 0, 7))
    letters = []
    for _worker in range(2):
        control = Controller(SETTINGS, RoutingTable(), client, now=lambda: FIXED_TIME)
        assert asyncio.run(control.handle(garbage, replaying=True)) is None
        assert control.skipped == 1
        live = asyncio.run(control.handle(garbage, replaying=False))
        assert live is not None and live.data.error_class == "MalformedEvent"
        letters.append(live)
    assert letters[0].id == letters[1].id == "deadletter:weir.models:0:7"
    assert letters[0].data.raw_truncated and letters[0].data.raw_size == 900_000
    assert len(to_kafka(letters[0]).value) < 100_000


def test_a_replayed_route_that_was_not_ready_is_applied_once_its_server_is():
    from agents.control import Controller

    up = {"ready": False}

    def ready_handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, json={"ready": up["ready"]})

    table = RoutingTable()
    client = InferenceClient(SETTINGS.kserve, transport=httpx.MockTransport(ready_handler))
    control = Controller(SETTINGS, table, client, now=lambda: FIXED_TIME)
    rec = to_kafka(signed(SETTINGS, new_event(activate("4", V2), source="t")))
    msg = RawMessage(rec.value, rec.key, rec.headers, Origin("weir.models", 0, 0))
    assert asyncio.run(control.handle(msg, replaying=True)) is None
    assert table.route("churn", "r") is None and list(control.held) == [("churn", "active")]
    assert asyncio.run(control.recheck()) == []
    up["ready"] = True
    [decision] = asyncio.run(control.recheck())
    assert decision.data.accepted and "ready now" in decision.data.reason
    assert table.route("churn", "r").version == "4" and control.held == {}


def test_control_asks_no_server_for_a_refresh_of_a_version_no_slot_holds():
    """A learner's refresh that lost the race with a promotion changes nothing, and no
    worker loads the snapshot it names (an embedded forest of several MB) to learn that."""
    from agents.control import Controller

    asked: list[str] = []

    def ready_handler(request: httpx.Request) -> httpx.Response:
        asked.append(str(request.url))
        return httpx.Response(200, json={"ready": True})

    table = RoutingTable()
    client = InferenceClient(SETTINGS.kserve, transport=httpx.MockTransport(ready_handler))
    control = Controller(SETTINGS, table, client, now=lambda: FIXED_TIME)

    def handle(change: ModelVersionEvent, offset: int):
        rec = to_kafka(signed(SETTINGS, new_event(change, source="t")))
        msg = RawMessage(rec.value, rec.key, rec.headers, Origin("weir.models", 0, offset))
        return asyncio.run(control.handle(msg, replaying=False))

    handle(activate("online", V1), 0)
    handle(activate("2", V2), 1)
    asked.clear()
    late = handle(activate("online", "http://127.0.0.1:8083", action="refresh"), 2)
    assert late is not None and late.data.accepted and late.data.active_version == "2"
    assert "no route of online" in late.data.reason and asked == []
    assert table.route("churn", "r").version == "2"
    moved = handle(activate("2", "http://127.0.0.1:8084", action="refresh"), 3)
    assert moved is not None and moved.data.accepted and asked  # a held version: asked
    assert table.route("churn", "r").url == "http://127.0.0.1:8084"


def _with_shadow(servers, *, gate: asyncio.Event | None = None):
    """A scorer with a shadow mirror; the shadow's answers (V2) wait for ``gate`` when given."""
    from agents.shadow import ShadowMirror

    table = RoutingTable()
    emitted: list = []

    async def handler(request: httpx.Request) -> httpx.Response:
        if gate is not None and request.url.port == 8082:
            await gate.wait()
        return servers(request)

    client = InferenceClient(SETTINGS.kserve, transport=httpx.MockTransport(handler))
    shadow = ShadowMirror(SETTINGS, table, client, emitted.extend, now=lambda: FIXED_TIME)
    scorer = Scorer(SETTINGS, table, client, now=lambda: FIXED_TIME, shadow=shadow)
    table.apply(activate("1", V1), ready=True)
    table.apply(activate("2", V2, action="shadow"), ready=True)
    return scorer, shadow, emitted


def test_a_shadow_gets_every_batch_and_its_predictions_are_marked():
    servers = FakeServers()
    scorer, shadow, emitted = _with_shadow(servers)

    async def run():
        out = await scorer.score([raw_record(i) for i in range(6)])
        await asyncio.gather(*shadow._tasks)
        return out

    out = asyncio.run(run())
    assert {p.data.version for p in out.predictions} == {"1"}, "the active route still serves"
    assert not any(p.data.shadow for p in out.predictions)
    assert [e.data.record_id for e in emitted] == [f"r{i}" for i in range(6)]
    assert all(e.data.shadow and e.data.version == "2" for e in emitted)
    assert shadow.mirrored == 6 and shadow.failed == 0


def test_a_slow_or_dead_shadow_costs_the_active_path_nothing():
    servers = FakeServers()
    gate = asyncio.Event()

    async def slow():
        scorer, shadow, emitted = _with_shadow(servers, gate=gate)
        # the shadow does not answer until the gate opens: the active batches go on meanwhile
        outs = [await scorer.score([raw_record(10 * b + i) for i in range(5)]) for b in range(4)]
        assert all(len(o.predictions) == 5 for o in outs)
        assert emitted == [] and shadow.skipped == 10, "two calls in flight, two batches skipped"
        gate.set()
        await asyncio.gather(*shadow._tasks)
        assert len(emitted) == 10
        await shadow.close()

    asyncio.run(slow())

    servers.state[V2] = "down"

    async def dead():
        scorer, shadow, emitted = _with_shadow(servers)
        out = await scorer.score([raw_record(i) for i in range(5)])
        await asyncio.gather(*shadow._tasks)
        assert len(out.predictions) == 5 and out.dead_letters == []
        assert emitted == [] and shadow.failed == 5

    asyncio.run(dead())


def test_batches_scored_at_once_never_answer_with_the_old_version_after_the_new():
    """The role scores the next batch while a model call is out; a swap in between makes the
    later batch wait for the earlier one, so v1 answers nothing once v2 has answered."""
    servers = FakeServers()
    gate = asyncio.Event()
    answered: list[str] = []

    async def handler(request: httpx.Request) -> httpx.Response:
        if request.url.port == 8081:
            await gate.wait()  # v1's call stays out until the test opens the gate
        response = servers(request)
        answered.append(response.json()["model_version"])
        return response

    async def main() -> tuple[list, list]:
        table = RoutingTable()
        client = InferenceClient(SETTINGS.kserve, transport=httpx.MockTransport(handler))
        scorer = Scorer(SETTINGS, table, client, now=lambda: FIXED_TIME)
        table.apply(activate("1", V1), ready=True)
        first = asyncio.ensure_future(scorer.score([raw_record(i) for i in range(3)]))
        for _ in range(10):
            await asyncio.sleep(0)
        table.apply(activate("2", V2), ready=True)  # the swap, while v1's call is out
        second = asyncio.ensure_future(scorer.score([raw_record(i) for i in range(3, 6)]))
        for _ in range(10):
            await asyncio.sleep(0)
        assert answered == [] and not second.done(), "v2 is not called before v1 answered"
        gate.set()
        return (await first).predictions, (await second).predictions

    first, second = asyncio.run(main())
    assert answered == ["1", "2"]
    assert {p.data.version for p in first} == {"1"} and {p.data.version for p in second} == {"2"}


def test_batches_under_the_same_routes_are_scored_at_once():
    servers = FakeServers()
    gate = asyncio.Event()
    out_at_once = []

    async def handler(request: httpx.Request) -> httpx.Response:
        out_at_once.append(len(out_at_once) + 1)
        await gate.wait()
        return servers(request)

    async def main() -> None:
        table = RoutingTable()
        client = InferenceClient(SETTINGS.kserve, transport=httpx.MockTransport(handler))
        scorer = Scorer(SETTINGS, table, client, now=lambda: FIXED_TIME)
        table.apply(activate("1", V1), ready=True)
        batches = [
            asyncio.ensure_future(scorer.score([raw_record(10 * b + i) for i in range(2)]))
            for b in range(2)
        ]
        for _ in range(10):
            await asyncio.sleep(0)
        assert out_at_once == [1, 2], "both calls are out before either answers"
        gate.set()
        assert [len((await b).predictions) for b in batches] == [2, 2]

    asyncio.run(main())


def test_a_model_calls_predictions_made_at_once_are_those_made_row_by_row():
    """prediction_events (one pydantic-core call) builds what prediction_of and new_event
    build row by row, and leaves a call with an invalid row to them."""
    from agents.predictions import prediction_events, prediction_of, route_lineage
    from agents.routing import Route
    from connectors.kserve_client import InferenceResult

    route = Route(model="churn", version="3", url="http://127.0.0.1:1", protocol="v2")
    lineage = route_lineage(route)
    result = InferenceResult(
        labels=[1, "yes", 0.5],
        probabilities=[{"0": 0.25, "1": 0.75}] * 3,
        latency_ms=4.0,
        model_version="3",
    )
    for shadow in (False, True):
        made = prediction_events(
            route,
            ["a", "b", "c"],
            result,
            source="w",
            at=FIXED_TIME,
            lineage=lineage,
            shadow=shadow,
        )
        assert made is not None
        for i, event in enumerate(made):
            one = new_event(
                prediction_of(route, "abc"[i], result, i, shadow=shadow),
                source="w",
                now=lambda: FIXED_TIME,
                lineage=lineage,
                event_id=event.id,
            )
            assert event == one and to_kafka(event) == to_kafka(one)
    assert len({e.id for e in made}) == 3
    for bad in (None, float("nan"), [1]):
        result.labels[1] = bad
        assert (
            prediction_events(
                route, ["a", "b", "c"], result, source="w", at=FIXED_TIME, lineage=lineage
            )
            is None
        )


def _call(labels, probabilities=None, *, ids=None, run_id=None, shadow=False):
    from agents.predictions import prediction_events, route_lineage
    from agents.routing import Route
    from connectors.kserve_client import InferenceResult

    route = Route("churn", "3", "http://127.0.0.1:1/é", "v2", run_id=run_id)
    result = InferenceResult(labels, probabilities, "3", 4.25)
    ids = ids or [f"r{i}" for i in range(len(labels))]
    made = prediction_events(
        route, ids, result, source="w", at=FIXED_TIME, lineage=route_lineage(route), shadow=shadow
    )
    assert made is not None
    return made


label_values = st.one_of(
    st.integers(),
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(max_size=20),
)


@settings(max_examples=60, deadline=None)
@given(
    labels=st.lists(label_values, min_size=1, max_size=6),
    classes=st.lists(st.text(max_size=8), max_size=3, unique=True),
    ids=st.lists(st.text(min_size=1, max_size=12), min_size=6, max_size=6),
    run_id=st.sampled_from([None, "run-1"]),
    shadow=st.booleans(),
)
def test_a_model_calls_records_written_from_its_rows_are_those_of_its_events(
    labels, classes, ids, run_id, shadow
):
    """The scoring path writes a usual answer's predictions to Kafka from its rows
    (CallPredictions): byte for byte what to_kafka writes for each of its events, whatever
    the labels, record ids and classes (unicode, quotes, huge or tiny numbers)."""
    from agents.predictions import CallPredictions
    from agents.scoring import BatchOutcome

    probabilities = [{c: 0.5 for c in classes} for _ in labels] if classes else None
    made = _call(labels, probabilities, ids=ids[: len(labels)], run_id=run_id, shadow=shadow)
    assert isinstance(made, CallPredictions)
    events = list(made)
    assert [e.data.output for e in events] == labels
    assert made.kafka_records() == [to_kafka(e) for e in events]
    outcome = BatchOutcome()
    outcome.add_call(made)
    assert outcome.predictions == events
    assert outcome.prediction_records() == [to_kafka(e) for e in events]
    assert outcome.prediction_records("structured") == [
        to_kafka(e, mode="structured") for e in events
    ]


def test_an_unusual_answer_goes_through_pydantic_and_is_written_the_same():
    """A bool, a numpy number or an int score is not written from the rows: pydantic
    converts it as it always did, and the records are those of its events."""
    import numpy as np

    from agents.predictions import CallPredictions
    from agents.scoring import BatchOutcome

    for labels, probabilities in (
        ([True, 1], None),
        ([np.float64(0.5), 1], None),
        ([1, 0], [{"0": 1, "1": 0.5}, {"0": 0.5, "1": 0.5}]),
    ):
        made = _call(labels, probabilities)
        assert not isinstance(made, CallPredictions)
        outcome = BatchOutcome()
        outcome.add_call(made)
        assert outcome.prediction_records() == [to_kafka(e) for e in made]
        assert [e.data.output for e in made] == [1 if x is True else x for x in labels]


def test_rows_are_not_written_past_pydantic_when_their_json_would_differ(monkeypatch):
    """If Prediction's fields changed and the row writer did not follow, the first row's
    JSON tells, and the call's events are made and encoded by pydantic instead."""
    from agents.predictions import CallPredictions

    assert isinstance(_call([1, 0]), CallPredictions)
    monkeypatch.setattr(CallPredictions, "_values", lambda self, upto=None: [b"{}"])
    made = _call([1, 0])
    assert isinstance(made, list) and [e.data.output for e in made] == [1, 0]

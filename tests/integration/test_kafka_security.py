"""Kafka's own guard on the control stream: a SASL broker with ACLs, and weir running on it.

A second broker of the local stack's kind, started by ``weir stack`` code with a
SASL listener (SCRAM-SHA-512 for weir's principals) and ACLs: the worker
principal reads and writes weir's topics but may not write the models topic;
the control principal may. The whole worker (every role, as supervised child
processes: Faust, aiokafka and confluent-kafka clients) runs as the worker
principal; only the retrainer child is given the control principal's password.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest
from pydantic import SecretStr

from connectors.kafka import EventProducer, list_topics
from connectors.process import free_port
from connectors.signing import signed
from schemas import InputRecord, ServiceError, new_event
from schemas.settings import KafkaSettings, ScoringSettings, Settings, StackSettings
from schemas.topics import Topic, topic_name
from streams.dev.localrun import Collector, start_worker
from streams.dev.stack import Stack
from streams.servers.deployers import serve
from tests.helpers import process_env, role_pids
from tests.integration.flip_models import activation, publish_flip_models

pytestmark = pytest.mark.integration

DEADLINE_S = 120
WORKER_PASSWORD = "worker-secret-for-tests"
CONTROL_PASSWORD = "control-secret-for-tests"


@pytest.fixture(scope="module")
def secure_stack(
    live_stack: Settings, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Settings]:
    state = tmp_path_factory.mktemp("secure-stack")
    settings = live_stack.model_copy(
        update={
            "kafka": KafkaSettings(
                bootstrap_servers=f"127.0.0.1:{free_port()}",
                controller_port=free_port(),
                security_protocol="SASL_PLAINTEXT",
                sasl_mechanism="SCRAM-SHA-512",
                sasl_username="weir-worker",
                sasl_password=SecretStr(WORKER_PASSWORD),
                control_username="weir-control",
                control_password=SecretStr(CONTROL_PASSWORD),
            ),
            # the session's MinIO, as it is: only the broker is new
            "minio": live_stack.minio.model_copy(update={"managed": False}),
            "stack": StackSettings(cache_dir=live_stack.stack.cache_dir, state_dir=state),
        }
    )
    stack = Stack(settings)
    try:
        report = stack.up()
        assert report.principals == {"weir-worker": "worker", "weir-control": "control"}
        yield settings
    finally:
        stack.down()


def _as(settings: Settings, **kafka: object) -> Settings:
    return settings.model_copy(update={"kafka": settings.kafka.model_copy(update=kafka)})


def test_only_the_control_principal_may_write_routes(secure_stack: Settings, unique: str):
    s = secure_stack
    models_t, records_t = topic_name(s.kafka, Topic.MODELS), topic_name(s.kafka, Topic.RECORDS)
    route = signed(s, new_event(activation(f"acl{unique}", "1", "http://127.0.0.1:1"), source="t"))
    # the worker principal may write records, but not routes, even a validly signed one
    EventProducer(s).send(
        records_t, new_event(InputRecord(id=unique, features={"a": 1.0}), source="t")
    )
    with pytest.raises(ServiceError) as refused:
        EventProducer(s).send(models_t, route, timeout_s=20)
    message = str(refused.value)
    assert "refused principal 'weir-worker' writing to" in message and models_t in message
    assert "authorization failed" in message.lower()
    # the control principal may
    stored = EventProducer(s.as_control()).send(models_t, route)
    assert stored.topic == models_t
    # the principal may sign in with any mechanism the broker offers
    for mechanism in ("PLAIN", "SCRAM-SHA-256"):
        assert models_t in list_topics(_as(s, sasl_mechanism=mechanism), timeout_s=10)
    # a wrong password is refused, with a reason that says so (not "broker down")
    with pytest.raises(ServiceError, match=r"refused principal 'weir-worker'.*invalid credentials"):
        list_topics(_as(s, sasl_password=SecretStr("guess")), timeout_s=10)
    # and a client with no credentials gets nothing at all
    anonymous = _as(s, security_protocol="PLAINTEXT", sasl_username=None, sasl_password=None)
    with pytest.raises(ServiceError):
        list_topics(
            anonymous.model_copy(update={"kafka": anonymous.kafka.without_control()}), timeout_s=5
        )


def test_a_worker_runs_as_its_principal_and_cannot_move_a_route(
    secure_stack: Settings, unique: str, tmp_path: Path
):
    model = f"kacl{unique}"
    settings = secure_stack.model_copy(
        update={
            "scoring": ScoringSettings(model=model, batch_size=50, batch_wait_s=0.05),
            "stack": StackSettings(cache_dir=secure_stack.stack.cache_dir, state_dir=tmp_path),
        }
    )
    k = settings.kafka
    records_t, models_t = topic_name(k, Topic.RECORDS), topic_name(k, Topic.MODELS)
    publish_flip_models(settings, model)
    p1, p2 = free_port(), free_port()
    servers = [serve(settings, model, v, p) for v, p in (("1", p1), ("2", p2))]
    control = EventProducer(settings.as_control())
    producer = EventProducer(settings)

    def produce(start: int, count: int) -> None:
        for i in range(start, start + count):
            rec = InputRecord(id=f"{unique}-{i}", features={"a": float(i % 7) - 3.5, "b": 1.0})
            producer.produce(records_t, new_event(rec, source="t"))
        producer.flush()

    control.send(
        models_t,
        signed(settings, new_event(activation(model, "1", f"http://127.0.0.1:{p1}"), source="t")),
    )
    worker = start_worker(settings, unique)
    out = Collector(
        settings,
        [topic_name(k, Topic.PREDICTIONS), topic_name(k, Topic.ALERTS)],
        group=f"{k.topic_prefix}-{unique}",  # the ACLs let weir's principals use weir's groups
    )

    def predictions() -> list:
        return [e for e in out.events("io.weir.prediction.v1") if e.data.model == model]

    try:
        produce(0, 200)
        out.until(lambda: len(predictions()) >= 200, deadline_s=DEADLINE_S, what="v1 scoring")
        # least privilege: only the retrainer child holds the control principal's password
        pid = worker.pid()
        assert pid is not None
        roles = role_pids(pid)
        assert {"scoring", "retrainer"} <= set(roles), roles
        for role, child in roles.items():
            env = process_env(child)
            assert env["WEIR_KAFKA__SASL_USERNAME"] == "weir-worker"
            has_control = "WEIR_KAFKA__CONTROL_PASSWORD" in env
            assert has_control == (role == "retrainer"), role
        # the worker's principal tries to move the route, with a validly signed event
        v2 = signed(
            settings, new_event(activation(model, "2", f"http://127.0.0.1:{p2}"), source="t")
        )
        with pytest.raises(ServiceError, match="refused principal 'weir-worker'"):
            producer.send(models_t, v2, timeout_s=20)
        produce(200, 200)
        out.until(lambda: len(predictions()) >= 400, deadline_s=DEADLINE_S, what="more scoring")
        assert {p.data.version for p in predictions()} == {"1"}, "the route did not move"
        # the control principal moves it; nothing is lost or scored twice
        control.send(models_t, v2)
        out.until(
            lambda: any(
                e.data.model == model and e.data.version == "2" and e.data.accepted
                for e in out.events("io.weir.model.route.v1")
            ),
            deadline_s=DEADLINE_S,
            what="the control principal's swap to v2",
        )
        produce(400, 200)
        out.until(lambda: len(predictions()) >= 600, deadline_s=DEADLINE_S, what="v2 scoring")
        preds = predictions()
        per_record = Counter(p.data.record_id for p in preds)
        assert len(per_record) == 600 and max(per_record.values()) == 1
        assert {p.data.version for p in preds[400:]} == {"2"}
    finally:
        out.close()
        worker.stop()
        for server in servers:
            server.stop()

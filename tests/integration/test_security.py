"""Nobody can hijack the controlled stream: the attacks of the security issue, on real parts.

One scoring worker, real kserve.ModelServer processes for versions 1 and 2 and
an impostor's server (a real model server of another model's version, answering
the same endpoints), the real broker and MinIO. Each attack is refused with a
route decision a person can read, scoring stays on the legitimate route and
nothing is lost; a legitimate signed swap still goes live at once. A tampered
artifact is refused before it is unpickled.
"""

from __future__ import annotations

import hashlib
import io
from collections import Counter
from datetime import timedelta

import joblib
import pytest
from sklearn.linear_model import LogisticRegression

from connectors.kafka import EventProducer
from connectors.minio_store import ObjectStore
from connectors.process import free_port, wait_until
from connectors.registry import ArtifactRefused, ModelRegistry
from connectors.signing import signed
from schemas import InputRecord, ModelVersionEvent, ServiceError, new_event
from schemas.settings import KServeSettings, ScoringSettings, Settings, StackSettings
from schemas.topics import Topic, topic_name
from streams.dev.localrun import Collector, start_worker
from streams.servers.deployers import serve
from streams.servers.model_server import server_process, start_server
from tests.helpers import own_topics, process_env
from tests.integration.flip_models import activation, publish_flip_models

pytestmark = pytest.mark.integration

DEADLINE_S = 120


def test_route_attacks_are_refused_and_scoring_stays_put(
    live_stack: Settings, unique: str, tmp_path, capsys
):
    # topics of its own: the session's records topic stays clean for the other tests
    with own_topics(live_stack, f"{live_stack.kafka.topic_prefix}-sec{unique}") as topics:
        reasons = route_attacks(topics, unique, tmp_path)
    with capsys.disabled():
        print(f"\n[security] refused: {reasons}")


def route_attacks(live_stack: Settings, unique: str, tmp_path) -> str:
    model = f"sec{unique}"
    settings = live_stack.model_copy(
        update={
            "scoring": ScoringSettings(
                model=model, batch_size=50, batch_wait_s=0.05, control_ready_timeout_s=2.0
            ),
            "kserve": KServeSettings(timeout_s=2.0, max_retries=1),
            "stack": StackSettings(cache_dir=live_stack.stack.cache_dir, state_dir=tmp_path),
        }
    )
    k = settings.kafka
    records_t, models_t = topic_name(k, Topic.RECORDS), topic_name(k, Topic.MODELS)
    publish_flip_models(settings, model)
    p1, p2, evil = free_port(), free_port(), free_port()
    servers = [serve(settings, model, v, p) for v, p in (("1", p1), ("2", p2), ("2", evil))]
    producer = EventProducer(settings)

    def route(version: str, port: int, host: str = "127.0.0.1") -> ModelVersionEvent:
        return activation(model, version, f"http://{host}:{port}")

    def produce(start: int, count: int) -> None:
        for i in range(start, start + count):
            a = ((i * 7919) % 2001 - 1000) / 100.0 or 0.5
            rec = InputRecord(id=f"{unique}-{i}", features={"a": a, "b": 1.0})
            producer.produce(records_t, new_event(rec, source="t"))
        producer.flush()

    first = signed(settings, new_event(route("1", p1), source="test"))
    producer.send(models_t, first)
    worker = start_worker(settings, unique)
    out = Collector(
        settings, [topic_name(k, Topic.PREDICTIONS), topic_name(k, Topic.ALERTS)], group=unique
    )

    def predictions() -> list:
        return [e for e in out.events("io.weir.prediction.v1") if e.data.model == model]

    def decisions() -> list:
        return [e.data for e in out.events("io.weir.model.route.v1") if e.data.model == model]

    try:
        produce(0, 300)
        out.until(lambda: len(predictions()) >= 300, deadline_s=DEADLINE_S, what="v1 scoring")
        later = lambda minutes: lambda: first.time + timedelta(minutes=minutes)  # noqa: E731
        attacks = {
            # produced straight to the control topic, no signature: the impostor's server
            "unsigned": new_event(route("666", evil), source="attacker"),
            # a signature copied from a real event onto another route
            "forged": new_event(route("666", evil), source="attacker", now=later(1)).model_copy(
                update={"signature": first.signature}
            ),
            # the legitimate v1 event, produced again
            "replayed": first,
            # signed, but pointing off the allow-list
            "off the allow-list": signed(
                settings, new_event(route("2", p2, host="evil.example"), source="t", now=later(2))
            ),
            # signed (say, by a stolen CI job's key), but no such version was ever published
            "not in the registry": signed(
                settings, new_event(route("7", evil), source="t", now=later(3))
            ),
            # signed, a real version, but a feature order its card does not declare
            "wrong features": signed(
                settings,
                new_event(
                    route("2", p2).model_copy(update={"features": ["b", "a"]}),
                    source="t",
                    now=later(4),
                ),
            ),
        }
        for attack in attacks.values():
            producer.send(models_t, attack)
        out.until(  # the first route was replayed at start: no decision for it
            lambda: len(decisions()) >= len(attacks),
            deadline_s=DEADLINE_S,
            what="a route decision for every attack",
        )
        produce(300, 300)
        out.until(lambda: len(predictions()) >= 600, deadline_s=DEADLINE_S, what="more scoring")
        refused = [d for d in decisions() if not d.accepted]
        reasons = " | ".join(d.reason for d in refused)
        assert len(refused) == len(attacks), reasons
        for words in (
            "unsigned",
            "bad signature",
            "replayed",
            "ALLOWED_HOSTS",
            "is not in the registry",
            "are not the model card's",
        ):
            assert words in reasons, f"{words!r} not in {reasons}"
        assert {p.data.version for p in predictions()} == {"1"}, "still on the legitimate route"

        # a legitimate signed swap still goes live, and loses nothing
        producer.send(models_t, signed(settings, new_event(route("2", p2), source="t")))
        out.until(
            lambda: any(d.accepted and d.version == "2" for d in decisions()),
            deadline_s=DEADLINE_S,
            what="the signed swap to v2",
        )
        produce(600, 300)
        out.until(lambda: len(predictions()) >= 900, deadline_s=DEADLINE_S, what="v2 scoring")
        preds = predictions()
        per_record = Counter(p.data.record_id for p in preds)
        assert len(per_record) == 900 and max(per_record.values()) == 1
        assert all(p.data.url != f"http://127.0.0.1:{evil}" for p in preds)
        assert Counter(p.data.version for p in preds)["2"] >= 300
    finally:
        out.close()
        worker.stop()
        for server in servers:
            server.stop()
    return reasons


def test_a_tampered_artifact_or_unsigned_card_is_refused_before_unpickling(
    live_stack: Settings, unique: str
):
    model = f"art{unique}"
    publish_flip_models(live_stack, model)
    registry = ModelRegistry.for_settings(live_stack)
    assert registry.load(model, "1").card.artifact_sha256 is not None
    store = ObjectStore(live_stack.minio)
    bucket = live_stack.minio.models_bucket
    # someone with write access to the bucket swaps the pickle for their own
    evil = io.BytesIO()
    joblib.dump(LogisticRegression(), evil)
    store.put_bytes(bucket, f"{model}/1/model.joblib", evil.getvalue())
    with pytest.raises(ArtifactRefused, match="the artifact was replaced"):
        registry.load(model, "1")
    # ... or writes a card of their own, with the digest of their pickle, unsigned
    card = registry.card(model, "2").model_copy(
        update={
            "artifact_sha256": hashlib.sha256(evil.getvalue()).hexdigest(),
            "signature": None,
        }
    )
    store.put_bytes(bucket, f"{model}/2/model.joblib", evil.getvalue())
    store.put_bytes(bucket, f"{model}/2/card.json", card.model_dump_json().encode())
    with pytest.raises(ArtifactRefused, match="unsigned"):
        registry.load(model, "2")
    # a model server started on it refuses too: it exits and says why
    port = free_port()
    start_server(live_stack, model, "2", port)
    server = server_process(live_stack, model, "2", port)
    try:
        wait_until(lambda: server.pid() is None, timeout_s=60, what="the model server to exit")
        assert "refusing to load" in server.log_file.read_text(errors="replace")
    finally:
        server.stop()


def test_model_servers_read_models_with_read_only_keys(live_stack: Settings, unique: str):
    model = f"ro{unique}"
    publish_flip_models(live_stack, model)
    m = live_stack.minio
    reader = m.as_reader()
    assert reader.access_key == "weir-reader" != m.access_key  # `weir stack up` made it
    store = ObjectStore(reader)
    assert store.get_bytes(m.models_bucket, f"{model}/1/card.json")
    for bucket in (m.models_bucket, m.data_bucket, m.dead_letter_bucket):
        with pytest.raises(ServiceError, match="AccessDenied"):
            store.put_bytes(bucket, f"{model}/1/model.joblib", b"not a model")
    # a model server is started with the reader's keys only, and serves
    server = serve(live_stack, model, "1", free_port())
    try:
        pid = server.pid()
        assert pid is not None
        env = process_env(pid)
        assert env["WEIR_MINIO__ACCESS_KEY"] == "weir-reader"
        assert env["WEIR_MINIO__SECRET_KEY"] != m.secret_key.get_secret_value()
    finally:
        server.stop()

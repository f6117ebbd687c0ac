"""The one settings object and the topic layout derived from it."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from schemas.jsonschema_export import SCHEMA_DIR, render, stale
from schemas.settings import Settings
from schemas.topics import Topic, topic_name, topic_specs


def test_env_is_read_with_prefix_and_nested_groups(monkeypatch):
    monkeypatch.setenv("WEIR_KAFKA__BOOTSTRAP_SERVERS", "127.0.0.1:29092")
    monkeypatch.setenv("WEIR_KAFKA__TOPIC_PREFIX", "acme")
    monkeypatch.setenv("WEIR_MINIO__SECRET_KEY", "very-secret-value")
    s = Settings()
    assert s.kafka.bootstrap_servers == "127.0.0.1:29092"
    assert s.kafka.host_port == ("127.0.0.1", 29092)
    assert topic_name(s.kafka, Topic.MODELS) == "acme.models"
    assert s.minio.secret_key.get_secret_value() == "very-secret-value"
    assert "very-secret-value" not in repr(s)


def test_settings_are_frozen():
    s = Settings()
    with pytest.raises(ValidationError):
        s.kafka = s.kafka  # type: ignore[misc]
    with pytest.raises(ValidationError):
        s.kafka.topic_prefix = "other"  # type: ignore[misc]


def test_unknown_setting_and_clashing_ports_are_rejected(monkeypatch):
    monkeypatch.setenv("WEIR_KAFKA__NO_SUCH_THING", "1")
    with pytest.raises(ValidationError, match="no_such_thing"):
        Settings()
    monkeypatch.delenv("WEIR_KAFKA__NO_SUCH_THING")
    monkeypatch.setenv("WEIR_MINIO__ENDPOINT", "127.0.0.1:9092")
    with pytest.raises(ValidationError, match="ports must differ"):
        Settings()


def test_every_topic_has_a_spec_and_models_is_compacted():
    s = Settings()
    specs = {spec.topic: spec for spec in topic_specs(s.kafka)}
    assert set(specs) == set(Topic)
    assert specs[Topic.MODELS].config["cleanup.policy"] == "compact"
    assert specs[Topic.MODELS].partitions == 1
    assert specs[Topic.RECORDS].partitions == s.kafka.record_partitions
    assert all(spec.name.startswith("weir.") for spec in specs.values())


def test_json_schemas_in_repo_are_current():
    assert stale() == [], "run `weir schemas export` and commit schemas/jsonschema/"
    assert len(list(SCHEMA_DIR.glob("*.json"))) == len(render())


def test_stale_detects_a_changed_schema(tmp_path):
    for name, text in render().items():
        (tmp_path / name).write_text(text)
    assert stale(tmp_path) == []
    victim = sorted(render())[0]
    (tmp_path / victim).write_text("{}\n")
    (tmp_path / "io.weir.gone.v1.json").write_text("{}\n")
    assert stale(tmp_path) == ["io.weir.gone.v1.json", victim]


def test_k_sink_is_read_as_knative_injects_it(monkeypatch):
    monkeypatch.setenv("K_SINK", "http://broker-ingress.knative-eventing.svc/default/weir")
    assert Settings().k_sink == "http://broker-ingress.knative-eventing.svc/default/weir"


def test_settings_env_rebuilds_the_same_settings(monkeypatch):
    from schemas.settings import settings_env

    monkeypatch.setenv("WEIR_KAFKA__TOPIC_PREFIX", "child")
    monkeypatch.setenv("K_SINK", "http://127.0.0.1:1/")
    original = Settings()
    env = settings_env(original)
    for key in list(__import__("os").environ):
        monkeypatch.delenv(key)
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    assert Settings() == original

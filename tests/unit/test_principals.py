"""Who each process is: Kafka principals (checked when built, given to every kind of client
alike, handed to each role's process with least privilege) and MinIO's read-only user."""

from __future__ import annotations

import base64
import os

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, NoEncryption, PrivateFormat
from pydantic import SecretStr, ValidationError

from connectors.kafka import aiokafka_security, base_config, security_config
from connectors.signing import accepted_keys, load_signer
from schemas.settings import ControlSettings, KafkaSettings, KnativeSettings, Settings, settings_env
from streams.app import faust_credentials
from streams.dev.stack import kafka as local_kafka
from streams.supervisor import role_settings

SASL = {
    "security_protocol": "SASL_PLAINTEXT",
    "sasl_mechanism": "SCRAM-SHA-512",
    "sasl_username": "weir-worker",
    "sasl_password": SecretStr("w"),
    "control_username": "weir-control",
    "control_password": SecretStr("c"),
}


def test_sasl_needs_a_principal_and_its_password():
    with pytest.raises(ValidationError, match="needs WEIR_KAFKA__SASL_USERNAME"):
        KafkaSettings(security_protocol="SASL_SSL")
    with pytest.raises(ValidationError, match="go together"):
        KafkaSettings(control_username="weir-control")
    with pytest.raises(ValidationError, match="SSL_KEYFILE go together"):
        KafkaSettings(security_protocol="SSL", ssl_certfile="/tmp/cert.pem")
    # an empty password from `${VAR:-}` is "not given"
    with pytest.raises(ValidationError):
        KafkaSettings(security_protocol="SASL_PLAINTEXT", sasl_username="u", sasl_password=" ")


def test_every_client_kind_gets_the_same_credentials():
    k = KafkaSettings(**SASL)
    assert security_config(k) == {
        "security.protocol": "sasl_plaintext",
        "sasl.mechanism": "SCRAM-SHA-512",
        "sasl.username": "weir-worker",
        "sasl.password": "w",
    }
    assert base_config(Settings(kafka=k))["sasl.username"] == "weir-worker"
    assert aiokafka_security(k) == {
        "security_protocol": "SASL_PLAINTEXT",
        "sasl_mechanism": "SCRAM-SHA-512",
        "sasl_plain_username": "weir-worker",
        "sasl_plain_password": "w",
    }
    creds = faust_credentials(k)
    assert creds is not None and creds.username == "weir-worker"  # type: ignore[attr-defined]
    assert faust_credentials(KafkaSettings()) is None
    assert security_config(KafkaSettings()) == {"security.protocol": "plaintext"}


def test_tls_settings_reach_both_client_kinds(tmp_path):
    ca = tmp_path / "ca.pem"
    k = KafkaSettings(security_protocol="SSL", ssl_cafile=ca)
    assert security_config(k) == {"security.protocol": "ssl", "ssl.ca.location": str(ca)}
    with pytest.raises(FileNotFoundError):  # the context loads the CA: a wrong path fails early
        aiokafka_security(k)
    plain = aiokafka_security(KafkaSettings(security_protocol="SSL"))
    assert plain["ssl_context"].verify_mode.name == "CERT_REQUIRED"


def test_route_publishers_switch_to_the_control_principal():
    s = Settings(kafka=KafkaSettings(**SASL))
    assert s.as_control().kafka.sasl_username == "weir-control"
    assert s.as_control().kafka.sasl_password.get_secret_value() == "c"  # type: ignore[union-attr]
    assert s.kafka.without_control().control_password is None
    one = Settings(
        kafka=KafkaSettings(**{**SASL, "control_username": None, "control_password": None})
    )
    assert one.as_control() == one  # one principal for everything: nothing to switch


def test_only_the_retrainer_keeps_the_control_principal_and_the_signing_key(monkeypatch):
    key = Ed25519PrivateKey.generate().private_bytes(
        Encoding.Raw, PrivateFormat.Raw, NoEncryption()
    )
    s = Settings(
        kafka=KafkaSettings(**SASL),
        control=ControlSettings(signing_key=SecretStr(base64.b64encode(key).decode())),
    )
    signer = load_signer(s)
    retrainer = role_settings(s, "retrainer")
    assert retrainer.control.signing_key is not None and retrainer.kafka.control_password
    for role in ("scoring", "monitor", "feedback", "performance"):
        given = role_settings(s, role)
        env = settings_env(given)
        assert "WEIR_CONTROL__SIGNING_KEY" not in env and "WEIR_KAFKA__CONTROL_PASSWORD" not in env
        assert env["WEIR_KAFKA__SASL_USERNAME"] == "weir-worker"
        # it still verifies what the key signs
        assert signer.id in accepted_keys(_rebuilt(env, monkeypatch))


def _rebuilt(env: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> Settings:
    """The Settings a child process started with ``env`` builds."""
    for name in [n for n in os.environ if n.startswith("WEIR_")]:
        monkeypatch.delenv(name)
    for name, value in env.items():
        if name.startswith("WEIR_"):
            monkeypatch.setenv(name, value)
    return Settings()


def test_sender_tokens_survive_the_trip_to_a_child_process(monkeypatch):
    s = Settings(knative=KnativeSettings(ingress_tokens={"sensor-a": SecretStr("t-a")}))
    again = _rebuilt(settings_env(s), monkeypatch)
    assert again.knative.ingress_tokens["sensor-a"].get_secret_value() == "t-a"


def test_local_broker_acls_deny_workers_the_models_topic():
    s = Settings(kafka=KafkaSettings(**SASL))
    worker = local_kafka.acl_bindings(s, "weir-worker", "worker")
    control = local_kafka.acl_bindings(s, "weir-control", "control")
    denies = [b for b in worker if b.permission_type.name == "DENY"]
    assert [(b.name, b.operation.name) for b in denies] == [("weir.models", "WRITE")]
    assert not any(b.permission_type.name == "DENY" for b in control)
    assert {"CREATE"} <= {b.operation.name for b in control} - {b.operation.name for b in worker}
    with pytest.raises(Exception, match="letters, digits"):
        local_kafka.principals(
            Settings(kafka=KafkaSettings(**{**SASL, "sasl_username": 'x" user_admin="y'}))
        )


def test_model_readers_get_the_read_only_minio_user_unless_it_is_off():
    from schemas.settings import MinioSettings

    s = Settings()
    assert s.as_model_reader().minio.access_key == "weir-reader"
    assert s.as_model_reader().minio.secret_key == s.minio.reader_secret_key
    off = Settings(minio=MinioSettings(reader_access_key=" "))  # `${VAR:-}` in a deployment
    assert off.as_model_reader().minio == off.minio
    with pytest.raises(ValidationError, match="READER_SECRET_KEY"):
        MinioSettings(reader_access_key="ro", reader_secret_key=SecretStr(""))

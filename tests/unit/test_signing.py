"""Signed routes: who may change a route, checked by every worker's control fold."""

from __future__ import annotations

import asyncio
from datetime import timedelta
from pathlib import Path

import httpx
import pytest

from agents.control import Controller
from agents.routing import RoutingTable
from connectors.kserve_client import InferenceClient
from connectors.signing import Verifier, accepted_keys, ensure_keys, load_signer, rotate, sign
from schemas import ModelVersionEvent, Origin, RawMessage, from_http, new_event, to_http, to_kafka
from schemas.settings import ControlSettings, Settings
from tests.samples import FIXED_TIME, TEST_CONTROL

SETTINGS = Settings(control=TEST_CONTROL)
URL = "http://127.0.0.1:8081"


def route(version: str = "1", url: str = URL, action: str = "activate", **kw) -> ModelVersionEvent:
    return ModelVersionEvent(
        action=action, model="churn", version=version, url=url, features=["a"], **kw
    )


def event(change: ModelVersionEvent, minutes: int = 0, settings: Settings = SETTINGS):
    at = FIXED_TIME + timedelta(minutes=minutes)
    return sign(load_signer(settings), new_event(change, source="cli", now=lambda: at))


def test_a_signature_survives_every_encoding_and_names_its_key():
    signed = event(route())
    pair = load_signer(SETTINGS)
    assert signed.signature is not None and signed.signature.startswith(f"{pair.id}:")
    verifier = Verifier(SETTINGS)
    for mode in ("binary", "structured"):
        rec = to_kafka(signed, mode=mode)
        from schemas import from_kafka

        assert verifier.problem(from_kafka(rec.value, rec.key, rec.headers)) is None
        headers, body = to_http(signed, mode=mode)
        assert verifier.problem(from_http(headers, body)) is None


@pytest.mark.parametrize(
    "attack, words",
    [
        ("unsigned", "unsigned"),
        ("tampered url", "bad signature"),
        ("tampered time", "bad signature"),
        ("other key", "unknown key"),
        ("garbage", "bad signature"),
    ],
)
def test_unsigned_altered_and_foreign_routes_are_refused(attack: str, words: str, tmp_path: Path):
    good = event(route())
    forged = {
        "unsigned": lambda: good.model_copy(update={"signature": None}),
        "tampered url": lambda: good.model_copy(
            update={"data": route(url="http://127.0.0.1:6666")}
        ),
        "tampered time": lambda: good.model_copy(update={"time": FIXED_TIME + timedelta(days=1)}),
        "other key": lambda: (
            event(route(), settings=Settings(control=ControlSettings(keys_dir=tmp_path)))
            if ensure_keys(Settings(control=ControlSettings(keys_dir=tmp_path)))
            else None
        ),
        "garbage": lambda: good.model_copy(
            update={"signature": good.signature.split(":")[0] + ":bm90IGEgc2ln"}
        ),
    }[attack]()
    assert words in (Verifier(SETTINGS).problem(forged) or "")


def control_msg(signed, offset: int) -> RawMessage:
    rec = to_kafka(signed)
    return RawMessage(rec.value, rec.key, rec.headers, Origin("weir.models", 0, offset))


def controller(settings: Settings = SETTINGS) -> tuple[Controller, RoutingTable]:
    ready = httpx.MockTransport(lambda r: httpx.Response(200, json={"ready": True}))
    table = RoutingTable()
    client = InferenceClient(settings.kserve, transport=ready)
    return Controller(settings, table, client, now=lambda: FIXED_TIME), table


def handle(control: Controller, signed, offset: int, replaying: bool = False):
    return asyncio.run(control.handle(control_msg(signed, offset), replaying=replaying))


def test_the_worker_refuses_with_a_reason_and_keeps_the_route():
    control, table = controller()
    first = event(route("1"))
    assert handle(control, first, 0).data.accepted
    attacks = {
        "unsigned": event(route("666", "http://127.0.0.1:6666")).model_copy(
            update={"signature": None}
        ),
        "replayed old": event(route("0"), minutes=-5),
        "same again": first,  # the very event, produced once more
        "off the allow-list": event(route("2", "http://evil.example:8081"), minutes=1),
    }
    reasons = {}
    for offset, (name, signed) in enumerate(attacks.items(), start=1):
        decision = handle(control, signed, offset)
        assert not decision.data.accepted, name
        reasons[name] = decision.data.reason
        assert table.route("churn", "r").version == "1", name
    assert "unsigned" in reasons["unsigned"]
    assert "replayed" in reasons["replayed old"] and "replayed" in reasons["same again"]
    assert "not in WEIR_CONTROL__ALLOWED_HOSTS" in reasons["off the allow-list"]
    # a newer, signed, allowed route still goes live
    assert handle(control, event(route("2", "http://localhost:8082"), minutes=2), 9).data.accepted
    assert table.route("churn", "r").version == "2"


def test_an_unsigned_route_in_a_replay_is_not_folded_either():
    control, table = controller()
    unsigned = event(route("9")).model_copy(update={"signature": None})
    assert handle(control, unsigned, 0, replaying=True) is None
    assert table.route("churn", "r") is None


def test_without_required_signatures_anything_goes_and_says_so(caplog):
    open_settings = Settings(control=ControlSettings(require_signatures=False))
    control, _ = controller(open_settings)
    unsigned = new_event(route("5"), source="x", now=lambda: FIXED_TIME)
    assert handle(control, unsigned, 0).data.accepted
    assert "REQUIRE_SIGNATURES is off" in caplog.text


def test_keys_are_made_once_rotated_and_old_public_keys_stay_accepted(tmp_path: Path):
    settings = Settings(control=ControlSettings(keys_dir=tmp_path))
    first, made = ensure_keys(settings)
    assert made and not ensure_keys(settings)[1]
    assert (tmp_path / "control.key").stat().st_mode & 0o777 == 0o600
    signed_before = event(route(), settings=settings)
    verifier = Verifier(settings, reload_s=0.0)
    second, dropped = rotate(settings, keep=2)
    assert dropped == [] and set(accepted_keys(settings)) == {first.id, second.id}
    signed_after = event(route("2"), minutes=1, settings=settings)
    # a running worker learns the new key when it first sees it; the old one still counts
    assert verifier.problem(signed_after) is None and verifier.problem(signed_before) is None
    _, dropped = rotate(settings, keep=2)
    assert dropped == [first.id]
    assert "unknown key" in (Verifier(settings).problem(signed_before) or "")


class Registry:
    """A registry whose MinIO answers from a script: a card, no card, or not at all."""

    def __init__(self, answers: list[object]) -> None:
        self.answers = answers
        self.asked = 0

    def checked_card(self, model: str, version: str):
        from connectors.minio_store import ObjectNotFound
        from schemas import ServiceError
        from schemas.model_card import ModelCard

        self.asked += 1
        answer = self.answers.pop(0)
        if answer == "away":
            raise ServiceError("connection refused", service="minio", address="127.0.0.1:1")
        if answer == "missing":
            raise ObjectNotFound("NoSuchKey", service="minio", address="127.0.0.1:1")
        return ModelCard(
            name=model,
            version=version,
            framework="sklearn",
            features=answer,
            classes=[0, 1],
            created_at=FIXED_TIME,
        )

    def uri(self, model: str, version: str) -> str:
        return f"s3://models/{model}/{version}/"


def test_the_registry_refuses_unknown_versions_and_is_skipped_while_minio_is_away():
    from agents.control import RegistryCheck
    from connectors.bounded import Bounded

    clock = [0.0]
    registry = Registry(["missing", ["a"], "away"])
    minio = Bounded(1.0, pause_s=30.0, clock=lambda: clock[0])
    table = RoutingTable()
    ready = httpx.MockTransport(lambda r: httpx.Response(200, json={"ready": True}))
    control = Controller(
        SETTINGS,
        table,
        InferenceClient(SETTINGS.kserve, transport=ready),
        now=lambda: FIXED_TIME,
        registry=RegistryCheck(registry),  # type: ignore[arg-type]
        minio=minio,
    )
    missing = handle(control, event(route("7")), 0)
    assert not missing.data.accepted and "is not in the registry" in missing.data.reason
    assert handle(control, event(route("1"), minutes=1), 1).data.accepted
    # the same version again: the registry is not asked twice
    assert handle(control, event(route("1", "http://localhost:8081"), minutes=2), 2).data.accepted
    assert registry.asked == 2
    # MinIO away: accepted on the signature, and the decision says the registry was not asked
    away = handle(control, event(route("3"), minutes=3), 3)
    assert away.data.accepted and "registry not checked" in away.data.reason
    # ... and for the next 30 s MinIO is not tried at all
    paused = handle(control, event(route("4"), minutes=4), 4)
    assert paused.data.accepted and "registry not checked" in paused.data.reason
    assert registry.asked == 3

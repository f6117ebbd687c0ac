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

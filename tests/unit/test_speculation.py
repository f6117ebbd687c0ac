"""Speculative serving: members called at once, the deadline, the deciders, late answers."""

from __future__ import annotations

import asyncio

import pytest
from pydantic import ValidationError

from agents.routing import RoutingTable
from agents.scoring import Scorer
from agents.speculation import Speculator
from connectors.kserve_client import InferenceResult, ModelServerError
from schemas import ModelVersionEvent, SpeculativeMember
from schemas.settings import KServeSettings, ScoringSettings, Settings
from tests.samples import FIXED_TIME, TEST_CONTROL
from tests.unit.test_scoring import activate, raw_record

SETTINGS = Settings(
    scoring=ScoringSettings(model="churn"),
    kserve=KServeSettings(max_retries=0),
    control=TEST_CONTROL,
)
URL = {v: f"http://127.0.0.1:81{v}" for v in ("1", "2", "3", "4")}


class Members:
    """Fake model servers by URL: each answers a label per row (and probabilities), fails, or
    holds its answer until released."""

    def __init__(self, answers: dict[str, tuple[int, float] | str]) -> None:
        self.answers = answers  # version → (label, probability) | "down" | "slow"
        self.gate = asyncio.Event()
        self.calls: list[str] = []

    async def predict(self, url: str, model: str, protocol: str, rows: list) -> InferenceResult:
        version = next(v for v, u in URL.items() if u == url)
        self.calls.append(version)
        answer = self.answers[version]
        if answer == "down":
            raise ModelServerError(
                f"{url} refused", model=model, url=url, status=None, retriable=True
            )
        if answer == "slow":
            await self.gate.wait()
            answer = (9, 1.0)
        label, p = answer  # type: ignore[misc]
        return InferenceResult(
            labels=[label] * len(rows),
            probabilities=[{str(label): p}] * len(rows),
            model_version=version,
            latency_ms=1.0,
        )


def speculate(versions: str, decider: str, deadline_ms: int = 200) -> ModelVersionEvent:
    return ModelVersionEvent(
        action="speculate",
        model="churn",
        version="ensemble",
        members=[
            SpeculativeMember(version=v, url=URL[v], protocol="v1", features=["a", "b"])
            for v in versions
        ],
        deadline_ms=deadline_ms,
        decider=decider,
    )


def run(members: Members, event: ModelVersionEvent, records: int = 3, after=None):
    table = RoutingTable()
    table.apply(activate("1", URL["1"]), ready=True)
    table.apply(event, ready=True)
    speculator = Speculator(members)  # type: ignore[arg-type]
    scorer = Scorer(
        SETTINGS,
        table,
        members,
        now=lambda: FIXED_TIME,
        speculator=speculator,  # type: ignore[arg-type]
    )

    async def go():
        out = await scorer.score([raw_record(i) for i in range(records)])
        if after is not None:
            await after()
        await speculator.close()
        return out

    return asyncio.run(go()), speculator


def test_first_answer_serves_and_a_slow_member_is_not_waited_for_but_counted_late():
    members = Members({"2": (1, 0.6), "3": "slow"})

    async def release():
        members.gate.set()

    out, speculator = run(members, speculate("23", "first", deadline_ms=60_000), after=release)
    assert {(p.data.version, p.data.output, p.data.decider) for p in out.predictions} == {
        ("2", 1, "first")
    }
    assert {p.data.answers for p in out.predictions} == {1}
    assert sorted(members.calls) == ["2", "3"]  # called at once, in one call each
    assert speculator.late == {"3": 3}  # its answer came after the decision: counted


def test_majority_and_confidence_choose_per_their_rule_within_the_deadline():
    members = Members({"2": (1, 0.6), "3": (0, 0.99), "4": (1, 0.7)})
    out, _ = run(members, speculate("234", "majority"))
    assert {(p.data.version, p.data.output, p.data.answers) for p in out.predictions} == {
        ("2", 1, 3)
    }
    out, _ = run(members, speculate("234", "confidence"))
    assert {(p.data.version, p.data.output) for p in out.predictions} == {("3", 0)}


def test_the_deadline_holds_with_one_slow_member_and_late_answers_are_counted():
    members = Members({"2": (1, 0.6), "3": "slow"})

    async def release():
        members.gate.set()

    out, speculator = run(members, speculate("23", "majority", deadline_ms=50), after=release)
    assert {(p.data.version, p.data.answers) for p in out.predictions} == {("2", 1)}
    assert speculator.late == {"3": 3}


def test_records_no_member_answered_go_to_the_active_route():
    members = Members({"1": (7, 1.0), "2": "down", "3": "down"})
    out, _ = run(members, speculate("23", "first"))
    assert {(p.data.version, p.data.output, p.data.decider) for p in out.predictions} == {
        ("1", 7, None)
    }


def test_a_speculation_is_a_slot_of_its_own_and_checked_by_the_schema():
    table = RoutingTable()
    table.apply(activate("1", URL["1"]), ready=True)
    decision = table.apply(speculate("23", "first"), ready=True)
    assert decision.accepted and "2, 3 within 200 ms" in decision.reason
    routes = table.get("churn")
    assert routes.active.version == "1" and routes.speculative.decider == "first"
    assert [m.version for m in routes.speculative.members] == ["2", "3"]
    clear = ModelVersionEvent(action="clear-speculative", model="churn", version="ensemble")
    assert clear.partition_key == "churn:speculative"
    assert table.apply(clear, ready=True).reason == "speculative ensemble cleared"
    assert table.get("churn").speculative is None
    with pytest.raises(ValidationError, match="speculate needs members"):
        ModelVersionEvent(action="speculate", model="churn", version="e", deadline_ms=5)
    with pytest.raises(ValidationError, match="different versions"):
        speculate("22", "first")
    with pytest.raises(ValidationError, match="belong to speculate"):
        activate("2", URL["2"], decider="first")

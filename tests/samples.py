"""One valid payload of every type, and hypothesis strategies that build any valid payload."""

from __future__ import annotations

import base64
from datetime import UTC, datetime
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from hypothesis import strategies as st
from pydantic import SecretStr

from schemas import (
    CanaryVerdict,
    DeadLetter,
    DriftAlert,
    InputRecord,
    Label,
    ModelVersionEvent,
    Outcome,
    OutlierAlert,
    Payload,
    PerformanceAlert,
    PipelineRunEvent,
    Prediction,
    RouteDecision,
)
from schemas.payloads import MAX_ABS_FEATURE
from schemas.settings import ControlSettings

FIXED_TIME = datetime(2026, 11, 25, 12, 0, tzinfo=UTC)

# A fixed Ed25519 key pair for unit tests (never used outside them): routes signed with
# it verify under TEST_CONTROL, which reads no keys directory.
_TEST_PRIVATE = bytes(range(32))
_TEST_PUBLIC = (
    Ed25519PrivateKey.from_private_bytes(_TEST_PRIVATE)
    .public_key()
    .public_bytes(Encoding.Raw, PublicFormat.Raw)
)
TEST_CONTROL = ControlSettings(
    signing_key=SecretStr(base64.b64encode(_TEST_PRIVATE).decode()),
    public_keys=(base64.b64encode(_TEST_PUBLIC).decode(),),
    keys_dir=Path("/nonexistent/weir-test-keys"),
)

SAMPLES: list[Payload] = [
    InputRecord(id="r-1", features={"x0": 0.25, "x1": -3.0}, entity="user-7", timestamp=FIXED_TIME),
    Prediction(
        record_id="r-1",
        model="churn",
        version="3",
        url="http://127.0.0.1:8081",
        output=1,
        scores={"0": 0.2, "1": 0.8},
        latency_ms=1.5,
    ),
    Label(record_id="r-1", label="yes"),
    Outcome(
        record_id="r-1",
        model="churn",
        version="3",
        output=1,
        label=0,
        correct=False,
        latency_ms=1.5,
    ),
    DriftAlert(
        alert_id="a-1",
        model="churn",
        version="3",
        stream="x0",
        detector="ADWIN",
        records_seen=5055,
        mean_before=0.0,
        mean_after=1.0,
    ),
    OutlierAlert(alert_id="a-2", model="churn", record_id="r-9", score=0.97, threshold=0.9),
    PerformanceAlert(
        alert_id="a-3",
        model="churn",
        version="3",
        metric="accuracy",
        value=0.61,
        window=500,
        detector="DDM",
    ),
    CanaryVerdict(
        alert_id="verdict-1",
        model="churn",
        version="4",
        active_version="3",
        verdict="step",
        weight=0.1,
        next_weight=0.25,
        canary_outcomes=200,
        canary_correct=181,
        active_outcomes=1790,
        active_correct=1100,
        low=0.22,
        high=0.34,
        confidence=0.95,
        error_budget=0.02,
        look=1,
        reason="not worse: canary - active accuracy in [+0.220, +0.340], all above -0.02",
    ),
    ModelVersionEvent(
        action="canary",
        model="churn",
        version="4",
        url="http://127.0.0.1:8082",
        protocol="v2",
        weight=0.1,
        storage_uri="s3://models/churn/4/",
        metrics={"accuracy": 0.9},
        run_id="run-1",
        alert_id="a-1",
    ),
    RouteDecision(
        model="churn",
        action="activate",
        version="4",
        url="http://127.0.0.1:8082",
        accepted=False,
        reason="endpoint not ready",
        active_version="3",
        worker="w-1",
    ),
    PipelineRunEvent(
        run_id="run-1",
        model="churn",
        status="succeeded",
        pipeline="weir-retrain",
        alert_id="a-1",
        produced_version="4",
        metrics={"accuracy": 0.9},
    ),
    DeadLetter(
        raw_base64=base64.b64encode(b"\xff\x00not json").decode(),
        key_base64=None,
        error_class="MalformedEvent",
        reason="not JSON",
        source_topic="weir.records",
        partition=0,
        offset=42,
        attempts=1,
    ),
]

ident = st.text(
    alphabet=st.characters(codec="utf-8", exclude_categories=("Cs",)), min_size=1, max_size=40
)
model_name = st.from_regex(r"[a-z0-9][a-z0-9._-]{0,20}", fullmatch=True)
version = st.from_regex(r"[A-Za-z0-9._-]{1,12}", fullmatch=True)
finite = st.floats(allow_nan=False, allow_infinity=False)
url = st.from_regex(r"http://127\.0\.0\.1:[0-9]{2,5}(/[a-z]{1,8})?", fullmatch=True)
output = st.one_of(st.integers(-(2**53), 2**53), finite, ident)
when = st.datetimes(
    min_value=datetime(1971, 1, 1), max_value=datetime(2200, 1, 1), timezones=st.just(UTC)
)
score_map = st.dictionaries(ident, finite, max_size=4)

PAYLOADS: st.SearchStrategy[Payload] = st.one_of(
    st.builds(
        InputRecord,
        id=ident,
        features=st.dictionaries(
            ident,
            st.floats(min_value=-MAX_ABS_FEATURE, max_value=MAX_ABS_FEATURE),
            min_size=1,
            max_size=6,
        ),
        entity=st.none() | ident,
        timestamp=st.none() | when,
    ),
    st.builds(
        Prediction,
        record_id=ident,
        model=model_name,
        version=version,
        url=url,
        output=output,
        scores=st.none() | score_map,
        latency_ms=st.floats(0, 1e6),
    ),
    st.builds(Label, record_id=ident, label=output, timestamp=st.none() | when),
    st.builds(
        DriftAlert,
        alert_id=ident,
        model=model_name,
        version=st.none() | version,
        stream=ident,
        detector=st.sampled_from(["ADWIN", "PageHinkley"]),
        records_seen=st.integers(0, 2**40),
        mean_before=st.none() | finite,
        mean_after=st.none() | finite,
    ),
    st.builds(
        OutlierAlert,
        alert_id=ident,
        model=model_name,
        record_id=ident,
        score=finite,
        threshold=finite,
    ),
    st.builds(
        PerformanceAlert,
        alert_id=ident,
        model=model_name,
        metric=st.just("accuracy"),
        value=finite,
        window=st.integers(1, 10**6),
        detector=st.just("DDM"),
    ),
    st.sampled_from(["step", "promote", "rollback"]).flatmap(
        lambda kind: st.builds(
            CanaryVerdict,
            alert_id=ident,
            model=model_name,
            version=version,
            active_version=version,
            verdict=st.just(kind),
            weight=st.floats(0.01, 1),
            next_weight=st.floats(0.01, 1) if kind == "step" else st.none(),
            canary_outcomes=st.integers(0, 10**6),
            canary_correct=st.integers(0, 10**6),
            active_outcomes=st.integers(0, 10**6),
            active_correct=st.integers(0, 10**6),
            low=st.floats(-1, 1),
            high=st.floats(-1, 1),
            confidence=st.floats(0.5, 0.999),
            error_budget=st.floats(0, 0.5),
            look=st.integers(1, 100),
            reason=st.text(max_size=40),
        )
    ),
    st.one_of(
        st.builds(
            ModelVersionEvent,
            action=st.sampled_from(["activate", "shadow", "rollback"]),
            model=model_name,
            version=version,
            url=url,
            protocol=st.sampled_from(["v1", "v2"]),
            metrics=score_map,
            run_id=st.none() | ident,
            alert_id=st.none() | ident,
        ),
        st.builds(
            ModelVersionEvent,
            action=st.just("canary"),
            model=model_name,
            version=version,
            url=url,
            weight=st.floats(0.001, 1.0),
        ),
    ),
    st.builds(
        PipelineRunEvent,
        run_id=ident,
        model=model_name,
        status=st.sampled_from(["requested", "started", "succeeded", "failed", "not-promoted"]),
        pipeline=ident,
        produced_version=st.none() | version,
        metrics=score_map,
    ),
    st.builds(
        DeadLetter,
        raw_base64=st.binary(max_size=64).map(lambda b: base64.b64encode(b).decode()),
        error_class=st.just("MalformedEvent"),
        reason=ident,
        attempts=st.integers(1, 100),
        partition=st.none() | st.integers(0, 1000),
        offset=st.none() | st.integers(0, 2**40),
    ),
)


def performance_alert(
    alert_id: str, model: str = "m", version: str = "1", outcomes: int | None = None
) -> PerformanceAlert:
    """A performance alert as the performance role raises it, for retraining tests."""
    return PerformanceAlert(
        alert_id=alert_id,
        model=model,
        version=version,
        metric="accuracy",
        value=0.8,
        window=500,
        detector="adwin",
        outcomes=outcomes,
    )

"""The scenarios about what flows in: bad records, control garbage, routes, bad models.

Registered in :data:`fault_scenarios.SCENARIOS` on import, after the process
and broker faults of :mod:`fault_scenarios`, with the same expectations
helpers: every bad input must become a dead letter (once), never a crash, a
stuck partition or a lost record.
"""

from __future__ import annotations

import json
import time
import typing
from collections.abc import Callable
from typing import Any

from fault_case import MODEL, Case, group_lag
from fault_io import FEATURES, Figures, Msg, features_for, produce_one, raw_record, record_msg
from fault_procs import Worker, rss_mb
from fault_scenarios import (
    RATE,
    RETRY_BUDGET_S,
    SCENARIOS,
    WARMUP,
    expect_healthy,
    good,
    scenario,
    tail_target,
)
from fault_server import NAN_LABEL, NULL_LABEL, POISON, SHORT_PROBS
from pydantic import ValidationError

from schemas import ModelVersionEvent
from schemas.topics import Topic

__all__ = ["SCENARIOS"]  # with the scenarios below registered

# ------------------------------------------------------------------ bad records

BAD_KINDS = ("bad-json", "extra-field", "no-features", "nan-token", "nan-string", "unknown-type")


def bad_record(rid: str, i: int) -> Msg:
    """One malformed record of kind BAD_KINDS[i % len]: each must be dead-lettered once."""
    kind = BAD_KINDS[i % len(BAD_KINDS)]
    features: dict[str, Any] = features_for(i)
    if kind == "bad-json":
        return raw_record(rid, '{"id": "' + rid + '", "features": {"x0": 0.1,', kind)
    if kind == "extra-field":
        return raw_record(rid, json.dumps({"id": rid, "features": features, "colour": 1}), kind)
    if kind == "no-features":
        return raw_record(rid, json.dumps({"id": rid}), kind)
    if kind == "unknown-type":
        body = json.dumps({"id": rid, "features": features})
        return raw_record(rid, body, kind, type_="io.weir.unknown.v1")
    features["x0"] = float("nan") if kind == "nan-token" else "NaN"  # dumps writes NaN bare
    return raw_record(rid, json.dumps({"id": rid, "features": features}), kind)


@scenario(
    "malformed-flood",
    (
        'N malformed records (bad JSON, extra field, no features, NaN token, "NaN" '
        "string, unknown type) among N good: each dead-lettered exactly once, none "
        "scored, every good one scored"
    ),
)
def malformed_flood(case: Case) -> None:
    """As many malformed records as good ones, interleaved."""
    n = case.suite.records
    case.activate()
    case.worker()
    case.mark_fault()
    stream = case.stream(
        lambda i: good(i) if i % 2 == 0 else bad_record(f"bad{i:06d}", i // 2),
        rate=2 * RATE,
        limit=2 * n,
    )
    f = case.finish(stream)
    bad = sum(1 for s in stream.sent.values() if s.kind != "good")
    case.row.measured = ", ".join(f"{k} {v}" for k, v in sorted(f.dead_classes.items()))
    expect_healthy(case, f, dead=bad)
    case.row.expect(f.bad_scored == 0, f"{f.bad_scored} malformed records were scored")
    case.row.expect(f.dead_dupes == 0, f"{f.dead_dupes} malformed records dead-lettered again")


def huge_case(case: Case, value: bytes, producer_config: dict[str, Any] | None = None) -> None:
    """``value`` (too large for weir) in the middle of a stream of good records."""
    n = case.suite.records

    def make(i: int) -> Msg:
        if i == n // 2:
            case.mark_fault()
            return raw_record("huge", value, "huge")
        return good(i)

    case.activate()
    case.worker()
    stream = case.stream(make, limit=n, producer_config=producer_config)
    f = case.finish(stream)
    case.row.measured = f"{len(value) / 1e6:.2f} MB record" + (
        f"; dead letter {next(iter(f.dead_classes))}" if f.dead_classes else ""
    )
    expect_healthy(case, f, dead=1)
    case.row.expect(f.dead_dupes == 0, f"the huge record was dead-lettered {1 + f.dead_dupes}x")


@scenario(
    "huge-record",
    (
        "one ~800 KB non-JSON record mid-stream: dead-lettered once, every record behind "
        "it scored, no restart"
    ),
)
def huge_record(case: Case) -> None:
    huge_case(case, b"\xffnot json " * 80_000)  # 800 KB, under Kafka's 1 MiB


@scenario(
    "huge-gzip",
    (
        "one 1.44 MB record from a gzip producer: dead-lettered once, every record behind"
        " it scored, no restart"
    ),
)
def huge_gzip(case: Case) -> None:
    huge_case(
        case,
        b"not json at all " * 90_000,  # 1.44 MB, a few KB once gzipped
        {"compression.type": "gzip", "message.max.bytes": 2_000_000},
    )


# ------------------------------------------------------------------ control topic


def control_letters(case: Case, key: str) -> int:
    return len(case.tally.dead_from(case.topic(Topic.MODELS)).get(key, []))


@scenario(
    "control-garbage",
    (
        "800 KB of garbage on the control topic, then restarts: every worker starts and "
        "scores, no crash; small garbage dead-lettered once across two restarts"
    ),
    deadline_s=300.0,
)
def control_garbage(case: Case) -> None:
    """800 KB of garbage on the control topic, a restart; small garbage, two restarts."""
    case.activate()
    worker = case.worker()
    stream = case.stream(good)
    case.wait_predictions(WARMUP, "predictions before the garbage")
    case.mark_fault()
    produce_one(case.settings, Topic.MODELS, Msg("garbage-big", b"GARBAGE!" * 100_000, []))
    case.wait(
        lambda: control_letters(case, "garbage-big") > 0 or bool(worker.restarts()),
        "the big garbage to be dead-lettered (or the role to exit)",
        20.0,
        required=False,
    )
    scored_after: list[bool] = []
    worker = case.restart(worker)
    scored_after.append(case.wait_predictions(WARMUP, "predictions after restart 1", 60.0))
    produce_one(case.settings, Topic.MODELS, Msg("garbage-small", b"small garbage", []))
    case.wait(
        lambda: control_letters(case, "garbage-small") > 0,
        "small garbage dead letter",
        20,
        required=False,
    )
    for k in (2, 3):
        worker = case.restart(worker)
        scored_after.append(case.wait_predictions(WARMUP, f"predictions after restart {k}", 60.0))
    f = case.finish(stream, at_least=tail_target(case, stream.produced))
    big, small = control_letters(case, "garbage-big"), control_letters(case, "garbage-small")
    case.row.measured = (
        f"control dead letters: big {big}, small {small} (3 restarts after big, 2 after small)"
    )
    expect_healthy(case, f)
    case.row.expect(all(scored_after), "a restarted worker did not score")
    case.row.expect(big <= 1, f"big garbage reported {big} times")
    case.row.expect(small == 1, f"small garbage dead-lettered {small} times (expected once)")


def clear_actions() -> list[str]:
    actions = typing.get_args(ModelVersionEvent.model_fields["action"].annotation)
    return sorted((a for a in actions if "clear" in a), key=lambda a: "canary" not in a)


def clear_event(url: str) -> ModelVersionEvent | str:
    """The event that clears the canary, or why there is none."""
    actions = clear_actions()
    if not actions:
        known = typing.get_args(ModelVersionEvent.model_fields["action"].annotation)
        return f"ModelVersionEvent has no clear action (actions: {', '.join(known)})"
    base = {"model": MODEL, "version": "2", "url": url, "protocol": "v2"}
    errors = []
    for action in actions:
        for extra in ({}, {"slot": "canary"}, {"target": "canary"}):
            try:
                return ModelVersionEvent.model_validate(base | {"action": action} | extra)
            except ValidationError as err:
                errors.append(str(err).splitlines()[0])
    return f"no clear event validates: {errors[0]}"


@scenario(
    "stale-canary",
    (
        "activate v1, canary v2 at 0.5, clear-canary, restart: no record routed to v2 "
        "after the clear"
    ),
    deadline_s=240.0,
)
def stale_canary(case: Case) -> None:
    """activate v1, canary v2 at 0.5, clear it, restart: nothing may reach v2 afterwards."""
    case.activate()
    v2 = case.fault_server("flip", version="2")
    case.publish(
        ModelVersionEvent(
            action="canary",
            model=MODEL,
            version="2",
            url=v2,
            protocol="v2",
            features=FEATURES,
            weight=0.5,
        )
    )
    worker = case.worker()
    stream = case.stream(good)

    def by_v2(after: float = 0.0) -> int:
        preds = list(case.tally.predictions.values())
        return sum(1 for seen in preds for s in seen if s.detail == "2" and s.at > after)

    case.wait(lambda: by_v2() >= 20, "the canary to score records")
    clear = clear_event(v2)
    if isinstance(clear, str):
        case.row.failures.append(clear)
    else:
        case.publish(clear)
    case.mark_fault()
    cleared_at = time.time()
    worker = case.restart(worker)
    restarted_at = time.time()
    case.wait_predictions(3 * WARMUP, "predictions after the restart")
    f = case.finish(stream, at_least=tail_target(case, stream.produced))
    live_v2 = by_v2(cleared_at + 2.0) - by_v2(restarted_at)
    stale = by_v2(restarted_at)
    case.row.measured = f"v2 before clear {by_v2() - by_v2(cleared_at)}, after restart {stale}"
    if not isinstance(clear, str):
        case.row.measured += f", between clear+2s and restart {live_v2}"
        case.row.expect(live_v2 == 0, f"{live_v2} records routed to the cleared canary")
    case.row.expect(stale == 0, f"{stale} records routed to the old canary after the restart")
    expect_healthy(case, f, stall_max=None)


@scenario(
    "route-without-features",
    (
        "an activate with no `features` while records (1 in 7 with an extra feature) "
        "flow: nothing lost, no record waits > 60 s"
    ),
    deadline_s=240.0,
)
def route_without_features(case: Case) -> None:
    """An activate with no ``features`` while records (some with an extra feature) flow."""

    def make(i: int) -> Msg:
        features = features_for(i)
        if i % 7 == 3:
            features["x9"] = 0.5  # ignored by a route that names its features
            return record_msg(f"r{i:06d}", features, kind="extra")
        return good(i)

    case.activate()
    case.worker()
    stream = case.stream(make)
    case.wait_predictions(WARMUP, "predictions before the featureless route")
    case.mark_fault()
    case.activate(features=None)
    f = case.finish(
        stream, at_least=tail_target(case, stream.produced), drain_s=RETRY_BUDGET_S + 20
    )
    decisions = [line.partition("faults 1 -> ")[2][:60] for line in case.log_lines("activate")]
    case.row.measured = "; ".join(
        [f"route: {decisions[-1]}" if len(decisions) > 1 else "no decision logged"]
        + [f"{k} {v}" for k, v in sorted(f.dead_classes.items())]
    )
    expect_healthy(case, f, dead=None)
    if f.max_wait_s is not None:
        case.row.expect(
            f.max_wait_s <= RETRY_BUDGET_S,
            f"a record waited {f.max_wait_s:.0f}s > {RETRY_BUDGET_S:.0f}s (partition stuck)",
        )


# ------------------------------------------------------------------ misbehaving models


def poison_case(case: Case, mode: str, magic: tuple[float, ...], every: int) -> Figures:
    """Records through a fault server in ``mode``; every ``every``-th carries a magic x0."""

    def make(i: int) -> Msg:
        if i % every == every // 2:
            features = features_for(i)
            features["x0"] = magic[(i // every) % len(magic)]
            return record_msg(f"p{i:06d}", features, kind="poison")
        return good(i)

    case.activate(case.fault_server(mode))
    case.worker()
    case.mark_fault()
    stream = case.stream(make, limit=case.suite.records)
    f = case.finish(stream, drain_s=RETRY_BUDGET_S + 20)
    poison = sum(1 for s in stream.sent.values() if s.kind == "poison")
    case.row.measured = f"{poison} poison; " + ", ".join(
        f"{k} {v}" for k, v in sorted(f.dead_classes.items())
    )
    expect_healthy(case, f, dead=None)
    case.row.expect(f.bad_scored == 0, f"{f.bad_scored} poison records got a prediction")
    if f.max_wait_s is not None:
        case.row.expect(
            f.max_wait_s <= RETRY_BUDGET_S,
            f"a record waited {f.max_wait_s:.0f}s > {RETRY_BUDGET_S:.0f}s (partition stuck)",
        )
    return f


@scenario(
    "model-fails-one-input",
    (
        "a V2 server answering 500 for one magic input: poison records dead-lettered, "
        "every other record scored, no record waits > 60 s"
    ),
    deadline_s=240.0,
)
def model_fails_one_input(case: Case) -> None:
    f = poison_case(case, "fail-one", (POISON,), every=50)
    case.row.expect(f.good_dead == 0, f"{f.good_dead} good records dead-lettered with a poison")


@scenario(
    "model-bad-answer",
    (
        "a V2 server answering 200 with a null label, a NaN label or short probabilities "
        "for some rows: those rows not scored, nothing lost, no crash (good records dead-"
        "lettered with them are noted)"
    ),
    deadline_s=240.0,
)
def model_bad_answer(case: Case) -> None:
    f = poison_case(case, "bad-answer", (NULL_LABEL, NAN_LABEL, SHORT_PROBS), every=40)
    if f.good_dead:
        case.row.notes.append(f"{f.good_dead} good records dead-lettered with their batch")


# ------------------------------------------------------------------ lax inputs, memory

LAX = ('"1.5"', "true", "1e308")


def lax_record(i: int) -> Msg:
    rid = f"lax{i:06d}"
    body = json.dumps({"id": rid, "features": features_for(i) | {"x1": "LAX"}})
    return raw_record(rid, body.replace('"LAX"', LAX[i % len(LAX)]), "lax")


def fresh_names(wave: int, per_record: int) -> Callable[[int], Msg]:
    def make(i: int) -> Msg:
        features = features_for(i) | {f"w{wave}r{i}f{j}": float(j) for j in range(per_record)}
        return record_msg(f"w{wave}-{i:06d}", features)

    return make


def monitor_caught_up(case: Case) -> bool:
    group = f"{case.settings.kafka.topic_prefix}-monitor-{MODEL}"
    return all(
        group_lag(case.settings, group, case.topic(t)) == 0
        for t in (Topic.RECORDS, Topic.PREDICTIONS)
    )


@scenario(
    "lax-inputs",
    (
        "features '1.5' (a string), true, 1e308 dead-lettered, not scored; the monitor's RSS"
        " grows <= 10 MB on a second wave of 10,000 fresh feature names"
    ),
    deadline_s=300.0,
)
def lax_inputs(case: Case) -> None:
    """Strings, booleans and 1e308 as features; then waves of fresh feature names."""
    case.activate()
    worker = case.worker(("scoring", "monitor"))
    case.mark_fault()
    stream = case.stream(lambda i: lax_record(i // 4) if i % 4 == 1 else good(i), limit=400)
    f = case.finish(stream)
    case.row.expect(f.bad_scored == 0, f"{f.bad_scored} lax records scored (not dead-lettered)")
    growth = fresh_name_waves(case, worker, waves=2, records=1000, per_record=10)
    case.row.measured = "monitor RSS " + " → ".join(f"{mb:+.0f}" for mb in growth) + " MB per wave"
    case.row.notes.append("waves of 1000 records x 10 fresh feature names")
    expect_healthy(case, f, dead=None)
    if len(growth) == 2:
        case.row.expect(growth[1] <= 10.0, f"monitor grew {growth[1]:.0f} MB on the second wave")


def fresh_name_waves(
    case: Case, worker: Worker, *, waves: int, records: int, per_record: int
) -> list[float]:
    """Monitor RSS growth (MB) per wave of records with fresh feature names."""
    if not case.wait(
        lambda: monitor_caught_up(case), "the monitor to catch up", 60, required=False
    ):
        return []
    before = rss_mb(worker.role_pid("monitor"))
    growth = []
    for wave in range(waves):
        stream = case.stream(fresh_names(wave, per_record), rate=500, limit=records)
        case.wait(stream.finished, f"wave {wave} sent", 60, required=False)
        caught_up = case.wait(
            lambda: monitor_caught_up(case), f"the monitor to read wave {wave}", 90, required=False
        )
        if not caught_up:
            break
        now = rss_mb(worker.role_pid("monitor"))
        if before is None or now is None:
            break
        growth.append(now - before)
        before = now
    return growth

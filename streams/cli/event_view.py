"""How ``weir subscribe`` shows events: one aligned, never-wrapped row per event, or one
line of JSON; plus the ``--model`` / ``--type`` filters and the per-payload key and detail."""

from __future__ import annotations

import json
import re
from datetime import UTC
from typing import Any

import click
from rich.text import Text

from connectors.kafka import ConsumedMessage
from schemas import (
    PAYLOAD_BY_TYPE,
    CanaryVerdict,
    DeadLetter,
    DriftAlert,
    Event,
    InputRecord,
    Label,
    ModelVersionEvent,
    OutlierAlert,
    Payload,
    PerformanceAlert,
    PipelineRunEvent,
    Prediction,
    RouteDecision,
)
from schemas.payloads import Alert
from streams.cli.common import console


def short_type(event_type: str) -> str:
    """``io.weir.alert.drift.v1`` → ``alert.drift``."""
    return re.sub(r"^io\.weir\.|\.v\d+$", "", event_type)


def _model_of(payload: Payload) -> str | None:
    if isinstance(payload, Prediction | Alert | ModelVersionEvent | RouteDecision):
        return payload.model
    return payload.model if isinstance(payload, PipelineRunEvent) else None


def matches(event: Event[Any], *, model: str | None, type_: str | None) -> bool:
    """The ``--model`` and ``--type`` filters (a short type also matches its sub-types)."""
    if model is not None and model not in (_model_of(event.data), event.lineage.modelname):
        return False
    if type_ is None:
        return True
    short = short_type(event.type)
    return type_ in (event.type, short) or short.startswith(type_ + ".")


def _known_type(wanted: str | None) -> str | None:
    """``--type`` must name a weir event type, fully or by a short prefix."""
    shorts = sorted(short_type(t) for t in PAYLOAD_BY_TYPE)
    if wanted is None or wanted in PAYLOAD_BY_TYPE:
        return wanted
    if any(s == wanted or s.startswith(wanted + ".") for s in shorts):
        return wanted
    raise click.BadParameter(f"{wanted!r} is not a weir event type; known: {', '.join(shorts)}")


def when(event: Event[Any]) -> str:
    return event.time.astimezone(UTC).strftime("%m-%d %H:%M:%S") if event.time else "-"


def json_line(event: Event[Any]) -> str:
    """The CloudEvent attributes plus ``data``, as one line of JSON."""
    return json.dumps({**event.attributes(), "data": event.data.model_dump(mode="json")})


def _v(version: str | None) -> str:
    return f"v{version}" if version else "(no version)"


def describe(payload: Payload) -> tuple[str, str]:
    """The key field and a one-line detail for each payload type."""
    match payload:
        case InputRecord():
            feats = " ".join(f"{k}={v:g}" for k, v in list(payload.features.items())[:6])
            more = " …" if len(payload.features) > 6 else ""
            return payload.id, f"{feats}{more}" + (
                f" entity {payload.entity}" * bool(payload.entity)
            )
        case Prediction():
            how = " shadow" if payload.shadow else ""
            if payload.decider is not None:
                how = f" {payload.decider} of {payload.answers} answers"
            return payload.record_id, (
                f"{payload.model} {_v(payload.version)} → {payload.output} "
                f"({payload.latency_ms:.1f} ms{how})"
            )
        case Label():
            return payload.record_id, f"label {payload.label}"
        case DriftAlert():
            return payload.alert_id, (
                f"{payload.model} {_v(payload.version)}: {payload.stream} drifted "
                f"({payload.detector}, {payload.records_seen} records)"
            )
        case OutlierAlert():
            return payload.alert_id, (
                f"{payload.model}: record {payload.record_id} "
                f"score {payload.score:.3f} ≥ {payload.threshold:g}"
            )
        case PerformanceAlert():
            return payload.alert_id, (
                f"{payload.model} {_v(payload.version)}: {payload.metric} {payload.value:.3f} "
                f"over {payload.window} ({payload.detector})"
            )
        case CanaryVerdict():
            step = f" → {payload.next_weight:g}" if payload.next_weight is not None else ""
            return payload.alert_id, (
                f"{payload.model} canary {_v(payload.version)} vs {_v(payload.active_version)} "
                f"at {payload.weight:g}: {payload.verdict}{step} ({payload.reason})"
            )
        case ModelVersionEvent():
            weight = f" weight {payload.weight:g}" if payload.weight is not None else ""
            route = f"{payload.url} ({payload.protocol}){weight}"
            if payload.members is not None:
                route = ", ".join(f"{_v(m.version)} {m.url}" for m in payload.members) + (
                    f" within {payload.deadline_ms} ms, {payload.decider} decides"
                )
            return payload.model, f"{payload.action} {_v(payload.version)} → {route}"
        case RouteDecision():
            verdict = "accepted" if payload.accepted else "REFUSED"
            change = f"{payload.action} {_v(payload.version)}"
            return payload.model, f"{payload.worker} {verdict} {change}: {payload.reason}"
        case PipelineRunEvent():
            made = f" → {_v(payload.produced_version)}" if payload.produced_version else ""
            why = f": {payload.reason}" if payload.reason else ""
            return payload.run_id, f"{payload.model} {payload.status}{made}{why}"
        case DeadLetter():
            return payload.error_class, (
                f"{payload.reason} (from {payload.source_topic or '?'} "
                f"{payload.partition}@{payload.offset})"
            )
    return "-", type(payload).__name__


WIDTHS = (14, 17, 20)  # time, type, key; the detail takes the rest of the line


def _row(time_: str, type_: str, key: str, detail: str, *, alarm: bool = False) -> Text:
    """One aligned line, never wrapped: every event stays one line for grep and logs."""
    row = Text()
    row.append(f"{time_:<{WIDTHS[0]}} ", style="dim")
    row.append(f"{type_:<{WIDTHS[1]}} ", style="bold red" if alarm else "cyan")
    row.append(f"{key:<{WIDTHS[2]}} ", style="bold")
    return row.append(detail)


def _show_row(msg: ConsumedMessage, header: bool) -> None:
    if header:
        console.print(_row("time", "type", "key", "detail"), style="underline", soft_wrap=True)
    if msg.event is not None:
        key, detail = describe(msg.event.data)
        line = _row(when(msg.event), short_type(msg.event.type), key, detail)
    else:
        assert msg.error is not None
        reason = f"{msg.error.error_class}: {msg.error.reason}"
        line = _row("-", "undecodable", f"p{msg.partition}@{msg.offset}", reason, alarm=True)
    console.print(line, soft_wrap=True)


def _show_json(msg: ConsumedMessage) -> None:
    if msg.event is not None:
        click.echo(json_line(msg.event))
    else:
        assert msg.error is not None
        letter = DeadLetter.from_error(msg.error)
        click.echo(json.dumps({"undecodable": letter.model_dump(mode="json")}))

"""``weir demo``: the main job, run by the README's first command.

1. The local stack comes up (Kafka in KRaft mode, MinIO) and a preflight proves
   it: CloudEvents through Kafka in both modes, a malformed message caught with
   its raw bytes, an object through MinIO.
2. The closed loop runs (``streams/dev/loop.py``): version 1 trained by the Kubeflow
   pipeline and served by kserve, a worker scoring a seeded stream with an
   abrupt concept drift, the alert, the retraining run, version 2 activated on
   the control topic, and accuracy recovering — with progress on the terminal,
   a summary table and a plot.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from rich.console import Console
from rich.table import Table

from connectors.kafka import EventProducer, read_at
from connectors.minio_store import ObjectStore
from schemas import InputRecord, new_event
from schemas.settings import Settings
from schemas.topics import Topic, topic_name
from streams.dev.stack import Stack


@dataclass(frozen=True)
class Check:
    what: str
    ok: bool
    detail: str
    seconds: float


def _timed(what: str, fn: Callable[[], tuple[bool, str]]) -> Check:
    t = time.monotonic()
    ok, detail = fn()
    return Check(what, ok, detail, time.monotonic() - t)


def foundation_checks(settings: Settings) -> list[Check]:
    """Round trips through the real broker and object store; each returns (ok, detail)."""
    records = topic_name(settings.kafka, Topic.RECORDS)
    producer = EventProducer(settings)
    checks: list[Check] = []

    for mode in ("binary", "structured"):
        mode_settings = settings.model_copy(
            update={"events": settings.events.model_copy(update={"mode": mode})}
        )

        def kafka_round_trip(
            mode_settings: Settings = mode_settings, mode: str = mode
        ) -> tuple[bool, str]:
            event = new_event(
                InputRecord(id=f"demo-{mode}", features={"x0": 0.5, "x1": -1.25}),
                source=settings.events.source,
            )
            where = EventProducer(mode_settings).send(records, event)
            got = read_at(settings, where)
            same = got.event == event
            return same, f"{where.topic}[{where.partition}]@{where.offset} id={event.id[:8]}…"

        checks.append(_timed(f"CloudEvent through Kafka ({mode} mode)", kafka_round_trip))

    def malformed() -> tuple[bool, str]:
        where = producer.send_raw(records, b"{not json", key=b"demo-bad")
        # Read it back the way an agent would: it must come back as a typed error.
        err = read_at(settings, where).error
        return (
            err is not None and err.raw.value == b"{not json",
            f"{type(err).__name__}: {err}" if err else "decoded?!",
        )

    checks.append(_timed("malformed bytes become a typed error", malformed))

    def minio_round_trip() -> tuple[bool, str]:
        store = ObjectStore(settings.minio)
        body = json.dumps({"hello": "weir"}).encode()
        uri = store.put_bytes(
            settings.minio.data_bucket, "demo/hello.json", body, "application/json"
        )
        back = store.get_bytes(settings.minio.data_bucket, "demo/hello.json")
        return back == body, f"{uri} ({len(body)} bytes)"

    checks.append(_timed("object through MinIO", minio_round_trip))
    return checks


def run_demo(
    settings: Settings,
    *,
    console: Console,
    keep: bool,
    min_records: int = 6000,
    drift_at: int = 3000,
    rate: float = 300.0,
    out_dir: Path = Path("out"),
) -> None:
    from streams.dev.loop import LoopConfig, print_report, run_loop

    stack = Stack(settings, say=console.print)
    console.rule("[bold]weir demo")
    with console.status("bringing the local stack up (first run downloads Kafka, builds MinIO)…"):
        report = stack.up()
    console.print(
        f"stack ready in {report.total_s:.1f}s — topics: "
        f"{sum(v == 'created' for v in report.topics.values())} created, "
        f"{sum(v == 'exists' for v in report.topics.values())} existing; "
        f"buckets: {', '.join(report.buckets)}"
    )
    try:
        with console.status("preflight: round-tripping events and objects…"):
            checks = foundation_checks(settings)
        table = Table("preflight check", "result", "detail", "time")
        for c in checks:
            table.add_row(
                c.what, "[green]ok[/]" if c.ok else "[red]FAILED[/]", c.detail, f"{c.seconds:.2f}s"
            )
        console.print(table)
        if not all(c.ok for c in checks):
            raise SystemExit(1)
        console.rule("[bold]the closed loop")
        loop = run_loop(
            settings,
            LoopConfig(min_records=min_records, drift_at=drift_at, rate=rate, out_dir=out_dir),
            console=console,
            keep_topics=keep,
        )
        print_report(loop, console)
        if not loop.ok:
            raise SystemExit(1)
    finally:
        if keep:
            console.print("stack left running; stop it with [bold]weir stack down[/]")
        elif report.started:
            stack.down(only=tuple(report.started))

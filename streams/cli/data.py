"""The everyday data commands: ``weir produce``, ``weir subscribe`` and ``weir dlq replay``.

What they stand on lives elsewhere: settings, consoles and error reporting in
``streams.cli.common``; reading input files in ``streams.cli.record_files``; showing
events in ``streams.cli.event_view``; the group-less topic reader and the broker/topic
preflight in ``connectors.kafka_tools``.
"""

from __future__ import annotations

import contextlib
import signal
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import click
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table
from rich.text import Text

from connectors.dead_letters import whole_value
from connectors.kafka import ConsumedMessage, EventProducer
from connectors.kafka_tools import (
    Start,
    open_reader,
    physical_topic,
    quiet_producer,
    require_topics,
)
from connectors.minio_store import ObjectStore
from schemas import DeadLetter, InputRecord, Label, new_event
from schemas.topics import Topic, topic_name
from streams.cli.common import _settings, console, err_console, one_line_errors
from streams.cli.event_view import _known_type, _show_json, _show_row, matches
from streams.cli.record_files import BadRow, RecordFile

SHOWN_BAD_ROWS = 20  # bad input rows reported one by one; the rest are counted


# ------------------------------------------------------------------ produce


@dataclass
class Pacer:
    """Keeps a producer under ``rate`` records per second (0: no limit)."""

    rate: float
    clock: Callable[[], float] = time.monotonic
    sleep: Callable[[float], None] = time.sleep

    def __post_init__(self) -> None:
        self._start = self.clock()

    def wait_turn(self, sent: int) -> None:
        if self.rate > 0:
            delay = self._start + sent / self.rate - self.clock()
            if delay > 0:
                self.sleep(delay)


def _generated(
    n: int, drift_at: int | None, seed: int, labels: bool
) -> Iterator[tuple[InputRecord, Label | None]]:
    from streams.synthetic import drifting_stream

    prefix = f"g{uuid.uuid4().hex[:8]}"
    for row in drifting_stream(n, n // 2 if drift_at is None else drift_at, seed=seed):
        record = InputRecord(id=f"{prefix}-{row.index}", features=row.features)
        yield record, Label(record_id=record.id, label=row.label) if labels else None


@click.command()
@click.option(
    "--file",
    "path",
    metavar="PATH",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="CSV with a header, or JSON Lines with one object per line",
)
@click.option(
    "--format",
    "fmt",
    type=click.Choice(["csv", "jsonl"]),
    default=None,
    help="file format (default: from the suffix, else from the first character)",
)
@click.option(
    "--id-field",
    default="id",
    show_default=True,
    help="column with the record id; rows without one get a generated id",
)
@click.option("--key-field", default=None, help="column with the entity key (the Kafka key)")
@click.option(
    "--features",
    metavar="A,B,C",
    default=None,
    help="comma-separated feature columns (default: the numeric columns of the first readable row)",
)
@click.option(
    "--generate",
    "generate",
    metavar="N",
    type=click.IntRange(min=1),
    default=None,
    help="send N rows of the built-in seeded SEA stream instead of a file",
)
@click.option(
    "--drift-at",
    metavar="ROW",
    type=click.IntRange(min=0),
    default=None,
    help="row where the generated stream's concept changes (default: N/2)",
)
@click.option("--seed", type=int, default=42, show_default=True, help="generator seed")
@click.option("--labels", is_flag=True, help="also send a Label event for every generated row")
@click.option(
    "--rate",
    metavar="R",
    type=click.FloatRange(min=0),
    default=0.0,
    show_default=True,
    help="records per second at most (0: unlimited)",
)
@click.option(
    "--count", type=click.IntRange(min=1), default=None, metavar="N", help="stop after N records"
)
@click.pass_context
@one_line_errors
def produce(
    ctx: click.Context,
    path: Path | None,
    fmt: Literal["csv", "jsonl"] | None,
    id_field: str,
    key_field: str | None,
    features: str | None,
    generate: int | None,
    drift_at: int | None,
    seed: int,
    labels: bool,
    rate: float,
    count: int | None,
) -> None:
    """Send input records to the records topic as CloudEvents (io.weir.record.v1).

    From a file (--file: every numeric column other than the id and key is a
    feature; unreadable rows are reported with their line number and skipped)
    or from the seeded generator (--generate N). The summary is printed once
    the broker has acknowledged every record. Ctrl-C or SIGTERM (``docker
    compose stop producer``) ends the stream early the same way: what was sent
    is flushed, summed up, and the exit code is 0.
    """
    if (path is None) == (generate is None):
        raise click.UsageError("give exactly one of --file PATH or --generate N")
    if labels and generate is None:
        raise click.UsageError("--labels needs --generate (files carry no labels)")
    settings = _settings(ctx)
    records_topic = topic_name(settings.kafka, Topic.RECORDS)
    labels_topic = topic_name(settings.kafka, Topic.LABELS)
    require_topics(settings, records_topic, labels_topic)

    source = f"{settings.events.source}/cli"
    rows: Iterator[tuple[InputRecord, Label | None] | BadRow]
    reader: RecordFile | None = None
    if path is not None:
        wanted = tuple(f.strip() for f in features.split(",") if f.strip()) if features else None
        reader = RecordFile(path, fmt=fmt, id_field=id_field, key_field=key_field, features=wanted)
        rows = ((r, None) if isinstance(r, InputRecord) else r for r in reader)
        total = reader.count_rows() if count is None else min(count, reader.count_rows())
        what = str(path)
    else:
        assert generate is not None
        rows = iter(_generated(generate, drift_at, seed, labels))
        total = generate if count is None else min(count, generate)
        what = f"generated SEA stream (seed {seed})"

    started = time.monotonic()
    producer = quiet_producer(settings)
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn())
    with Progress(*columns, TimeElapsedColumn(), console=err_console) as progress:
        task = progress.add_task(f"producing {what}", total=total)
        with _stop_on_signals() as stop:
            sent, skipped, interrupted = _send_rows(
                rows,
                producer,
                (records_topic, labels_topic),
                source=source,
                pacer=Pacer(rate),
                count=count,
                progress=lambda is_record: progress.advance(task, int(is_record or count is None)),
                say=progress.console.print,
                stop=stop,
            )
        progress.update(task, description=f"waiting for the broker to acknowledge {sent}")
        producer.flush()
        progress.update(task, description=f"produced {what}")
    seconds = time.monotonic() - started
    if skipped > SHOWN_BAD_ROWS:
        err_console.print(f"({skipped - SHOWN_BAD_ROWS} more unreadable rows not shown)")
    extra = f" (+{sent} labels to {labels_topic})" if labels and sent else ""
    note = f"; features {', '.join(reader.features)}" if reader and reader.features else ""
    note += "; stopped early (Ctrl-C or SIGTERM)" if interrupted else ""
    console.print(
        f"[green]sent {sent}[/] records to {records_topic}{extra}, skipped {skipped}, "
        f"in {seconds:.2f}s ({sent / seconds if seconds > 0 else 0.0:.0f} records/s); "
        f"acknowledged by {settings.kafka.bootstrap_servers}{escape(note)}",
        soft_wrap=True,
    )


@contextlib.contextmanager
def _stop_on_signals() -> Iterator[list[bool]]:
    """A flag set by SIGTERM or a first Ctrl-C in the block: the send loop ends at the next
    row, so a container stop or a Ctrl-C ends the stream cleanly (never between a record
    and its label) and what is queued is still flushed. A second Ctrl-C stops at once
    (KeyboardInterrupt), as a user pressing it again expects."""
    stop = [False]

    def request(signum: int, frame: object) -> None:
        stop[0] = True
        if signum == signal.SIGINT:  # the next one interrupts
            signal.signal(signal.SIGINT, signal.default_int_handler)

    previous = {sig: signal.signal(sig, request) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        yield stop
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def _send_rows(
    rows: Iterator[tuple[InputRecord, Label | None] | BadRow],
    producer: EventProducer,
    topics: tuple[str, str],
    *,
    source: str,
    pacer: Pacer,
    count: int | None,
    progress: Callable[[bool], None],
    say: Callable[[str], None],
    stop: list[bool],
) -> tuple[int, int, bool]:
    """Queue records (and labels) until the rows or ``count`` run out, or ``stop[0]`` is
    set (SIGTERM or Ctrl-C; a second Ctrl-C interrupts at once).

    Returns (sent, skipped, interrupted); the caller flushes what was queued.
    """
    sent = skipped = 0
    try:
        for row in rows:
            if stop[0]:
                return sent, skipped, True
            if count is not None and sent >= count:
                break
            if isinstance(row, BadRow):
                skipped += 1
                if skipped <= SHOWN_BAD_ROWS:
                    say(f"[yellow]line {row.line}:[/] {escape(row.reason)}")
                progress(False)
                continue
            record, label = row
            pacer.wait_turn(sent)
            producer.produce(topics[0], new_event(record, source=source))
            if label is not None:
                producer.produce(topics[1], new_event(label, source=source))
            sent += 1
            progress(True)
    except KeyboardInterrupt:
        return sent, skipped, True
    return sent, skipped, False


# ---------------------------------------------------------------- subscribe


@click.command()
@click.argument("topic", type=click.Choice([t.value for t in Topic if t is not Topic.CHECKPOINTS]))
@click.option(
    "--json",
    "as_json",
    is_flag=True,
    help="one JSON object per line: the CloudEvent attributes plus data",
)
@click.option("--model", default=None, help="only events about this model")
@click.option(
    "--type",
    "type_",
    default=None,
    callback=lambda _ctx, _param, value: _known_type(value),
    help="only this event type: full (io.weir.alert.drift.v1) or short (alert.drift, alert)",
)
@click.option("--from-beginning", is_flag=True, help="start at the oldest event (default: latest)")
@click.option(
    "--max",
    "max_events",
    metavar="N",
    type=click.IntRange(min=1),
    default=None,
    help="stop after N events",
)
@click.option(
    "--timeout",
    metavar="S",
    type=click.FloatRange(min=0, min_open=True),
    default=None,
    help="stop after S seconds",
)
@click.pass_context
@one_line_errors
def subscribe(
    ctx: click.Context,
    topic: str,
    as_json: bool,
    model: str | None,
    type_: str | None,
    from_beginning: bool,
    max_events: int | None,
    timeout: float | None,
) -> None:
    """Tail a weir topic: one row per event (or --json), until --max, --timeout or Ctrl-C.

    TOPIC is a logical name; the prefix comes from WEIR_KAFKA__TOPIC_PREFIX.
    Messages that are not valid weir events are shown as undecodable, whatever
    the filters.
    """
    settings = _settings(ctx)
    name = topic_name(settings.kafka, Topic(topic))
    shown = undecodable = 0
    start: Start = "beginning" if from_beginning else "end"
    with open_reader(settings, name, start=start) as reader:
        if not as_json:
            err_console.print(f"[dim]{name} on {settings.kafka.bootstrap_servers}[/]")
        try:
            for msg in reader.follow(timeout):
                if msg.event is not None and not matches(msg.event, model=model, type_=type_):
                    continue
                undecodable += msg.event is None
                if as_json:
                    _show_json(msg)
                else:
                    _show_row(msg, header=shown == 0)
                shown += 1
                if max_events is not None and shown >= max_events:
                    break
        except KeyboardInterrupt:
            pass
    err_console.print(f"[dim]{shown} events ({undecodable} undecodable) from {name}[/]")


# --------------------------------------------------------------------- dlq


@click.group()
def dlq() -> None:
    """The dead-letter topic: messages weir could not process, kept byte for byte."""


@click.command("replay")
@click.option(
    "--from-beginning",
    is_flag=True,
    help="read every dead letter (default: those after the last saved replay)",
)
@click.option(
    "--max",
    "max_letters",
    metavar="N",
    type=click.IntRange(min=1),
    default=None,
    help="replay at most N dead letters",
)
@click.option("--error-class", default=None, help="only this error class, e.g. MalformedEvent")
@click.option(
    "--source-topic",
    default=None,
    help="only letters from this topic (logical name like records, or the full name)",
)
@click.option("--dry-run", is_flag=True, help="show what would be replayed; send nothing")
@click.pass_context
@one_line_errors
def dlq_replay(
    ctx: click.Context,
    from_beginning: bool,
    max_letters: int | None,
    error_class: str | None,
    source_topic: str | None,
    dry_run: bool,
) -> None:
    """Re-inject dead letters: each one's original bytes, key and headers go back to its topic.

    The event id inside the bytes is unchanged. Reads the dead-letter topic up to
    its current end. A replay without filters saves its position (consumer group
    <prefix>-dlq-replay), so the next one starts after it; filtered replays and
    dry runs save nothing.
    """
    settings = _settings(ctx)
    name = topic_name(settings.kafka, Topic.DEAD_LETTER)
    existing = require_topics(settings, name)
    wanted_source = physical_topic(settings, source_topic) if source_topic else None
    group = f"{settings.kafka.topic_prefix}-dlq-replay"
    start: Start = "beginning" if from_beginning else "committed"
    chosen: list[tuple[ConsumedMessage, DeadLetter, str]] = []
    filtered = unreadable = 0
    unplayable: list[str] = []
    with open_reader(settings, name, start=start, group_id=group) as reader:
        for msg in reader.read_to_end():
            letter = msg.event.data if msg.event is not None else None
            if not isinstance(letter, DeadLetter):
                unreadable += 1
            elif (error_class and letter.error_class.lower() != error_class.lower()) or (
                wanted_source and letter.source_topic != wanted_source
            ):
                filtered += 1
            elif letter.source_topic is None or letter.source_topic not in existing:
                unplayable.append(
                    f"{msg.partition}@{msg.offset}: source topic "
                    f"{letter.source_topic or '(none)'} does not exist"
                )
            elif not letter.complete and letter.raw_ref is None:
                unplayable.append(
                    f"{msg.partition}@{msg.offset}: holds {len(letter.raw)} of its "
                    f"{letter.raw_size} bytes (sha256 {letter.raw_sha256}); the whole value "
                    "could not be stored"
                )
            else:
                chosen.append((msg, letter, letter.source_topic))
            if max_letters is not None and len(chosen) >= max_letters:
                break
        if not dry_run:
            producer = quiet_producer(settings)
            store = ObjectStore(settings.minio)
            for _msg, letter, target in chosen:
                headers = [(k, v.encode("utf-8")) for k, v in letter.headers.items()]
                producer.produce_raw(target, whole_value(letter, store), letter.key, headers)
            producer.flush()
            if not (error_class or wanted_source):
                reader.commit()
    _replay_report(chosen, dry_run=dry_run)
    for line in unplayable:
        err_console.print(f"[yellow]not replayable[/] {escape(line)}", soft_wrap=True)
    verb = "would replay" if dry_run else "replayed"
    console.print(
        f"[green]{verb} {len(chosen)}[/] dead letters from {name}; skipped {filtered} by filters, "
        f"{len(unplayable)} without a source topic, {unreadable} unreadable",
        soft_wrap=True,
    )


def _replay_report(chosen: list[tuple[ConsumedMessage, DeadLetter, str]], *, dry_run: bool) -> None:
    if not chosen:
        return
    table = Table(
        "dead letter",
        "error class",
        "back to",
        "original",
        "reason",
        title="would replay" if dry_run else "replayed",
    )
    for msg, letter, target in chosen[:100]:
        table.add_row(
            f"{msg.partition}@{msg.offset}",
            letter.error_class,
            target,
            f"{letter.partition}@{letter.offset}",
            Text(letter.reason[:120]),
        )
    console.print(table)
    if len(chosen) > 100:
        console.print(f"… and {len(chosen) - 100} more")


dlq.add_command(dlq_replay)

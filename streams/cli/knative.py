"""``weir event-display``: a debugging CloudEvents sink that prints what it receives.

The sink itself (decoding, answers) is ``streams.servers.event_display``; this module
is the command and how an event looks on stdout: one readable line, or with
``--json`` one JSON object (the CloudEvent attributes plus ``data``, as
``weir subscribe --json`` prints them). stdout carries nothing else and is
flushed after every event, so it can be piped; rejections and the summary go
to stderr.
"""

from __future__ import annotations

import contextlib
import sys
from typing import Any

import click
from rich.markup import escape

from schemas import Event
from streams.cli.common import _settings, err_console, one_line_errors
from streams.cli.event_view import describe, json_line


def _one_line(text: str) -> str:
    return " ".join(text.splitlines())


def _events(n: int) -> str:
    return f"{n} event{'' if n == 1 else 's'}"


def readable_line(event: Event[Any]) -> str:
    """type, id, source, subject/model/version when present, and a short data summary."""
    parts = [event.type, f"id={event.id}", f"source={event.source}"]
    if event.subject:
        parts.append(f"subject={event.subject}")
    model = event.lineage.modelname or getattr(event.data, "model", None)
    version = event.lineage.modelversion or getattr(event.data, "version", None)
    if model:
        parts.append(f"model={model}")
    if version:
        parts.append(f"version={version}")
    key, detail = describe(event.data)
    parts.append(f"| {key}: {detail}")
    return _one_line("  ".join(parts))


@click.command("event-display")
@click.option("--host", default="127.0.0.1", show_default=True, help="address to bind")
@click.option(
    "--port", type=click.IntRange(1, 65535), default=8099, show_default=True, help="HTTP port"
)
@click.option(
    "--json",
    "as_json",
    is_flag=True,
    help="one JSON object per line: the CloudEvent attributes plus data",
)
@click.option(
    "--count",
    metavar="N",
    type=click.IntRange(min=1),
    default=None,
    help="exit 0 after N events (default: run until Ctrl-C)",
)
@click.pass_context
@one_line_errors
def event_display(
    ctx: click.Context, host: str, port: int, as_json: bool, count: int | None
) -> None:
    """Receive CloudEvents over HTTP and print each one: a sink for debugging K_SINK.

    Accepts binary and structured mode; answers 202 for a valid weir event and
    400 with the reason for anything else (WEIR_EVENTS__MAX_BYTES bounds the
    size). Try it with `K_SINK=http://127.0.0.1:8099 weir egress`.
    """
    from streams.servers.event_display import EventDisplay, run_event_display

    settings = _settings(ctx)

    def show(event: Event[Any]) -> None:
        sys.stdout.write((json_line(event) if as_json else readable_line(event)) + "\n")
        sys.stdout.flush()

    def reject(reason: str) -> None:
        err_console.print(f"[yellow]rejected[/] {escape(_one_line(reason))}", soft_wrap=True)

    display = EventDisplay(show, count=count, max_bytes=settings.events.max_bytes, reject=reject)
    until = f"exits after {_events(count)}" if count else "Ctrl-C to stop"

    def listening(url: str) -> None:
        err_console.print(f"[dim]event-display listening on {url} ({until})[/]", soft_wrap=True)

    with contextlib.suppress(KeyboardInterrupt):  # Ctrl-C: stop quietly, show the summary
        run_event_display(display, host=host, port=port, listening=listening)
    err_console.print(f"[dim]{_events(display.shown)} shown[/]")

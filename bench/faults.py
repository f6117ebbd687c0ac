"""The fault suite: one real fault per scenario, measured from the real topics.

Runs on a private stack (Kafka on 127.0.0.1:19092, MinIO on :19000, state in
/tmp/weir-faults-stack; ``bench/fault_stack.py``) so it never disturbs the
shared one. Setup (not measured): bench/_shared.py's logistic regression is
published to the private MinIO and served by one ``kserve.ModelServer`` (V2).
Each scenario has topics of its own (``faults-<name>.*``), starts its own
workers (``weir worker`` for every role, or weir's supervisor over the roles
the fault needs, or single ``weir worker --role scoring`` processes), streams
records at a steady rate, performs one fault and measures:

* sent: messages Kafka acknowledged; scored: distinct record ids with a
  prediction; dead-lettered: distinct messages with a dead letter; missing:
  sent, and neither; dupes: extra predictions of one record id;
* restarts: role exits the supervisor saw (a crash loop is more than one for
  one fault); alive: every worker process (and role) runs at the end;
* stall: the longest stretch with no prediction from the moment the fault
  began (prediction times are their Kafka timestamps); max wait: the longest
  any message waited for its prediction or dead letter.

Every wait is bounded by the scenario's deadline: a stuck product gives a
FAIL row with the figures measured so far, never a hang.

    PYTHONPATH=. .venv/bin/python bench/faults.py [--only NAME ...] [--records N]
        [--markdown PATH]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from _shared import machine_line, publish_model
from fault_case import MODEL, Row, Suite, run_case
from fault_inputs import SCENARIOS  # fault_scenarios' table, the input scenarios added
from fault_report import print_table, write_markdown
from fault_stack import PrivateStack, private_settings
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from connectors.process import free_port
from streams.servers.deployers import serve
from streams.servers.model_server import server_process


@dataclass(frozen=True)
class Args:
    only: list[str]
    records: int
    markdown: Path | None


def parse_args(argv: list[str] | None = None) -> Args:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--only", nargs="+", default=[], metavar="NAME", help="run these scenarios only"
    )
    parser.add_argument(
        "--records", type=int, default=600, help="records per scenario at least (default 600)"
    )
    parser.add_argument("--markdown", type=Path, help="also write the table here, as markdown")
    a = parser.parse_args(argv)
    unknown = sorted(set(a.only) - set(SCENARIOS))
    if unknown:
        parser.error(f"unknown scenarios {unknown}; choose from: {', '.join(SCENARIOS)}")
    return Args(a.only, a.records, a.markdown)


def start_suite(console: Console, records: int, say: Callable[[str], None]) -> Suite:
    settings = private_settings()
    stack = PrivateStack(settings, say)
    say("starting the private stack (Kafka :19092, MinIO :19000)")
    stack.up()
    for version in ("1", "2"):  # routes must name registry versions (the canary scenario: v2)
        publish_model(settings, MODEL, version)
    port = free_port()
    say(f"serving {MODEL} v1 (kserve.ModelServer, V2) on :{port}")
    serve(settings, MODEL, "1", port)
    return Suite(
        settings=settings,
        stack=stack,
        model_url=f"http://127.0.0.1:{port}",
        model_server=server_process(settings, MODEL, "1", port),
        records=records,
        say=say,
    )


def run(args: Args, console: Console) -> list[Row]:
    names = args.only or list(SCENARIOS)
    rows: list[Row] = []
    columns = (
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
    )
    with Progress(*columns, console=console, transient=False) as progress:
        say = progress.console.log
        task = progress.add_task("private stack", total=len(names))
        suite = start_suite(console, args.records, say)
        try:
            for name in names:
                scenario = SCENARIOS[name]
                progress.update(task, description=name)
                row = run_case(suite, name, scenario.deadline_s, scenario.body)
                rows.append(row)
                verdict = "[green]ok[/]" if row.ok else "[red]FAIL[/]"
                say(f"{name}: {verdict} in {row.seconds:.0f}s {'; '.join(row.failures)[:200]}")
                progress.advance(task)
        finally:
            progress.update(task, description="stopping the private stack")
            suite.model_server.stop()
            suite.stack.down()
    return rows


def main() -> None:
    args = parse_args()
    console = Console(width=None if sys.stdout.isatty() else 200)
    console.rule("weir fault suite")
    started = time.monotonic()
    rows = run(args, console)
    total = time.monotonic() - started
    settings = private_settings()
    footer = f"{len(rows)} scenarios in {total / 60:.1f} min; {machine_line(settings)}"
    print_table(console, rows, footer)
    if args.markdown:
        expects = {name: s.expects for name, s in SCENARIOS.items()}
        command = "PYTHONPATH=. python " + " ".join(["bench/faults.py", *sys.argv[1:]])
        write_markdown(args.markdown, rows, footer, expects, command)
        console.print(f"markdown: {args.markdown}")
    raw = settings.stack.run_dir / "faults.json"
    raw.write_text(json.dumps([row_dict(r) for r in rows], indent=1, default=str))
    sys.exit(0 if all(r.ok for r in rows) else 1)


def row_dict(row: Row) -> dict[str, object]:
    return {
        "name": row.name,
        "ok": row.ok,
        "figures": row.figures.__dict__,
        "restarts": row.restarts,
        "alive": row.alive,
        "measured": row.measured,
        "failures": row.failures,
        "notes": row.notes,
        "seconds": row.seconds,
    }


if __name__ == "__main__":
    main()

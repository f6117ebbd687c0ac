"""The fault suite's one table: printed with rich, and written as markdown."""

from __future__ import annotations

from pathlib import Path

from fault_case import Row
from rich.console import Console
from rich.table import Table

COLUMNS = (
    "scenario",
    "sent",
    "scored",
    "dead-lettered",
    "missing",
    "dupes",
    "restarts",
    "alive",
    "stall s",
    "max wait s",
    "measured",
    "verdict",
    "note",
)


NOTE_CHARS = 240  # the whole of every failure is in faults.json


def _num(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f}"


def cells(row: Row) -> list[str]:
    f = row.figures
    dead = str(f.dead) + (f" (+{f.dead_dupes} again)" if f.dead_dupes else "")
    note = "; ".join(row.failures[:3] + row.notes)
    if len(note) > NOTE_CHARS:
        note = note[: NOTE_CHARS - 1] + "…"
    return [
        row.name,
        str(f.sent),
        str(f.scored),
        dead,
        str(f.missing),
        str(f.dupes),
        "-" if row.restarts is None else str(row.restarts),
        "-" if row.alive is None else ("yes" if row.alive else "NO"),
        _num(f.stall_s),
        _num(f.max_wait_s),
        row.measured or "-",
        "ok" if row.ok else "FAIL",
        note,
    ]


def print_table(console: Console, rows: list[Row], footer: str) -> None:
    table = Table(*COLUMNS, title="weir under faults", caption=footer, show_lines=True)
    for row in rows:
        c = cells(row)
        c[11] = "[green]ok[/]" if row.ok else "[bold red]FAIL[/]"
        table.add_row(*c)
    console.print(table)


def write_markdown(
    path: Path, rows: list[Row], footer: str, expects: dict[str, str], command: str
) -> None:
    def line(values: list[str]) -> str:
        return "| " + " | ".join(v.replace("|", "\\|").replace("\n", " ") for v in values) + " |"

    out = [
        "# weir under faults",
        "",
        line(list(COLUMNS)),
        line(["---"] * len(COLUMNS)),
        *(line(cells(r)) for r in rows),
        "",
        footer,
        "",
        f"Command: `{command}`. Every failure in full, and the figures, are in",
        "`faults.json` under the suite's state directory (/tmp/weir-faults-stack).",
        "",
        "## What each scenario expects",
        "",
        line(["scenario", "ok when"]),
        line(["---", "---"]),
        *(line([r.name, expects.get(r.name, "")]) for r in rows),
        "",
    ]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(out))

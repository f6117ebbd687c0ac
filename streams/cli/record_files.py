"""Input files for ``weir produce``: the rows of a CSV or JSON Lines file as InputRecords,
or as BadRows (line number and reason) when a row cannot become one."""

from __future__ import annotations

import csv
import json
import math
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import click
from pydantic import ValidationError

from schemas import InputRecord


@dataclass(frozen=True)
class BadRow:
    """An input row that could not become a record: its line number and why."""

    line: int
    reason: str


def _number(value: object) -> float | None:
    """A finite number from a CSV cell or a JSON value, else None (booleans are not numbers)."""
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        return None
    try:
        number = float(value.strip() if isinstance(value, str) else value)
    except (ValueError, OverflowError):
        return None
    return number if math.isfinite(number) else None


def _reject_constant(name: str) -> float:
    raise ValueError(f"{name} is not a number weir accepts")


class RecordFile:
    """The rows of a CSV (with a header) or JSON Lines file, as InputRecords or BadRows.

    The features are the columns given, or else the numeric columns (other than
    the id and key) of the first readable row; every row must then hold a finite
    number in each of them. Rows without an id get ``<file stem>-<run>-<line>``.
    """

    def __init__(
        self,
        path: Path,
        *,
        fmt: Literal["csv", "jsonl"] | None,
        id_field: str,
        key_field: str | None,
        features: tuple[str, ...] | None,
    ) -> None:
        self.path = path
        self.fmt = fmt or self._guess(path)
        self.id_field = id_field
        self.key_field = key_field
        self.features = features
        self._id_prefix = f"{path.stem}-{uuid.uuid4().hex[:6]}"

    @staticmethod
    def _guess(path: Path) -> Literal["csv", "jsonl"]:
        suffix = path.suffix.lower()
        if suffix in (".csv", ".jsonl", ".ndjson", ".json"):
            return "csv" if suffix == ".csv" else "jsonl"
        with path.open("rb") as f:
            return "jsonl" if f.read(4096).lstrip().startswith(b"{") else "csv"

    def count_rows(self) -> int:
        """Non-blank lines after the header (the progress bar's total)."""
        with self.path.open("rb") as f:
            lines = sum(1 for line in f if line.strip())
        return max(0, lines - (1 if self.fmt == "csv" else 0))

    def __iter__(self) -> Iterator[InputRecord | BadRow]:
        return self._csv_rows() if self.fmt == "csv" else self._json_rows()

    def _json_rows(self) -> Iterator[InputRecord | BadRow]:
        with self.path.open(encoding="utf-8", errors="replace") as f:
            for line, text in enumerate(f, start=1):
                if not text.strip():
                    continue
                try:
                    row = json.loads(text, parse_constant=_reject_constant)
                except (ValueError, RecursionError) as err:
                    yield BadRow(line, f"not valid JSON: {err}")
                    continue
                if not isinstance(row, dict):
                    yield BadRow(line, f"expected a JSON object, got {type(row).__name__}")
                    continue
                yield self._record(line, row)

    def _csv_rows(self) -> Iterator[InputRecord | BadRow]:
        with self.path.open(encoding="utf-8", errors="replace", newline="") as f:
            reader = csv.DictReader(f)
            header = reader.fieldnames
            if not header:
                raise click.BadParameter(f"{self.path} has no header line", param_hint="--file")
            if self.key_field is not None and self.key_field not in header:
                raise click.BadParameter(
                    f"{self.path} has no column {self.key_field!r} (columns: {', '.join(header)})",
                    param_hint="--key-field",
                )
            while True:
                try:
                    row = next(reader)
                except StopIteration:
                    return
                except csv.Error as err:
                    yield BadRow(reader.line_num, f"not valid CSV: {err}")
                    continue
                fields = sum(v is not None for k, v in row.items() if k is not None)
                fields += len(row.get(None) or ())
                if fields != len(header):
                    yield BadRow(reader.line_num, f"{fields} fields, the header has {len(header)}")
                    continue
                yield self._record(reader.line_num, row)

    def _record(self, line: int, row: dict[str, Any]) -> InputRecord | BadRow:
        present = {k: v for k, v in row.items() if v is not None and v != ""}
        if self.features is None:
            skip = (self.id_field, self.key_field)
            numeric = tuple(
                k for k, v in present.items() if k not in skip and _number(v) is not None
            )
            if not numeric:
                return BadRow(line, "no numeric column to use as a feature")
            self.features = numeric
        values: dict[str, float] = {}
        for name in self.features:
            number = _number(present.get(name))
            if number is None:
                shown = repr(present[name])[:40] if name in present else "missing"
                return BadRow(line, f"feature {name} is not a finite number: {shown}")
            values[name] = number
        record_id = present.get(self.id_field, f"{self._id_prefix}-{line}")
        entity = present.get(self.key_field) if self.key_field else None
        if self.key_field and entity is None:
            return BadRow(line, f"key {self.key_field} is missing")
        for what, value in (("id", record_id), ("key", entity)):
            if isinstance(value, bool) or not isinstance(value, str | int | None):
                return BadRow(line, f"{what} must be a string or an integer, not {value!r:.40}")
        try:
            return InputRecord(
                id=str(record_id), features=values, entity=None if entity is None else str(entity)
            )
        except ValidationError as err:
            problems = "; ".join(
                f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in err.errors()[:3]
            )
            return BadRow(line, problems)

"""The training-data archive in MinIO, written by the stream and read by retraining.

Layout (bucket ``WEIR_MINIO__DATA_BUCKET``)::

    training/{model}/{UTC time, sortable}-{writer}-{seq:06d}-n{rows}.jsonl

Each object is JSON Lines of :class:`~schemas.training.TrainingRow`. Object
names sort chronologically (by when they were written), so the most recent
window is read from the end, and carry their row count. A row's ``time`` is
when its label was given: "rows since" an alert counts by that, on the data's
clock (:func:`rows_since`).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import UTC, datetime, timedelta

from connectors.minio_store import ObjectStore
from schemas.events import as_utc
from schemas.training import TrainingRow

STAMP = "%Y%m%dT%H%M%S.%f"


def prefix(model: str) -> str:
    return f"training/{model}/"


def write_chunk(
    store: ObjectStore,
    bucket: str,
    model: str,
    rows: Sequence[TrainingRow],
    *,
    writer: str,
    seq: int,
    at: datetime,
) -> str:
    """Store ``rows`` as one JSONL object; returns its URI."""
    body = "".join(row.model_dump_json() + "\n" for row in rows).encode()
    stamp = at.strftime(STAMP)
    key = f"{prefix(model)}{stamp}-{writer}-{seq:06d}-n{len(rows)}.jsonl"
    return store.put_bytes(bucket, key, body, "application/x-ndjson")


def read_window(store: ObjectStore, bucket: str, model: str, max_rows: int) -> list[TrainingRow]:
    """The newest ``max_rows`` archived rows of ``model``, oldest first."""
    keys = sorted(store.list_keys(bucket, prefix(model)))
    chunks: list[list[TrainingRow]] = []
    total = 0
    for key in reversed(keys):
        rows = read_chunk(store, bucket, key)
        chunks.append(rows)
        total += len(rows)
        if total >= max_rows:
            break
    ordered = [row for chunk in reversed(chunks) for row in chunk]
    return ordered[-max_rows:]


def read_chunk(store: ObjectStore, bucket: str, key: str) -> list[TrainingRow]:
    lines = store.get_bytes(bucket, key).decode().splitlines()
    return [TrainingRow.model_validate_json(line) for line in lines if line.strip()]


def labelled_since(rows: Iterable[TrainingRow], start: datetime) -> list[TrainingRow]:
    """The rows labelled at or after ``start``; archived times without an offset are UTC."""
    start = as_utc(start)
    return [row for row in rows if as_utc(row.time) >= start]


# how far the clock of the role that archives may be behind the clock a label was given by
CLOCK_SLACK = timedelta(minutes=5)


def rows_since(
    store: ObjectStore,
    bucket: str,
    model: str,
    since: datetime,
    *,
    counted: dict[str, int] | None = None,
) -> int:
    """How many archived rows of ``model`` were labelled at or after ``since`` (each row's
    ``time``, its label's: the data's clock).

    A row is archived after its label is given, so only chunks written from
    ``since`` on (less :data:`CLOCK_SLACK`) are read. A chunk's rows can be much
    older than the chunk when the feedback role runs behind: they are counted by
    their own time, never by when they were written. Chunks never change; a caller
    that counts again passes the same ``counted`` and each chunk is read once.
    """
    counted = {} if counted is None else counted
    start = as_utc(since) - CLOCK_SLACK
    total = 0
    for key in store.list_keys(bucket, prefix(model)):
        if key not in counted:
            written = _written(key, model)
            if written is None or written < start:
                continue
            counted[key] = len(labelled_since(read_chunk(store, bucket, key), since))
        total += counted[key]
    return total


def _written(key: str, model: str) -> datetime | None:
    """When the chunk ``key`` was written, from its name (None: not a chunk's name)."""
    stamp = key.removeprefix(prefix(model)).partition("-")[0]
    try:
        return datetime.strptime(stamp, STAMP).replace(tzinfo=UTC)
    except ValueError:
        return None

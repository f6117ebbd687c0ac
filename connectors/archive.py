"""The training-data archive in MinIO, written by the stream and read by retraining.

Layout (bucket ``WEIR_MINIO__DATA_BUCKET``)::

    training/{model}/{UTC time, sortable}-{writer}-{seq:06d}-n{rows}.jsonl

Each object is JSON Lines of :class:`~schemas.training.TrainingRow`. Object
names sort chronologically, so the most recent window is read from the end,
and carry their row count, so rows can be counted from a listing alone.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime

from connectors.minio_store import ObjectStore
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
        lines = store.get_bytes(bucket, key).decode().splitlines()
        rows = [TrainingRow.model_validate_json(line) for line in lines if line.strip()]
        chunks.append(rows)
        total += len(rows)
        if total >= max_rows:
            break
    ordered = [row for chunk in reversed(chunks) for row in chunk]
    return ordered[-max_rows:]


def rows_since(store: ObjectStore, bucket: str, model: str, since: datetime) -> int:
    """How many rows of ``model`` were archived in chunks written at or after ``since``.

    Counted from the object names alone (chunks named before row counts were
    part of the name count as 0).
    """
    total = 0
    for key in store.list_keys(bucket, prefix(model)):
        name = key.removeprefix(prefix(model)).removesuffix(".jsonl")
        stamp, _, rest = name.partition("-")
        written = datetime.strptime(stamp, STAMP).replace(tzinfo=UTC)
        count = rest.rpartition("-n")[2]
        if written >= since and count.isdigit():
            total += int(count)
    return total

"""The training-data archive writer: buffered, bounded, and patient with MinIO.

The feedback agent hands joined rows to :meth:`ArchiveWriter.add` and goes on;
a task of the feedback role flushes the buffer to MinIO
(:func:`connectors.archive.write_chunk`, in a thread) every
``WEIR_MONITOR__ARCHIVE_INTERVAL_S`` in chunks of ``archive_chunk_rows``.
When MinIO is away the rows stay buffered and the flush is retried with
exponential backoff (one warning per outage, not per try); the buffer holds
at most ``archive_buffer_rows`` and then drops the oldest rows, counted.
Nothing here can stop or slow the agent that feeds it.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Awaitable, Callable
from datetime import datetime

from connectors.archive import write_chunk
from connectors.minio_store import ObjectStore
from schemas.events import Clock, utc_now
from schemas.settings import Settings
from schemas.training import TrainingRow

log = logging.getLogger("weir.archive")

BACKOFF_MAX_S = 30.0


class ArchiveWriter:
    def __init__(
        self,
        settings: Settings,
        *,
        store: ObjectStore | None = None,
        now: Clock = utc_now,
        write: Callable[..., str] = write_chunk,
    ) -> None:
        self._settings = settings
        self._store = store or ObjectStore(settings.minio)
        self._now = now
        self._write = write
        self.buffer: deque[TrainingRow] = deque()
        self.archived = 0
        self.dropped = 0
        self.failures = 0
        self._seq = 0
        self._outage_since: datetime | None = None
        self._flushing = asyncio.Lock()

    def add(self, rows: list[TrainingRow]) -> None:
        self.buffer.extend(rows)
        limit = self._settings.monitor.archive_buffer_rows
        while len(self.buffer) > limit:
            self.buffer.popleft()
            self.dropped += 1

    async def flush(self) -> bool:
        """Write every buffered row; False (rows kept) when MinIO did not take them.

        One flush at a time (the timer and the shutdown hook may both call it):
        a second caller waits for the first, then writes whatever is left.
        """
        async with self._flushing:
            return await self._flush()

    async def _flush(self) -> bool:
        m, minio = self._settings.monitor, self._settings.minio
        while self.buffer:
            rows = [self.buffer[i] for i in range(min(m.archive_chunk_rows, len(self.buffer)))]
            self._seq += 1
            try:
                uri = await asyncio.to_thread(
                    self._write,
                    self._store,
                    minio.data_bucket,
                    self._settings.scoring.model,
                    rows,
                    writer=self._settings.scoring.worker_id,
                    seq=self._seq,
                    at=self._now(),
                )
            except Exception as err:  # MinIO away or failing: keep the rows, retry later
                self.failures += 1
                if self._outage_since is None:
                    self._outage_since = self._now()
                    log.warning(
                        "archive paused, MinIO at %s did not take %d rows (%s); "
                        "%d rows buffered, retrying with backoff",
                        minio.endpoint,
                        len(rows),
                        err,
                        len(self.buffer),
                    )
                return False
            for _ in rows:
                self.buffer.popleft()
            self.archived += len(rows)
            if self._outage_since is not None:
                log.warning(
                    "archive resumed after an outage since %s", self._outage_since.isoformat()
                )
                self._outage_since = None
            log.info("archived %d training rows to %s", len(rows), uri)
        return True

    async def run(self, sleep: Callable[[float], Awaitable[None]] = asyncio.sleep) -> None:
        """Flush forever: every interval while MinIO answers, with backoff while not."""
        interval = self._settings.monitor.archive_interval_s
        delay = interval
        while True:
            await sleep(delay)
            ok = await self.flush()
            delay = interval if ok else min(max(delay * 2, interval), BACKOFF_MAX_S)

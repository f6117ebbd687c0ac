"""Shadow mirroring: the scoring role's batches sent to the model's shadow route as well.

A shadow route (``weir models publish … --action shadow``) gets a copy of every
batch the scoring role scores, in a task of its own: the active path neither
waits for it nor fails with it. At most ``WEIR_SCORING__SHADOW_IN_FLIGHT``
shadow calls run at once; a batch that finds them all busy is not mirrored
(counted in ``skipped``), so a slow or dead shadow costs the active path a task
creation, nothing more. Each call gets one try, bounded by
``WEIR_KSERVE__TIMEOUT_S``; a failed one is counted, logged and dropped.

Shadow predictions go to the predictions topic with ``shadow: true`` and the
same record ids; they are best-effort (not tied to the records' offsets), and
the feedback role does not join them as served predictions.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Sequence

from pydantic import ValidationError

from agents.predictions import prediction_of, route_lineage, route_rows
from agents.routing import Route, RoutingTable
from connectors.kserve_client import InferenceClient
from schemas import Event, InputRecord, Prediction, new_event
from schemas.events import Clock, utc_now
from schemas.settings import Settings

log = logging.getLogger("weir.shadow")

Emit = Callable[[list[Event[Prediction]]], None]


class ShadowMirror:
    def __init__(
        self,
        settings: Settings,
        routing: RoutingTable,
        client: InferenceClient,
        emit: Emit,
        *,
        now: Clock = utc_now,
    ) -> None:
        self._settings = settings
        self._routing = routing
        self._client = client
        self._emit = emit
        self._now = now
        self._tasks: set[asyncio.Task[None]] = set()
        self.mirrored = 0  # shadow predictions emitted
        self.failed = 0  # records whose shadow call failed or timed out
        self.skipped = 0  # records not mirrored: every shadow call slot was busy

    def mirror(self, records: Sequence[Event[InputRecord]]) -> None:
        """Send ``records`` to the shadow route, if the model has one, without waiting."""
        shadow = self._routing.get(self._settings.scoring.model).shadow
        if shadow is None or not records:
            return
        if len(self._tasks) >= self._settings.scoring.shadow_in_flight:
            self.skipped += len(records)
            log.warning(
                "shadow %s %s busy (%d calls in flight): %d records not mirrored, %d so far",
                shadow.model,
                shadow.version,
                len(self._tasks),
                len(records),
                self.skipped,
            )
            return
        task = asyncio.get_running_loop().create_task(self._call(shadow, list(records)))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _call(self, route: Route, records: list[Event[InputRecord]]) -> None:
        fitting, rows = [], []
        fitted = route_rows(route, [record.data.features for record in records])
        for record, row in zip(records, fitted, strict=True):
            if isinstance(row, ValueError):
                self.failed += 1  # the active path dead-letters or scores it; not ours
            else:
                rows.append(row)
                fitting.append(record)
        if not fitting:
            return
        try:
            result = await asyncio.wait_for(
                self._client.predict(route.url, route.model, route.protocol, rows, attempts=1),
                self._settings.kserve.timeout_s,
            )
        except Exception as err:  # a shadow never fails anything (cancelling is not an Exception)
            self.failed += len(fitting)
            log.warning(
                "shadow %s %s: %s; %d records not mirrored",
                route.model,
                route.version,
                err,
                len(fitting),
            )
            return
        at, lineage, source = self._now(), route_lineage(route), self._settings.events.source
        out = []
        for i, record in enumerate(fitting):
            try:
                prediction = prediction_of(route, record.data.id, result, i, shadow=True)
            except ValidationError:
                self.failed += 1
                continue
            out.append(new_event(prediction, source=source, now=lambda: at, lineage=lineage))
        self.mirrored += len(out)
        self._emit(out)

    async def close(self) -> None:
        """Stop the shadow calls still running."""
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

"""The feedback role: predictions ⨝ labels → outcomes; features ⨝ labels → training rows.

Records, predictions and labels share their Kafka key (the record id), so with
equal partition counts one feedback process sees all three for a record
(:class:`agents.feedback.FeedbackJoiner`). Each join that completes becomes

* an :class:`~schemas.Outcome` event on ``outcomes``, keyed by model — the
  performance role reads them, one detector per model over every scoring
  worker's predictions;
* a training row for the archive (:class:`~streams.roles.archive.ArchiveWriter`),
  written to MinIO off this agent's path, buffered while MinIO is away.

Bad labels are dead-lettered here (no other role reads them). The three
topics are read in batches through librdkafka
(:mod:`streams.roles.batches`): Faust's per-event machinery was 60 % of this
role's CPU. The join window is checkpointed (:mod:`streams.roles.state`).
"""

from __future__ import annotations

import logging

from agents.feedback import FeedbackJoiner, JoinResult
from schemas import InputRecord, Label, Lineage, Prediction, RawMessage, new_event
from schemas.events import utc_now
from schemas.topics import Topic
from streams.context import RoleContext
from streams.roles.archive import ArchiveWriter
from streams.roles.batches import attach_batches
from streams.roles.decode import Letters
from streams.roles.state import attach_state

log = logging.getLogger("weir.feedback")

BATCH_SIZE = 500  # events per read; feedback is not latency-bound
BATCH_WAIT_S = 0.1


def attach_feedback(ctx: RoleContext) -> None:
    settings, model = ctx.settings, ctx.settings.scoring.model
    learning = settings.learner.enabled
    joiner = FeedbackJoiner(window=settings.monitor.join_window, with_features=learning)
    archive = ArchiveWriter(settings)
    state = {"joiner": joiner}

    def restore(saved: FeedbackJoiner) -> None:
        saved.with_features = learning  # the settings of this run decide, not the checkpoint's
        state.update(joiner=saved)

    restored = attach_state(ctx, "join", lambda: state["joiner"], restore, marks_ready=True)

    @ctx.app.task
    async def archive_rows() -> None:
        await archive.run()

    ctx.on_shutdown(archive.flush)
    letters = Letters(ctx, {Topic.LABELS: Label})  # labels are read by this role alone

    async def handle(batch: list[RawMessage]) -> None:
        source, outcomes = settings.events.source, []
        for found in letters.decode_batch(batch):
            if found is None:
                continue
            data, join = found.data, state["joiner"]
            result: JoinResult
            if isinstance(data, InputRecord):
                result = join.on_record(data)
            elif isinstance(data, Prediction) and data.model == model:
                result = join.on_prediction(data)
            elif isinstance(data, Label):
                result = join.on_label(data, found.time or utc_now())
            else:
                continue
            archive.add(result.training_rows)
            outcomes.extend(result.outcomes)
        if outcomes:
            lineage = [Lineage(modelname=o.model, modelversion=o.version) for o in outcomes]
            ctx.send_nowait(
                [
                    (Topic.OUTCOMES, new_event(o, source=source, lineage=line))
                    for o, line in zip(outcomes, lineage, strict=True)
                ]
            )
        await letters.send()  # before the batch's offsets are stored

    attach_batches(
        ctx,
        (Topic.RECORDS, Topic.PREDICTIONS, Topic.LABELS),
        handle,
        size=BATCH_SIZE,
        wait_s=BATCH_WAIT_S,
        after=restored,
    )

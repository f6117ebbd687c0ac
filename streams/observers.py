"""Faust glue for the observing agents: drift and outliers, feedback, retraining.

* **monitor** (records): a river drift detector per input feature and a
  HalfSpaceTrees outlier scorer → drift and outlier alerts;
* **feedback** (records, predictions, labels — co-partitioned by record id):
  joins labels with predictions (live accuracy per version and a drift
  detector on the error stream → performance alerts; a drift detector on the
  prediction values → drift alerts) and with features (training rows, archived
  to MinIO in chunks for the retraining pipeline);
* **retraining** (alerts): dedupe, cooldown, one run per model at a time; runs
  the Kubeflow pipeline, deploys and activates the new version.

The detectors are per worker: with several workers each watches the partitions
it owns, a sample of the stream. These agents use Faust's automatic acks: an
alert or an archived row lost in a crash is not re-derived (monitoring is
best-effort; the scoring path is the one with the at-least-once guarantee).
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from typing import TYPE_CHECKING, Any

from agents.detectors import DriftSignal, ErrorRateMonitor, OutlierScorer, StreamDriftMonitor
from agents.feedback import FeedbackJoiner, JoinResult
from agents.retraining import Retrainer
from connectors.archive import write_chunk
from connectors.minio_store import ObjectStore
from schemas import (
    DriftAlert,
    EventDecodeError,
    InputRecord,
    Label,
    Lineage,
    OutlierAlert,
    PerformanceAlert,
    Prediction,
    decode_raw,
    new_event,
)
from schemas.events import utc_now
from schemas.topics import Topic, topic_name
from schemas.training import TrainingRow
from streams.servers.deployers import deployer_for

if TYPE_CHECKING:
    from streams.worker import Wiring

log = logging.getLogger("weir.observers")


def _decode(w: Wiring, message: Any) -> Any:
    from streams.worker import raw_message

    try:
        return decode_raw(raw_message(message), max_bytes=w.settings.events.max_bytes)
    except EventDecodeError:
        return None  # the scoring agent dead-letters bad records; observers skip them


def attach_observers(w: Wiring) -> None:
    _attach_monitor(w)
    _attach_feedback(w)
    if w.settings.retraining.enabled:
        _attach_retraining(w)


async def _send_alerts(w: Wiring, alerts: list[Any]) -> None:
    """Send alerts about the worker's model to the alerts topic and show them live."""
    source, lineage = w.settings.events.source, Lineage(modelname=w.settings.scoring.model)
    events = [new_event(a, source=source, lineage=lineage) for a in alerts]
    await w.send_all([(Topic.ALERTS, e) for e in events])
    for event in events:
        w.state.live.record_event(event)


def _alert_id() -> str:
    return f"alert-{uuid.uuid4().hex[:12]}"


def _drift_alert(model: str, signal: DriftSignal, version: str | None = None) -> DriftAlert:
    return DriftAlert(
        alert_id=_alert_id(),
        model=model,
        version=version,
        stream=signal.stream,
        detector=signal.detector,
        records_seen=signal.records_seen,
        mean_before=signal.mean_before,
        mean_after=signal.mean_after,
    )


def _attach_monitor(w: Wiring) -> None:
    m, model = w.settings.monitor, w.settings.scoring.model
    drift = StreamDriftMonitor(kind=m.drift_detector, cooldown=m.drift_cooldown)
    outliers = OutlierScorer(threshold=m.outlier_threshold)

    @w.app.agent(w.topics[Topic.RECORDS])
    async def monitor(stream: Any) -> None:
        async for event in stream.events():
            decoded = _decode(w, event.message)
            if decoded is None or not isinstance(decoded.data, InputRecord):
                continue
            record: InputRecord = decoded.data
            alerts: list[Any] = []
            for name, value in record.features.items():
                signal = drift.update(name, value)
                if signal is not None:
                    alerts.append(_drift_alert(model, signal))
            found = outliers.check(record.id, record.features)
            if found is not None:
                alerts.append(
                    OutlierAlert(
                        alert_id=_alert_id(),
                        model=model,
                        record_id=record.id,
                        score=found.score,
                        threshold=found.threshold,
                    )
                )
            if alerts:
                await _send_alerts(w, alerts)


def _attach_feedback(w: Wiring) -> None:
    m, model = w.settings.monitor, w.settings.scoring.model
    joiner = FeedbackJoiner(window=m.join_window)
    errors = ErrorRateMonitor(
        kind=m.performance_detector, window=m.performance_window, cooldown=m.performance_cooldown
    )
    prediction_drift = StreamDriftMonitor(kind=m.drift_detector, cooldown=m.drift_cooldown)
    store = ObjectStore(w.settings.minio)
    buffer: list[TrainingRow] = []
    seq = 0
    channel = w.app.topic(
        *(
            topic_name(w.settings.kafka, t)
            for t in (Topic.RECORDS, Topic.PREDICTIONS, Topic.LABELS)
        ),
        value_type=bytes,
        key_type=bytes,
        value_serializer="raw",
        key_serializer="raw",
    )

    async def flush(force: bool = False) -> None:
        nonlocal seq
        if not buffer or (not force and len(buffer) < m.archive_chunk_rows):
            return
        rows = list(buffer)
        buffer.clear()
        seq += 1
        uri = await asyncio.to_thread(
            write_chunk,
            store,
            w.settings.minio.data_bucket,
            model,
            rows,
            writer=w.settings.scoring.worker_id,
            seq=seq,
            at=utc_now(),
        )
        log.info("archived %d training rows to %s", len(rows), uri)

    async def flush_all() -> None:
        await flush(force=True)

    w.state.flush_archive = flush_all

    @w.app.timer(interval=5.0)
    async def archive_timer() -> None:
        await flush(force=True)

    @w.app.agent(channel)
    async def feedback(stream: Any) -> None:
        async for event in stream.events():
            decoded = _decode(w, event.message)
            if decoded is None:
                continue
            data = decoded.data
            alerts: list[Any] = []
            result: JoinResult
            if isinstance(data, InputRecord):
                result = joiner.on_record(data)
            elif isinstance(data, Prediction) and data.model == model:
                result = joiner.on_prediction(data)
                if isinstance(data.output, int | float):
                    signal = prediction_drift.update("prediction", float(data.output))
                    if signal is not None:
                        alerts.append(_drift_alert(model, signal, version=data.version))
            elif isinstance(data, Label):
                result = joiner.on_label(data, decoded.time or utc_now())
            else:
                continue
            buffer.extend(result.training_rows)
            w.state.labelled_rows += len(result.training_rows)
            for outcome in result.outcomes:
                perf = errors.update(outcome.version, outcome.correct)
                if perf is not None:
                    alerts.append(
                        PerformanceAlert(
                            alert_id=_alert_id(),
                            model=model,
                            version=outcome.version,
                            metric="accuracy",
                            value=perf.accuracy,
                            window=perf.window,
                            detector=perf.detector,
                        )
                    )
            for version in {o.version for o in result.outcomes}:
                w.state.live.record_accuracy(
                    version, errors.accuracy(version), errors.outcomes_seen(version)
                )
            if alerts:
                await _send_alerts(w, alerts)
            await flush()


def _attach_retraining(w: Wiring) -> None:
    async def emit(kind: str, event: Any) -> None:
        topic = Topic.MODELS if kind == "models" else Topic.PIPELINE_RUNS
        await w.send_all([(topic, event)])
        w.state.live.record_event(event)

    async def flush_archive() -> None:
        if w.state.flush_archive is not None:
            await w.state.flush_archive()

    retrainer = Retrainer(
        w.settings,
        w.state.routing,
        deployer_for(w.settings),
        emit,
        labelled_rows=lambda: w.state.labelled_rows,
        flush_archive=flush_archive,
    )

    @w.app.agent(w.topics[Topic.ALERTS])
    async def retraining(stream: Any) -> None:
        async for event in stream.events():
            decoded = _decode(w, event.message)
            if decoded is None or decoded.data.partition_key != w.settings.scoring.model:
                continue
            await retrainer.on_alert(decoded)

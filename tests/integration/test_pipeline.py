"""Real local Kubeflow Pipelines runs of the retraining pipeline against MinIO."""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sklearn.linear_model import LogisticRegression

from connectors.archive import rows_since, write_chunk
from connectors.minio_store import ObjectStore
from connectors.pipeline import RetrainRequest, RetrainResult, run_retrain
from connectors.predictor import predict_batch, rows_from_features
from connectors.registry import ModelRegistry
from schemas.model_card import ModelCard
from schemas.settings import Settings
from schemas.training import TrainingRow
from streams.synthetic import FEATURES, DemoRow, drifting_stream

pytestmark = pytest.mark.integration

T0 = datetime(2026, 1, 1, tzinfo=UTC)
CHUNK = 500


def pipeline_settings(live_stack: Settings, tmp_path: Path) -> Settings:
    kfp = live_stack.kfp.model_copy(update={"pipeline_root": tmp_path / "kfp"})
    return live_stack.model_copy(update={"kfp": kfp})


def archive(
    settings: Settings,
    model: str,
    rows: Sequence[DemoRow],
    served: Callable[[DemoRow], tuple[str, int]] | None = None,
    written: datetime | None = None,
) -> None:
    """Archive ``rows`` in chunks whose object names sort in stream order; ``served`` gives
    each row's served (version, answer), as the feedback role keeps them. A row's label
    time is ``T0`` + its index in seconds; a chunk is written then too, or at ``written``
    (a feedback role running behind)."""
    store = ObjectStore(settings.minio)
    for start in range(0, len(rows), CHUNK):
        chunk = rows[start : start + CHUNK]
        training = [
            TrainingRow(
                record_id=f"r{row.index}",
                features=row.features,
                label=row.label,
                time=T0 + timedelta(seconds=row.index),
                served_version=served(row)[0] if served else None,
                served=served(row)[1] if served else None,
            )
            for row in chunk
        ]
        write_chunk(
            store,
            settings.minio.data_bucket,
            model,
            training,
            writer="test",
            seq=chunk[0].index,
            at=written or T0 + timedelta(seconds=chunk[0].index),
        )


def test_rows_since_an_alert_are_counted_by_their_label_time_however_late_archived(
    live_stack: Settings, unique: str
) -> None:
    """A feedback role minutes behind archives rows labelled long before it writes them. The
    retrainer's count of rows "since the alert" is by label time, as the pipeline's ``fetch``
    chooses them: a count by write time saw 1,200 rows here where the run found none."""
    settings, model = live_stack, f"p{unique}"
    store, bucket = ObjectStore(settings.minio), settings.minio.data_bucket
    late = T0 + timedelta(hours=1)  # every chunk written an hour after its rows' labels
    stream = list(drifting_stream(1500, drift_at=750))
    archive(settings, model, stream[:1000], written=late)
    since = T0 + timedelta(seconds=600)
    counted: dict[str, int] = {}
    assert rows_since(store, bucket, model, since, counted=counted) == 400  # rows 600-999
    assert rows_since(store, bucket, model, late) == 0  # none was labelled after the writes
    assert rows_since(store, bucket, model, T0 + timedelta(hours=2)) == 0

    # chunks are read once: a count that goes on reads only the chunks written since
    assert sorted(counted.values()) == [0, 400]
    archive(settings, model, stream[1000:], written=late + timedelta(seconds=1))
    assert rows_since(store, bucket, model, since, counted=counted) == 900
    assert len(counted) == 3
    # written before the alert (less the clocks' slack): not read at all
    assert rows_since(store, bucket, model, late + timedelta(minutes=6)) == 0


def accuracy_on(
    registry: ModelRegistry, model: str, version: str, rows: Sequence[DemoRow]
) -> float:
    loaded = registry.load(model, version)
    matrix = rows_from_features(loaded.card.features, [row.features for row in rows])
    predicted, _ = predict_batch(loaded, matrix)
    return sum(p == row.label for p, row in zip(predicted, rows, strict=True)) / len(rows)


def test_registers_v1_then_a_better_v2_then_keeps_v2(
    live_stack: Settings, unique: str, tmp_path: Path
) -> None:
    settings = pipeline_settings(live_stack, tmp_path)
    registry = ModelRegistry.for_settings(settings)
    model = f"p{unique}"
    stream = list(drifting_stream(3000, drift_at=1500))
    old_concept, new_concept = stream[:1500], stream[1500:]

    # (a) no current model: the candidate trained on the old concept becomes v1
    archive(settings, model, old_concept)
    first = run_retrain(
        settings,
        RetrainRequest(model=model, run_id=f"run-1-{unique}", current_version=None),
    )
    assert first.status == "succeeded", first.reason
    assert first.version == "1"
    assert first.storage_uri == f"s3://{settings.minio.models_bucket}/{model}/1/"
    assert first.metrics["train_rows"] == 1050  # the window holds all 1500 rows: 70 / 30
    assert first.metrics["holdout_rows"] == 450
    assert "current_accuracy" not in first.metrics
    assert first.metrics["candidate_accuracy"] > 0.85
    card = registry.card(model, "1")
    assert card.framework == "sklearn"
    assert card.features == sorted(FEATURES)
    assert card.classes == [0, 1]
    assert card.training_data == f"s3://{settings.minio.data_bucket}/training/{model}/"
    assert card.training_rows == 1050
    assert card.run_id == f"run-1-{unique}"
    assert card.alert_id is None
    assert card.metrics == first.metrics

    # (b) the concept drifted: a candidate trained on the newest 1500 rows beats v1 on them
    archive(settings, model, new_concept)
    second = run_retrain(
        settings,
        RetrainRequest(
            model=model,
            run_id=f"run-2-{unique}",
            current_version="1",
            alert_id=f"alert-{unique}",
            window_rows=1500,
        ),
    )
    assert second.status == "succeeded", second.reason
    assert second.version == "2"
    candidate, current = second.metrics["candidate_accuracy"], second.metrics["current_accuracy"]
    assert candidate >= current + 0.01
    assert candidate - current > 0.05, second.metrics  # SEA 8 → 9.5: v1 errs on ~13% of inputs
    assert f"{candidate:.4f}" in second.reason and f"{current:.4f}" in second.reason
    # the paired test on the same holdout rows, in the run's metrics and the model card
    assert second.metrics["mcnemar_p"] < 0.001 and "McNemar p" in second.reason
    assert second.metrics["only_candidate_right"] > second.metrics["only_current_right"]
    assert registry.versions(model) == ["1", "2"]
    assert registry.card(model, "2").alert_id == f"alert-{unique}"
    assert registry.card(model, "2").metrics["mcnemar_p"] == second.metrics["mcnemar_p"]
    learner = registry.card(model, "2").learner or {}
    assert learner.get("family") in ("logistic-regression", "hist-gradient-boosting"), learner
    # the reported accuracies are those of the registered models on the held-out rows
    holdout = new_concept[-450:]
    assert accuracy_on(registry, model, "1", holdout) == pytest.approx(current)
    assert accuracy_on(registry, model, "2", holdout) == pytest.approx(candidate)

    # (c) the same rows again (chosen by time this time): the new candidate is no
    # better than v2, so nothing is registered, even with no min_gain: it disagrees
    # with v2 on (almost) no row, and McNemar's test cannot show it better
    third = run_retrain(
        settings,
        RetrainRequest(
            model=model,
            run_id=f"run-3-{unique}",
            current_version="2",
            window_rows=2000,
            min_gain=0.0,
            since=T0 + timedelta(seconds=new_concept[0].index),
        ),
    )
    assert third.status == "not-promoted", third.reason
    assert third.version is None and third.storage_uri is None
    assert (third.metrics["train_rows"], third.metrics["holdout_rows"]) == (1050, 450)
    assert third.metrics["current_accuracy"] == pytest.approx(candidate)
    assert third.metrics["mcnemar_p"] > 0.05 and "is not shown better" in third.reason
    assert f"{third.metrics['candidate_accuracy']:.4f}" in third.reason
    assert f"{third.metrics['current_accuracy']:.4f}" in third.reason
    assert registry.versions(model) == ["1", "2"]


def test_a_learner_snapshot_pruned_during_the_run_is_compared_as_its_newest(
    live_stack: Settings, unique: str, tmp_path: Path
) -> None:
    """The run was asked to beat the learner's snapshot online.1; by the time it evaluates,
    the learner has published online.2 and deleted online.1 (it keeps its newest few).
    The run compares with online.2 and says so, instead of failing on a missing object."""
    settings = pipeline_settings(live_stack, tmp_path)
    registry = ModelRegistry.for_settings(settings)
    model = f"p{unique}"
    stream = list(drifting_stream(3000, drift_at=1500))
    archive(settings, model, stream[1500:])
    old = stream[:1500]
    estimator = LogisticRegression(max_iter=500).fit(
        rows_from_features(sorted(FEATURES), [row.features for row in old]),
        [row.label for row in old],
    )
    card = ModelCard(
        name=model,
        version="online.2",
        framework="sklearn",
        features=sorted(FEATURES),
        classes=[0, 1],
        created_at=T0,
    )
    registry.publish(card, estimator)

    result = run_retrain(
        settings,
        RetrainRequest(model=model, run_id=f"run-{unique}", current_version="online.1"),
    )

    assert result.status in ("succeeded", "not-promoted"), result.reason
    assert "current_accuracy" in result.metrics and "compared_version" not in result.metrics
    assert "version online.2" in result.reason, result.reason
    assert result.metrics["current_accuracy"] == pytest.approx(
        accuracy_on(registry, model, "online.2", stream[-450:])
    )


def test_a_learner_is_judged_by_its_served_answers_not_its_snapshot(
    live_stack: Settings, unique: str, tmp_path: Path
) -> None:
    """A learner's snapshot has learnt the held-out rows by the time a run evaluates; the
    run compares the candidate with what the learner answered when it served them. Here
    it served the truth on every row but each 10th: its served accuracy is 0.9, whatever
    the registry holds (no snapshot is stored at all)."""
    settings = pipeline_settings(live_stack, tmp_path)
    model = f"p{unique}"
    rows = list(drifting_stream(3000, drift_at=1500))[1500:]
    archive(settings, model, rows, served=lambda r: ("online", r.label ^ (r.index % 10 == 0)))

    result = run_retrain(
        settings,
        RetrainRequest(
            model=model, run_id=f"run-{unique}", current_version="online.7", min_gain=0.0
        ),
    )

    held_out = rows[-450:]
    assert result.status in ("succeeded", "not-promoted"), result.reason
    assert result.metrics["current_accuracy"] == pytest.approx(
        sum(r.index % 10 != 0 for r in held_out) / len(held_out)
    )
    assert "version online as served" in result.reason, result.reason
    assert result.metrics["holdout_rows"] == 450 and "compared_rows" not in result.metrics


def test_a_learner_that_served_few_held_out_rows_is_judged_by_what_served_them(
    live_stack: Settings, unique: str, tmp_path: Path
) -> None:
    """Just after a take-over the learner answered 20 of the held-out rows; the run
    compares with what served the held-out rows (version 1 on the rest), on the rows
    with a served answer."""
    settings = pipeline_settings(live_stack, tmp_path)
    model = f"p{unique}"
    rows = list(drifting_stream(3000, drift_at=1500))[1500:]
    last = rows[-1].index
    archive(
        settings,
        model,
        rows,
        served=lambda r: ("online", r.label) if r.index > last - 20 else ("1", 1 - r.label),
    )

    result = run_retrain(
        settings,
        RetrainRequest(model=model, run_id=f"run-{unique}", current_version="online.7"),
    )

    assert result.status == "succeeded", result.reason
    assert "what served these rows (1 on 430, online on 20; online took over since)" in (
        result.reason
    )
    assert result.metrics["current_accuracy"] == pytest.approx(20 / 450)


def test_empty_archive_fails_with_a_reason_using_the_callers_settings(
    live_stack: Settings, unique: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The components must read the caller's settings, not this stray variable
    # (a data bucket that does not exist would fail the run differently).
    monkeypatch.setenv("WEIR_MINIO__DATA_BUCKET", "no-such-bucket")
    settings = pipeline_settings(live_stack, tmp_path)
    model = f"p{unique}"

    result = run_retrain(
        settings, RetrainRequest(model=model, run_id=f"run-{unique}", current_version=None)
    )

    assert result == RetrainResult(
        status="failed",
        version=None,
        metrics={"window_rows": 0.0, "train_rows": 0.0, "holdout_rows": 0.0},
        reason=(
            f"too few rows to retrain {model!r}: 0 usable archived rows under "
            f"s3://{settings.minio.data_bucket}/training/{model}/, need at least 50"
        ),
        storage_uri=None,
    )
    assert os.environ["WEIR_MINIO__DATA_BUCKET"] == "no-such-bucket"  # restored
    registry = ModelRegistry.for_settings(settings)
    assert registry.versions(model) == []


def test_a_failing_step_fails_the_run_with_its_error(
    live_stack: Settings, unique: str, tmp_path: Path
) -> None:
    settings = pipeline_settings(live_stack, tmp_path)
    model = f"p{unique}"
    archive(settings, model, list(drifting_stream(200, drift_at=200)))

    result = run_retrain(
        settings, RetrainRequest(model=model, run_id=f"run-{unique}", current_version="7")
    )

    assert result.status == "failed"
    assert result.version is None
    assert "'evaluate'" in result.reason
    assert f"{model}/7/card.json" in result.reason  # the current version does not exist

"""A model's first version: trained by the pipeline on history, served, ready to activate.

The demo and ``weir models bootstrap`` (the docker-compose ``bootstrap``
service) both start the loop this way: history rows are archived to MinIO as
training data, the Kubeflow pipeline (local runner, or ``WEIR_KFP__HOST``)
trains and registers version 1, a deployer serves it, and the caller publishes
the returned ``activate`` event. A registry that already holds a version is
not trained again: its newest version is served instead.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable, Sequence
from datetime import timedelta

from rich.console import Console

from connectors.archive import write_chunk
from connectors.deployers import Deployer
from connectors.minio_store import ObjectStore
from connectors.registry import ModelRegistry
from schemas import ModelVersionEvent, WeirError
from schemas.events import utc_now
from schemas.settings import Settings
from schemas.training import TrainingRow
from streams.synthetic import DemoRow, drifting_stream


def as_history(rows: Iterable[DemoRow], *, id_prefix: str) -> list[TrainingRow]:
    """Demo rows as archived training rows, dated an hour ago.

    An hour ago, so that rows the workers archive later are the newest ones a
    retraining run picks.
    """
    then = utc_now() - timedelta(hours=1)
    return [
        TrainingRow(
            record_id=f"{id_prefix}{r.index}", features=r.features, label=r.label, time=then
        )
        for r in rows
    ]


def seeded_history(rows: int, *, seed: int) -> list[TrainingRow]:
    """``rows`` labelled rows of the demo's first concept (SEA variant 0), as history."""
    return as_history(drifting_stream(rows, rows, seed=seed), id_prefix=f"h{seed}-")


def train_first_version(
    settings: Settings, model: str, history: Sequence[TrainingRow], *, run_id: str, console: Console
) -> str:
    """Archive ``history`` and run the pipeline; returns the version it registered."""
    from connectors.pipeline import RetrainRequest, run_retrain

    store = ObjectStore(settings.minio)
    then = min(r.time for r in history)
    write_chunk(
        store, settings.minio.data_bucket, model, list(history), writer=run_id, seq=0, at=then
    )
    kfp_log = settings.stack.run_dir / f"kfp-{run_id}.log"
    kfp_log.parent.mkdir(parents=True, exist_ok=True)
    with (
        console.status(f"Kubeflow pipeline: training version 1 of {model} (log: {kfp_log})…"),
        kfp_log.open("w") as log,
        contextlib.redirect_stdout(log),
        contextlib.redirect_stderr(log),
    ):
        result = run_retrain(
            settings,
            RetrainRequest(
                model=model, run_id=run_id, current_version=None, window_rows=len(history)
            ),
        )
    if result.status != "succeeded" or result.version is None:
        raise WeirError(f"the pipeline could not train version 1 of {model}: {result.reason}")
    return result.version


def bootstrap_model(
    settings: Settings,
    model: str,
    history: Sequence[TrainingRow],
    deployer: Deployer,
    *,
    run_id: str,
    console: Console,
) -> tuple[ModelVersionEvent, bool]:
    """Train (unless registered) and serve; the ``activate`` event and whether it trained."""
    registry = ModelRegistry.for_settings(settings)
    versions = registry.versions(model)
    trained = not versions
    if trained:
        version = train_first_version(settings, model, history, run_id=run_id, console=console)
    else:
        version = versions[-1]
    card = registry.card(model, version)
    with console.status(f"serving {model} version {version}…"):
        url = deployer.deploy(model, version)
    change = ModelVersionEvent(
        action="activate",
        model=model,
        version=version,
        url=url,
        protocol="v1",
        storage_uri=registry.uri(model, version),
        features=list(card.features),
        metrics=card.metrics,
        run_id=card.run_id,
    )
    return change, trained

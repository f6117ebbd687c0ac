"""Set-up and clean-up shared by the benchmark scripts: each run has its own topics,
model and state directory, and what a run created is removed again."""

from __future__ import annotations

import contextlib
from pathlib import Path

from connectors.kafka import admin, list_topics
from connectors.minio_store import ObjectStore
from streams.settings import Settings, StackSettings


def delete_groups(settings: Settings, groups: list[str]) -> None:
    if not groups:
        return
    client = admin(settings)  # keep the handle alive until the futures resolve
    for fut in client.delete_consumer_groups(groups, request_timeout=15).values():
        with contextlib.suppress(Exception):  # best effort
            fut.result(timeout=15)


def delete_topics(settings: Settings, prefix: str) -> None:
    names = [t for t in list_topics(settings) if t.startswith(prefix + ".")]
    if names:
        client = admin(settings)
        for fut in client.delete_topics(names, operation_timeout=30).values():
            fut.result(timeout=30)


def delete_models(settings: Settings, model: str) -> None:
    store = ObjectStore(settings.minio)
    bucket = settings.minio.models_bucket
    for key in list(store.list_keys(bucket, f"{model}/")):
        store.delete(bucket, key)


def bench_settings(
    *,
    prefix: str,
    model: str,
    state_dir: Path,
    batch_size: int,
    batch_wait: float,
    partitions: int | None = None,
) -> Settings:
    """Settings of one benchmark run: own topic prefix, model and state dir; no retraining."""
    base = Settings()
    kafka = {"topic_prefix": prefix} | ({"record_partitions": partitions} if partitions else {})
    return base.model_copy(
        update={
            "kafka": base.kafka.model_copy(update=kafka),
            "scoring": base.scoring.model_copy(
                update={"model": model, "batch_size": batch_size, "batch_wait_s": batch_wait}
            ),
            "retraining": base.retraining.model_copy(update={"enabled": False}),
            "stack": StackSettings(cache_dir=base.stack.cache_dir, state_dir=state_dir),
        }
    )

"""Clean-up shared by the benchmark scripts: what a run created is removed again."""

from __future__ import annotations

import contextlib

from connectors.kafka import admin, list_topics
from connectors.minio_store import ObjectStore
from streams.settings import Settings


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

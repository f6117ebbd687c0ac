"""Set-up and clean-up shared by the benchmark scripts: each run has its own topics,
model and state directory, and what a run created is removed again."""

from __future__ import annotations

import contextlib
import os
import sys
import threading
import time
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
from confluent_kafka import TopicPartition
from sklearn.linear_model import LogisticRegression

from connectors.kafka import EventProducer, admin, list_topics
from connectors.kafka import delete_topics as delete_prefixed
from connectors.minio_store import ObjectStore
from connectors.registry import ModelRegistry
from schemas import InputRecord, new_event
from schemas.model_card import ModelCard
from schemas.settings import Settings, StackSettings

FEATURES = [f"x{i}" for i in range(8)]
CLK_TCK = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int | None) -> float | None:
    """utime + stime of a live process, from /proc/<pid>/stat."""
    if pid is None:
        return None
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def process_tree(pid: int) -> list[int]:
    """``pid`` and every live descendant (``weir worker`` runs its roles as children)."""
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rpartition(")")[2].split()
        except OSError:
            continue
        children.setdefault(int(fields[1]), []).append(int(stat.parent.name))
    tree, todo = [], [pid]
    while todo:
        current = todo.pop()
        tree.append(current)
        todo.extend(children.get(current, []))
    return tree


def tree_cpu_seconds(pid: int | None) -> float | None:
    """CPU seconds of a live process and all its descendants (live ones from /proc,
    exited and reaped ones through the parent's cutime + cstime)."""
    if pid is None:
        return None
    try:
        own = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    except OSError:
        return None
    total = (int(own[13]) + int(own[14])) / CLK_TCK  # reaped children
    return total + sum(cpu_seconds(p) or 0.0 for p in process_tree(pid))


def end_offsets(settings: Settings, topic: str) -> dict[int, int]:
    """partition → high watermark."""
    from confluent_kafka import Consumer

    partitions = list_topics(settings)[topic]
    consumer = Consumer(
        {"bootstrap.servers": settings.kafka.bootstrap_servers, "group.id": "weir-bench-hw"}
    )
    try:
        return {
            p: consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=10)[1]
            for p in range(partitions)
        }
    finally:
        consumer.close()


def prefill(settings: Settings, topic: str, n: int) -> None:
    """``n`` records ``r-<seq>`` with seeded features (binary-mode CloudEvents)."""
    rng = np.random.default_rng(11)
    values = rng.normal(size=(n, len(FEATURES))).round(6)
    producer = EventProducer(settings)
    for i in range(n):
        record = InputRecord(
            id=f"r-{i:07d}",
            features=dict(zip(FEATURES, map(float, values[i]), strict=True)),
            timestamp=datetime.now(UTC),
        )
        producer.produce(topic, new_event(record, source="bench-load"))
    producer.flush(60)


def publish_model(settings: Settings, model: str, version: str = "1") -> None:
    """A logistic regression on FEATURES (seeded), registered as ``model``/``version``."""
    rng = np.random.default_rng(7)
    x = rng.normal(size=(2000, len(FEATURES)))
    y = (x @ rng.normal(size=len(FEATURES)) > 0).astype(int)
    card = ModelCard(
        name=model,
        version=version,
        framework="sklearn",
        features=FEATURES,
        classes=[0, 1],
        created_at=datetime.now(UTC),
    )
    ModelRegistry.for_settings(settings).publish(card, LogisticRegression().fit(x, y))


def machine_line(settings: Settings) -> str:
    """What the figures were measured on, printed under every benchmark's table."""
    return (
        f"machine: {os.cpu_count()} CPUs, load {os.getloadavg()[0]:.2f}, Kafka "
        f"{settings.kafka.bootstrap_servers} and MinIO {settings.minio.endpoint} on loopback; "
        f"python {sys.version.split()[0]}"
    )


def delete_groups(settings: Settings, groups: list[str]) -> None:
    if not groups:
        return
    client = admin(settings)  # keep the handle alive until the futures resolve
    for fut in client.delete_consumer_groups(groups, request_timeout=15).values():
        with contextlib.suppress(Exception):  # best effort
            fut.result(timeout=15)


def groups_with_prefix(settings: Settings, prefix: str) -> list[str]:
    """Consumer groups whose id starts with ``prefix`` (a run's own groups)."""
    listed = admin(settings).list_consumer_groups(request_timeout=15).result(timeout=15)
    return sorted(g.group_id for g in listed.valid if g.group_id.startswith(prefix))


def delete_topics(settings: Settings, prefix: str) -> None:
    delete_prefixed(settings, prefix + ".")


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
            "canary": base.canary.model_copy(update={"auto": False}),  # no retrainer role
            "stack": StackSettings(cache_dir=base.stack.cache_dir, state_dir=state_dir),
        }
    )


class Stream(threading.Thread):
    """Produces records ``<tag>-<seq>`` (features ``FEATURES``) at a fixed rate until stopped;
    remembers when each was produced. A failure is kept in ``error`` for the main thread."""

    def __init__(
        self,
        settings: Settings,
        topic: str,
        rate: float,
        *,
        tag: str = "s",
        source: str = "bench-stream",
    ) -> None:
        super().__init__(name="bench-stream", daemon=True)
        self.settings, self.topic, self.rate = settings, topic, rate
        self.tag, self.source = tag, source
        self.produced_at: list[float] = []  # monotonic, index = seq
        self.halt = threading.Event()
        self.error: BaseException | None = None

    def run(self) -> None:
        producer = EventProducer(self.settings)
        rng = np.random.default_rng(5)
        start = time.monotonic()
        try:
            while not self.halt.is_set():
                due = int((time.monotonic() - start) * self.rate)
                while len(self.produced_at) < due:
                    seq = len(self.produced_at)
                    values = rng.normal(size=len(FEATURES)).round(6)
                    record = InputRecord(
                        id=f"{self.tag}-{seq:07d}",
                        features=dict(zip(FEATURES, map(float, values), strict=True)),
                        timestamp=datetime.now(UTC),
                    )
                    producer.produce(self.topic, new_event(record, source=self.source))
                    self.produced_at.append(time.monotonic())
                producer.flush(30)
                time.sleep(0.01)
        except BaseException as exc:  # surfaced by the main thread
            self.error = exc
        finally:
            with contextlib.suppress(Exception):
                producer.flush(30)

"""The Quix Streams peer of ``bench/peers.py``: an Application whose ``BatchingSink``
makes one V2 infer call per batch and produces one prediction per record.

Quix accumulates a ``SinkBatch`` per topic-partition and flushes every sink at each
checkpoint: after ``commit_every`` records or ``commit_interval`` seconds, whichever
comes first (set from ``PEER_BATCH_SIZE`` / ``PEER_BATCH_WAIT_S``; the harness
passes weir's batch size and wait). ``write`` posts the batch's rows in one
``/v2/models/{name}/infer`` request and produces the predictions; ``flush`` waits for
the producer before Quix commits the checkpoint, so the app is at-least-once like
the weir worker.

Runs from its own venv (quixstreams pins a different confluent-kafka than weir),
which ``bench/peers.py`` creates; stdlib + quixstreams + httpx only. Runs until
SIGTERM (Quix handles it). Settings come from the ``PEER_*`` environment.

    <quix-venv>/bin/python bench/peer_quix.py TAG
"""

from __future__ import annotations

import time

import httpx
from confluent_kafka import Producer
from peer_common import PeerEnv, decode_record, prediction, v2_labels, v2_request
from quixstreams import Application
from quixstreams.sinks import BatchingSink, SinkBatch


class ScoringSink(BatchingSink):
    """One V2 call per batch; one prediction message per record."""

    def __init__(self, env: PeerEnv) -> None:
        super().__init__()
        self.env = env
        self.http: httpx.Client | None = None
        self.producer: Producer | None = None

    def setup(self) -> None:
        self.http = httpx.Client(timeout=10.0)
        self.producer = Producer(
            {"bootstrap.servers": self.env.bootstrap, "log_level": 3} | self.env.producer_config()
        )

    def write(self, batch: SinkBatch) -> None:
        assert self.http is not None and self.producer is not None
        decoded = [decode_record(item.value) for item in batch]
        if not decoded:
            return
        started = time.perf_counter()
        resp = self.http.post(self.env.infer_url, json=v2_request([row for _, row in decoded]))
        resp.raise_for_status()
        labels = v2_labels(resp.json(), len(decoded))
        latency_ms = (time.perf_counter() - started) * 1000
        for (record_id, _), label in zip(decoded, labels, strict=True):
            key, value, headers = prediction(self.env, record_id, label, latency_ms, "peer-quix")
            self.producer.produce(self.env.predictions, value=value, key=key, headers=headers)
        self.producer.poll(0)

    def flush(self) -> None:
        super().flush()  # write() per topic-partition batch
        if self.producer is not None:
            self.producer.flush(30)  # predictions acknowledged before the commit


def main() -> None:
    env = PeerEnv.from_environ()
    app = Application(
        broker_address=env.bootstrap,
        consumer_group=env.group,
        auto_offset_reset="earliest",
        commit_every=env.batch_size,
        commit_interval=env.batch_wait_s,
        consumer_extra_config=env.consumer_config(),
        producer_extra_config=env.producer_config(),
        state_dir=env.state_dir,
        use_changelog_topics=False,
        loglevel="WARNING",
    )
    records = app.topic(env.records, value_deserializer="json")
    app.dataframe(records).sink(ScoringSink(env))
    app.run()


if __name__ == "__main__":
    main()

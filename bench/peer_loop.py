"""Two plain confluent-kafka peers of ``bench/peers.py``, run as their own process.

* ``bare``: consume → produce one prediction per record, no model (the ceiling);
* ``naive``: the same loop with one synchronous V2 REST call per record
  (``POST /v2/models/{name}/infer``, httpx with keep-alive) before producing.

Offsets are committed by librdkafka's auto-commit (every 5 s, the client's
default), as a plain loop would. Runs until SIGTERM; settings come from the
``PEER_*`` environment (see ``peer_common.PeerEnv``).

    python bench/peer_loop.py {bare,naive} TAG
"""

from __future__ import annotations

import sys
import time

import httpx
from confluent_kafka import Consumer, KafkaError, Producer
from peer_common import PeerEnv, decode_record, on_stop, prediction, v2_labels, v2_request


def main() -> None:
    mode = sys.argv[1]
    if mode not in ("bare", "naive"):
        raise SystemExit(f"unknown mode {mode!r}")
    env = PeerEnv.from_environ()
    consumer = Consumer(
        {
            "bootstrap.servers": env.bootstrap,
            "group.id": env.group,
            "auto.offset.reset": "earliest",
            "log_level": 3,
        }
        | env.consumer_config()
    )
    producer = Producer(
        {"bootstrap.servers": env.bootstrap, "log_level": 3} | env.producer_config()
    )
    running = True

    def stop() -> None:
        nonlocal running
        running = False

    on_stop(stop)
    consumer.subscribe([env.records])
    source = f"peer-{mode}"
    http = httpx.Client(timeout=10.0) if mode == "naive" else None
    while running:
        # consume(n, timeout) waits for n messages or the timeout: poll one, take the rest
        first = consumer.poll(0.1)
        batch = [] if first is None else [first, *consumer.consume(num_messages=499, timeout=0)]
        for msg in batch:
            err = msg.error()
            if err is not None:
                if err.code() == KafkaError._PARTITION_EOF:
                    continue
                raise RuntimeError(str(err))
            record_id, row = decode_record(msg.value())
            label, latency_ms = 0, 0.0
            if http is not None:
                started = time.perf_counter()
                resp = http.post(env.infer_url, json=v2_request([row]))
                resp.raise_for_status()
                label = v2_labels(resp.json(), 1)[0]
                latency_ms = (time.perf_counter() - started) * 1000
            key, value, headers = prediction(env, record_id, label, latency_ms, source)
            producer.produce(env.predictions, value=value, key=key, headers=headers)
            producer.poll(0)
    producer.flush(30)
    consumer.close()
    if http is not None:
        http.close()


if __name__ == "__main__":
    main()

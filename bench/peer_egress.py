"""The naive peer of ``bench/egress.py``: what a consumer script forwarding events to
an HTTP sink does. confluent-kafka reads the predictions; each message is POSTed
as it came (its Kafka headers become ``ce-*`` HTTP headers, binary content mode),
one at a time with httpx keep-alive, and its offset committed synchronously after
the sink answered. Runs until SIGTERM.

    EGRESS_BOOTSTRAP=… EGRESS_TOPIC=… EGRESS_GROUP=… K_SINK=… python bench/peer_egress.py TAG
"""

from __future__ import annotations

import os

import httpx
from confluent_kafka import Consumer, KafkaError
from peer_common import on_stop


def main() -> None:
    consumer = Consumer(
        {
            "bootstrap.servers": os.environ["EGRESS_BOOTSTRAP"],
            "group.id": os.environ["EGRESS_GROUP"],
            "auto.offset.reset": "earliest",
            "enable.auto.commit": False,
            "log_level": 3,
        }
    )
    consumer.subscribe([os.environ["EGRESS_TOPIC"]])
    sink = os.environ["K_SINK"]
    http = httpx.Client(timeout=10.0)
    running = True

    def stop() -> None:
        nonlocal running
        running = False

    on_stop(stop)
    while running:
        msg = consumer.poll(0.1)
        if msg is None:
            continue
        if msg.error() is not None:
            if msg.error().code() == KafkaError._PARTITION_EOF:
                continue
            raise RuntimeError(str(msg.error()))
        headers = {
            (k if k == "content-type" else k.replace("_", "-")): (v or b"").decode()
            for k, v in msg.headers() or ()
        }
        http.post(sink, headers=headers, content=msg.value()).raise_for_status()
        consumer.commit(message=msg, asynchronous=False)
    consumer.close()


if __name__ == "__main__":
    main()

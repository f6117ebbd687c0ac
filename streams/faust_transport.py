"""Faust's aiokafka transport with a configurable fetch wait.

faust-streaming 0.15.3 builds its worker consumer with ``fetch_max_wait_ms=1500``
written into the call, with no setting to change it. The broker answers a
fetch as soon as any partition in it has data, so in steady state the value
does not matter; it bounds the fetches that leave out the partitions where new
records arrive, which aiokafka does while records it already fetched for them
sit unconsumed (a worker that fell behind). Then a record waits up to 1.5 s.
This transport is Faust's own, except that the consumer waits
``WEIR_KAFKA__FETCH_MAX_WAIT_MS`` (100 ms): the stall is capped, at the price
of about 9 more empty fetches per second while idle. aiokafka reads the value
when the consumer starts, so setting it on the consumer Faust just built is
enough. ``bench/latency.py`` measures both (docs/benchmarks.md).
"""

from __future__ import annotations

from typing import Any

import faust
from faust.transport.drivers import aiokafka as faust_aiokafka


class _ConsumerThread(faust_aiokafka.AIOKafkaConsumerThread):
    def _create_worker_consumer(self, transport: Any) -> Any:
        consumer = super()._create_worker_consumer(transport)
        consumer._fetch_max_wait_ms = transport.fetch_max_wait_ms
        return consumer


class _Consumer(faust_aiokafka.Consumer):
    def _new_consumer_thread(self) -> faust_aiokafka.AIOKafkaConsumerThread:
        return _ConsumerThread(self, loop=self.loop, beacon=self.beacon)


class Transport(faust_aiokafka.Transport):
    Consumer = _Consumer
    fetch_max_wait_ms: int = 1500


def install(app: faust.App, fetch_max_wait_ms: int) -> None:
    """Make ``app`` consume through this transport; call before the app starts."""
    transport = Transport(app.conf.broker_consumer, app)
    transport.fetch_max_wait_ms = fetch_max_wait_ms
    app.transport = transport

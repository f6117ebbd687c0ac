"""Faust's aiokafka transport with a configurable fetch wait.

faust-streaming 0.15.3 builds its worker consumer with ``fetch_max_wait_ms=1500``
written into the call, with no setting to change it. The broker holds a fetch
until that much time has passed or data arrived, so at low rates a record
waits up to 1.5 s before the scoring agent sees it. This transport is Faust's
own, except that the consumer it builds waits ``WEIR_KAFKA__FETCH_MAX_WAIT_MS``
(aiokafka reads the value when the consumer starts, so setting it on the
consumer Faust just built is enough). ``bench/latency.py`` measures both.
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

"""The worker's Faust consumer waits WEIR_KAFKA__FETCH_MAX_WAIT_MS, not Faust's fixed 1500 ms."""

from __future__ import annotations

import asyncio

from schemas.settings import KafkaSettings, Settings
from streams import faust_transport
from streams.app import create_app


def built_consumer_wait(settings: Settings) -> int:
    async def build() -> int:
        app, _ = create_app(settings, "scoring")
        assert isinstance(app.transport, faust_transport.Transport)
        thread = app.consumer._thread
        consumer = thread._create_worker_consumer(app.transport)
        try:
            return int(consumer._fetch_max_wait_ms)
        finally:
            await consumer.stop()
            thread.thread_loop.close()  # the consumer thread's own loop, never started here

    return asyncio.run(build())


def test_worker_consumer_uses_the_configured_fetch_wait():
    assert built_consumer_wait(Settings()) == KafkaSettings().fetch_max_wait_ms == 100
    slow = Settings(kafka=KafkaSettings(fetch_max_wait_ms=1500))
    assert built_consumer_wait(slow) == 1500


def test_faust_still_hard_codes_its_fetch_wait():
    # If a faust-streaming upgrade makes this configurable, drop the transport.
    import inspect

    from faust.transport.drivers.aiokafka import AIOKafkaConsumerThread

    source = inspect.getsource(AIOKafkaConsumerThread._create_worker_consumer)
    assert "fetch_max_wait_ms=1500" in source


def test_the_worker_consumer_reads_every_compression_codec():
    # weir produces lz4 by default, and any other producer may use zstd or snappy:
    # a codec aiokafka cannot decode would crash every role that reads the topic.
    from aiokafka import codec

    assert codec.has_gzip() and codec.has_lz4() and codec.has_zstd() and codec.has_snappy()


def test_roles_keep_the_start_up_heap_out_of_gc_scans():
    import gc

    from streams.app import GC_THRESHOLD, quiet_gc

    before = gc.get_threshold()
    try:
        quiet_gc()
        assert gc.get_freeze_count() > 0, "what start-up built is frozen"
        assert gc.get_threshold()[0] == GC_THRESHOLD > before[0]
    finally:
        gc.unfreeze()
        gc.set_threshold(*before)

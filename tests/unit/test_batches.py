"""The batch pipeline of the librdkafka roles without Kafka: overlap, order, offsets after acks."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import pytest

from connectors.kafka_async import fill_batch
from schemas import Origin, RawMessage
from streams.roles.batches import BatchPipeline, Pending


def batch(name: str, offset: int) -> list[RawMessage]:
    return [RawMessage(name.encode(), None, (), Origin("weir.records", 0, offset))]


class Harness:
    """Batches handed out on demand; each batch's work ends when the test says so."""

    def __init__(self, *, overlap: int, in_flight: int = 4, full: int = 1) -> None:
        self.offered: asyncio.Queue[list[RawMessage]] = asyncio.Queue()
        self.release: dict[str, asyncio.Event] = {}
        self.acks: dict[str, asyncio.Future[list[str]]] = {}
        self.log: list[str] = []
        self.running = 0
        self.most_running = 0
        self.pipeline: BatchPipeline[str] = BatchPipeline(
            self.take,
            self.work,
            self.emit,
            lambda done: self.log.append(f"store {done[0].value.decode()}"),
            self.check,
            overlap=overlap,
            in_flight=in_flight,
            full=full,  # batch() makes one-record batches: full, unless a test says otherwise
        )

    async def take(self) -> list[RawMessage]:
        got = await self.offered.get()
        if got:
            self.log.append(f"read {got[0].value.decode()}")
        return got

    async def work(self, messages: list[RawMessage]) -> str:
        name = messages[0].value.decode()
        self.running += 1
        self.most_running = max(self.most_running, self.running)
        try:
            await self.release.setdefault(name, asyncio.Event()).wait()
        finally:
            self.running -= 1
        if name == "poison":
            raise ValueError("the model call failed for good")
        return name.upper()

    def emit(self, messages: list[RawMessage], result: str) -> Pending:
        self.log.append(f"emit {result}")
        acked = self.acks[result.lower()] = asyncio.get_running_loop().create_future()
        return Pending(acked, lambda: self.log.append(f"acked {result}"))

    def check(self, errors: list[str]) -> None:
        if errors:
            raise RuntimeError("; ".join(errors))

    def finish(self, name: str) -> None:
        self.release.setdefault(name, asyncio.Event()).set()


async def settle() -> None:
    """Let every ready task run (the pipeline's hand-offs are a few loop turns)."""
    for _ in range(20):
        await asyncio.sleep(0)


async def run_until(h: Harness, steps: Callable[[], object]) -> None:
    runner = asyncio.ensure_future(h.pipeline.run())
    try:
        result = steps()
        if asyncio.iscoroutine(result):
            await result
    finally:
        runner.cancel()
        await asyncio.gather(runner, return_exceptions=True)
        h.offered.put_nowait([])  # a read under way returns (a real one does within its wait)
        await h.pipeline.stop()


def test_the_next_batch_is_worked_on_while_one_is_out_and_outputs_keep_read_order() -> None:
    async def main() -> Harness:
        h = Harness(overlap=2)

        async def steps() -> None:
            for i, name in enumerate(["a", "b", "c"]):
                h.offered.put_nowait(batch(name, i))
            await settle()
            # two batches at work, the third not read until one of them is emitted
            assert h.running == 2
            assert h.log == ["read a", "read b"]
            h.finish("b")  # the later batch's model call answers first ...
            await settle()
            assert "emit B" not in h.log  # ... but waits for the earlier one
            assert h.log == ["read a", "read b"]
            h.finish("a")
            await settle()
            assert h.log[2:4] == ["emit A", "emit B"]
            assert "read c" in h.log
            h.finish("c")
            await settle()
            for name in ("a", "b", "c"):
                h.acks[name].set_result([])
            await settle()

        await run_until(h, steps)
        return h

    h = asyncio.run(main())
    assert h.most_running == 2
    emitted = [line for line in h.log if line.startswith("emit")]
    stored = [line for line in h.log if line.startswith("store")]
    assert emitted == ["emit A", "emit B", "emit C"]
    assert stored == ["store a", "store b", "store c"]


def test_offsets_are_stored_only_after_kafka_acknowledged_in_order() -> None:
    async def main() -> Harness:
        h = Harness(overlap=1, in_flight=4)

        async def steps() -> None:
            for i, name in enumerate(["a", "b"]):
                h.offered.put_nowait(batch(name, i))
                h.finish(name)
            await settle()
            assert h.log[-1] == "emit B"  # both emitted, neither acknowledged
            h.acks["b"].set_result([])  # the later batch's ack first: nothing stored yet
            await settle()
            assert not [line for line in h.log if line.startswith("store")]
            h.acks["a"].set_result([])
            await settle()

        await run_until(h, steps)
        return h

    h = asyncio.run(main())
    tail = [line for line in h.log if line.startswith(("acked", "store"))]
    assert tail == ["acked A", "store a", "acked B", "store b"]


@pytest.mark.parametrize(
    ("overlap", "full"),
    [
        (1, 1),  # no overlap at all
        (2, 2),  # overlap allowed, but one-record batches are short of full: no backlog
    ],
)
def test_one_batch_at_a_time_without_overlap_or_without_a_backlog(overlap: int, full: int) -> None:
    """Batches short of full mean the role keeps up: one at a time, fewer model calls."""

    async def main() -> Harness:
        h = Harness(overlap=overlap, full=full)

        async def steps() -> None:
            h.offered.put_nowait(batch("a", 0))
            h.offered.put_nowait(batch("b", 1))
            await settle()
            assert h.log == ["read a"] and h.running == 1  # b stays unread while a is worked on
            h.finish("a")
            await settle()
            assert h.log[:3] == ["read a", "emit A", "read b"]

        await run_until(h, steps)
        return h

    assert asyncio.run(main()).most_running == 1


def test_a_failed_batch_or_a_refused_output_ends_the_loop_with_the_error() -> None:
    async def failing_work() -> None:
        h = Harness(overlap=2)
        h.offered.put_nowait(batch("poison", 0))
        h.finish("poison")
        await h.pipeline.run()

    with pytest.raises(ValueError, match="failed for good"):
        asyncio.run(failing_work())

    async def refused() -> None:
        h = Harness(overlap=2, in_flight=1)
        h.offered.put_nowait(batch("a", 0))
        h.finish("a")
        runner = asyncio.ensure_future(h.pipeline.run())
        await settle()
        h.acks["a"].set_result(["broker gone"])
        await runner

    with pytest.raises(RuntimeError, match="broker gone"):
        asyncio.run(refused())


class Queue:
    """A consumer's queue on a fake clock: ``consume(n, timeout)`` takes what is queued and,
    while short of ``n``, lets the clock run to the timeout (nothing more arrives)."""

    def __init__(self, queued: int) -> None:
        self.queued, self.now, self.calls = queued, 100.0, []

    def clock(self) -> float:
        return self.now

    def consume(self, n: int, timeout: float) -> list[int]:
        self.calls.append((n, round(timeout, 6)))
        got, self.queued = min(n, self.queued), self.queued - min(n, self.queued)
        if got < n:
            self.now += timeout
        return list(range(got))


@pytest.mark.parametrize(
    ("queued", "since", "waits", "took"),
    [
        # queued during the previous batch's 6 ms of work: only the window's last 4 ms
        (5, 99.994, [(10, 0), (5, 0.004)], 5),
        # queued longer than the window: they go at once
        (5, 99.95, [(10, 0)], 5),
        # nothing queued: a whole window from now
        (0, 99.994, [(10, 0), (10, 0.01)], 0),
        # a full batch (a backlog) goes at once
        (12, 99.999, [(10, 0)], 10),
        # the first batch: a whole window
        (3, None, [(10, 0), (7, 0.01)], 3),
    ],
)
def test_fill_batch_counts_the_window_from_when_records_could_be_taken(
    queued: int, since: float | None, waits: list[tuple[int, float]], took: int
) -> None:
    q = Queue(queued)
    now = q.clock()  # the caller looks first (on its loop), then fill_batch waits for the rest
    got = fill_batch(q.consume, 10, 0.01, since, q.clock, (now, q.consume(10, 0)))
    assert q.calls == waits
    assert len(got) == took

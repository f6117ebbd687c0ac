"""The process and broker fault scenarios: one function per fault, in :data:`SCENARIOS`.

Each body gets a :class:`~fault_case.Case` (own topics, bounded waits) and
fills the case's row: figures from the topics, what it measured besides
(``measured``), and a failure for every expectation the product did not meet.
The expectations are what docs/guarantees.md and issue 10 promise; a fault
the product does not survive yet is reported as FAIL, never tuned away.
"""

from __future__ import annotations

import re
import signal
import time
from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import Any

from fault_case import Case, signalled
from fault_io import Figures, Msg, features_for, record_msg

from streams.context import ROLES

RATE = 100.0  # records/s of every stream
WARMUP = 100  # predictions before the fault: the stream is flowing
TAIL_S = 3.0  # seconds of stream after the fault ended
RETRY_BUDGET_S = 60.0  # longest any record may wait for its outcome when one input is poison
QUIET_GAP_S = 5.0  # scoring must not pause longer than this when MinIO goes away
ERROR_LINES_MAX = 30  # ERROR lines a worker may log over a 30 s broker outage (1/s)


@dataclass(frozen=True)
class Scenario:
    deadline_s: float
    body: Callable[[Case], None]
    expects: str  # the pass criterion, in words (the markdown's second table)


SCENARIOS: dict[str, Scenario] = {}


def scenario(
    name: str, expects: str, deadline_s: float = 180.0
) -> Callable[[Callable[[Case], None]], Any]:
    def register(body: Callable[[Case], None]) -> Callable[[Case], None]:
        SCENARIOS[name] = Scenario(deadline_s, body, expects)
        return body

    return register


def good(i: int) -> Msg:
    return record_msg(f"r{i:06d}", features_for(i))


def tail_target(case: Case, produced: int) -> int:
    """Records the stream must reach: the suite's count, and TAIL_S after the fault."""
    return max(case.suite.records, produced + int(RATE * TAIL_S))


def expect_healthy(
    case: Case, f: Figures, *, stall_max: float | None = None, dead: int | None = 0
) -> None:
    """What every fault must leave: nothing lost, no crash, scoring going again."""
    row = case.row
    row.expect(f.sent > 0, "nothing was sent")
    row.expect(f.missing == 0, f"{f.missing} records neither scored nor dead-lettered")
    if dead is not None:
        row.expect(f.dead == dead, f"{f.dead} dead-lettered, expected {dead}")
    case.settle_workers()
    row.expect(bool(row.alive), "a worker (or role) is not running at the end")
    row.expect(not row.restarts, f"{row.restarts} role restarts (crash)")
    if stall_max is not None and f.stall_s is not None:
        row.expect(f.stall_s <= stall_max, f"scoring stalled {f.stall_s:.1f}s > {stall_max:.0f}s")


def steady_fault(
    case: Case,
    fault: Callable[[], None],
    *,
    stall_max: float,
    roles: tuple[str, ...] = ("scoring",),
    live: bool = False,
) -> None:
    """The common shape: route, worker, stream flowing, one fault, the rest of the stream."""
    case.activate()
    case.worker(roles, live=live)
    stream = case.stream(good)
    case.wait_predictions(WARMUP, "predictions before the fault")
    case.mark_fault()
    fault()
    f = case.finish(stream, at_least=tail_target(case, stream.produced))
    expect_healthy(case, f, stall_max=stall_max)


# ------------------------------------------------------------ processes and brokers


@scenario(
    "sigkill-scoring",
    (
        "two scoring workers of one group, A SIGKILLed mid-stream: B finishes; 0 missing,"
        " no dead letters, stall <= 30 s"
    ),
)
def sigkill_scoring(case: Case) -> None:
    """Two scoring workers of one group; A is SIGKILLed mid-stream, B finishes."""
    case.activate()
    a = case.worker(supervised=False, tag="a")
    case.worker(supervised=False, tag="b")
    stream = case.stream(good)
    case.wait_predictions(3 * WARMUP, "predictions before the kill")
    pid, at_kill = a.pid, case.predicted()
    case.mark_fault()
    if pid is not None:
        case.kill(pid)
    case.workers.remove(a)  # B alone is expected alive
    f = case.finish(stream, at_least=tail_target(case, stream.produced))
    case.row.measured = f"A killed after {at_kill} predictions"
    case.row.notes.append("single-role processes, no supervisor: B took A's partitions")
    expect_healthy(case, f, stall_max=30.0)


@scenario(
    "model-server-paused",
    ("model server SIGSTOPped 10 s: 0 missing, 0 dead letters, no restart, stall <= 25 s"),
)
def model_server_paused(case: Case) -> None:
    pid = case.suite.model_server.pid()
    assert pid is not None, "the suite's model server is not running"

    def fault() -> None:
        with signalled(pid, signal.SIGSTOP, signal.SIGCONT):
            case.hold(10.0)

    steady_fault(case, fault, stall_max=10.0 + 15.0)
    case.row.measured = "SIGSTOP 10 s"


@scenario(
    "broker-paused",
    ("private Kafka SIGSTOPped 10 s: 0 missing, 0 dead letters, no restart, stall <= 40 s"),
)
def broker_paused(case: Case) -> None:
    def fault() -> None:
        with case.suite.stack.paused("kafka"):
            case.hold(10.0)

    steady_fault(case, fault, stall_max=10.0 + 30.0)
    case.row.measured = "SIGSTOP 10 s"


@scenario(
    "broker-restart",
    ("private Kafka stopped and started: 0 missing, 0 dead letters, no restart, stall <= 60 s"),
)
def broker_restart(case: Case) -> None:
    took: list[float] = []

    def fault() -> None:
        started = time.monotonic()
        with case.suite.stack.stopped("kafka"):
            pass
        took.append(time.monotonic() - started)

    steady_fault(case, fault, stall_max=60.0)
    case.row.measured = f"down+up {took[0]:.0f}s" if took else ""


def minio_away(case: Case, outage: Callable[[], AbstractContextManager[None]], how: str) -> None:
    """MinIO away for 20 s under every role: scoring must not notice."""

    def fault() -> None:
        with outage():
            case.hold(20.0)

    steady_fault(case, fault, stall_max=QUIET_GAP_S, roles=ROLES, live=True)
    case.row.measured = f"{how} 20 s, all roles"


@scenario(
    "minio-stopped",
    (
        "MinIO stopped 20 s under `weir worker` (all roles): scoring never pauses (stall "
        "<= 5 s), no role restarts, 0 missing"
    ),
    deadline_s=300.0,
)
def minio_stopped(case: Case) -> None:
    minio_away(case, lambda: case.suite.stack.stopped("minio"), "stopped")


@scenario(
    "minio-paused",
    (
        "MinIO SIGSTOPped 20 s under `weir worker` (all roles): stall <= 5 s, no role "
        "restarts, 0 missing"
    ),
    deadline_s=300.0,
)
def minio_paused(case: Case) -> None:
    minio_away(case, lambda: case.suite.stack.paused("minio"), "SIGSTOP")


# ------------------------------------------------------------------ broker down, noise

ERROR_LINE = re.compile(r"^(\[[^\]]*\] \[\d+\] \[(ERROR|CRITICAL)\]|%[0-3]\|)", re.MULTILINE)


@scenario(
    "broker-down-noise",
    (
        "private Kafka stopped 30 s: /readyz not ready while down, <= 30 ERROR lines "
        "(1/s), no crash, 0 missing"
    ),
    deadline_s=240.0,
)
def broker_down_noise(case: Case) -> None:
    """The broker stopped for 30 s: ERROR lines logged, and /readyz while it is down."""
    case.activate()
    worker = case.worker(live=True)
    stream = case.stream(good)
    case.wait_predictions(WARMUP, "predictions before the outage")
    case.mark_fault()
    offset = worker.log_size()
    ready: list[int | None] = []
    outage_log = ""
    with case.suite.stack.stopped("kafka"):
        end = time.monotonic() + 30.0

        def sample() -> bool:
            ready.append(case.readyz(worker))
            return time.monotonic() >= end

        case.wait(sample, "the outage", 40.0)
        outage_log = worker.log_since(offset)
    errors = len(ERROR_LINE.findall(outage_log))
    late = ready[len(ready) // 3 :]  # once the outage is 10 s old
    not_ready = sum(1 for r in late if r != 200)
    f = case.finish(stream, at_least=tail_target(case, stream.produced))
    case.row.measured = (
        f"{errors} ERROR lines in 30 s; /readyz not ready {not_ready}/{len(late)} "
        "samples after 10 s down"
    )
    expect_healthy(case, f, stall_max=30.0 + 40.0)
    case.row.expect(errors <= ERROR_LINES_MAX, f"{errors} ERROR lines (> {ERROR_LINES_MAX})")
    case.row.expect(not_ready > 0, "/readyz said ready while the broker was down")

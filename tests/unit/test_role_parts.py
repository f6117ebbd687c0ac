"""The roles' framework-free parts: archive buffering, policy checkpoints, run cancellation,
the supervisor's role list, the control fold's progress. No broker, no MinIO, no sleeps
(time and writes are injected)."""

from __future__ import annotations

import asyncio
import threading
from datetime import UTC, datetime

import pytest

from agents.retraining import Retrainer, RetrainPolicy
from agents.routing import RoutingTable
from schemas import new_event
from schemas.settings import (
    CanarySettings,
    LiveSettings,
    MonitorSettings,
    RetrainingSettings,
    Settings,
)
from schemas.training import TrainingRow
from streams.roles.archive import ArchiveWriter
from streams.supervisor import Supervisor
from tests.samples import performance_alert

AT = datetime(2026, 1, 1, tzinfo=UTC)


def rows(n: int, start: int = 0) -> list[TrainingRow]:
    return [
        TrainingRow(record_id=f"r{i}", features={"a": 1.0}, label=1, time=AT)
        for i in range(start, start + n)
    ]


class Store:
    """Stands in for MinIO: records what was written, or fails while ``down``."""

    def __init__(self) -> None:
        self.written: list[list[str]] = []
        self.down = False
        self.gate: threading.Event | None = None

    def write(self, _store, _bucket, _model, chunk, **_kw) -> str:
        if self.gate is not None:
            self.gate.wait(5)
        if self.down:
            raise ConnectionError("MinIO at 127.0.0.1:9000 refused the connection")
        self.written.append([r.record_id for r in chunk])
        return f"s3://data/chunk-{len(self.written)}"


def writer(store: Store, **monitor) -> ArchiveWriter:
    settings = Settings(monitor=MonitorSettings(**monitor))
    return ArchiveWriter(settings, store=object(), now=lambda: AT, write=store.write)  # type: ignore[arg-type]


def test_archive_keeps_rows_while_minio_is_away_and_writes_them_after():
    store = Store()
    w = writer(store, archive_chunk_rows=4)
    w.add(rows(6))
    store.down = True
    assert asyncio.run(w.flush()) is False
    assert len(w.buffer) == 6 and w.failures == 1 and store.written == []
    store.down = False
    assert asyncio.run(w.flush()) is True
    assert store.written == [["r0", "r1", "r2", "r3"], ["r4", "r5"]] and w.archived == 6


def test_archive_buffer_is_bounded_and_drops_the_oldest_counted():
    w = writer(Store(), archive_buffer_rows=5)
    w.add(rows(8))
    assert [r.record_id for r in w.buffer] == ["r3", "r4", "r5", "r6", "r7"] and w.dropped == 3


def test_two_flushes_at_once_write_each_row_once():
    # the timer's flush and the shutdown hook's flush can overlap
    store = Store()
    store.gate = threading.Event()
    w = writer(store, archive_chunk_rows=4)
    w.add(rows(10))

    async def both() -> list[bool]:
        first = asyncio.create_task(w.flush())
        second = asyncio.create_task(w.flush())
        await asyncio.sleep(0)  # both have started; the first holds the lock
        store.gate.set()
        return list(await asyncio.gather(first, second))

    assert asyncio.run(both()) == [True, True]
    assert [r for chunk in store.written for r in chunk] == [f"r{i}" for i in range(10)]


def test_policy_checkpoint_keeps_handled_alerts_and_time_left():
    clock = {"t": 100.0}
    policy = RetrainPolicy(cooldown_s=300, retry_after_s=30, monotonic=lambda: clock["t"])
    assert policy.consider("io.weir.alert.performance.v1", "a-1", "m").start
    policy.finished("m", promoted=True)
    clock["t"] = 160.0
    saved = policy.checkpoint()
    # a new process: another monotonic clock altogether
    other = {"t": 5.0}
    restored = RetrainPolicy(cooldown_s=300, retry_after_s=30, monotonic=lambda: other["t"])
    restored.restore(saved)
    assert not restored.consider("io.weir.alert.performance.v1", "a-1", "m").start  # handled
    decision = restored.consider("io.weir.alert.performance.v1", "a-2", "m")
    assert not decision.start and "cooling down for 240s" in decision.reason
    other["t"] = 5.0 + 241
    assert restored.consider("io.weir.alert.performance.v1", "a-3", "m").start


def test_a_run_cancelled_at_shutdown_starts_no_held_run():
    started: list[str] = []
    blocked = threading.Event()
    running = asyncio.Event()
    loop: list[asyncio.AbstractEventLoop] = []

    def pipeline(settings, request):  # runs in a thread, like the child-process runner
        started.append(request.alert_id)
        loop[0].call_soon_threadsafe(running.set)
        blocked.wait(5)
        raise AssertionError("never reached: the run is cancelled first")

    async def emit(kind, event) -> None:
        pass

    retrainer = Retrainer(Settings(), RoutingTable(), None, emit, run_pipeline=pipeline)  # type: ignore[arg-type]

    def alert(alert_id: str):
        return new_event(performance_alert(alert_id), source="t")

    async def go() -> None:
        loop.append(asyncio.get_running_loop())
        assert (await retrainer.on_alert(alert("first"))).start
        assert (await retrainer.on_alert(alert("held"))).held
        await asyncio.wait_for(running.wait(), 5)  # the first run is in its pipeline
        for task in list(retrainer.tasks):
            task.cancel()
        await asyncio.gather(*list(retrainer.tasks), return_exceptions=True)
        blocked.set()
        assert not retrainer.tasks, "a cancelled run must not start the held alert's run"

    asyncio.run(go())
    assert started == ["first"]


@pytest.mark.parametrize(
    ("retraining", "canary"), [(True, True), (False, True), (True, False), (False, False)]
)
def test_supervisor_runs_the_retrainer_only_when_it_has_work(retraining: bool, canary: bool):
    settings = Settings(
        retraining=RetrainingSettings(enabled=retraining), canary=CanarySettings(auto=canary)
    )
    roles = list(Supervisor(settings).children)
    expected = ["scoring", "monitor", "feedback", "performance"] + (
        ["retrainer"] if retraining or canary else []
    )
    assert roles == expected


def test_no_child_gets_the_supervisors_live_port_or_anothers(monkeypatch: pytest.MonkeyPatch):
    import streams.supervisor as supervisor

    # the OS hands the supervisor's port out again, then one port twice, then fresh ones
    offered = iter([7000, 7001, 7001, 7002, 7003, 7000, 7004, 7005, 7006])
    monkeypatch.setattr(supervisor, "free_port", lambda: next(offered))
    settings = Settings(live=LiveSettings(port=7000))
    sup = Supervisor(settings, ("scoring", "monitor", "feedback", "performance"))
    ports = [c.live_port for c in sup.children.values()]
    assert ports == [7001, 7002, 7003, 7004]
    feedback = sup.children["feedback"]
    feedback.restarts = 1  # started again: a fresh port, still none of the others'
    assert sup._free_live_port(feedback) == 7005


def test_children_get_no_live_port_when_the_supervisor_serves_none():
    sup = Supervisor(Settings(live=LiveSettings(port=0)), ("scoring", "monitor"))
    assert [c.live_port for c in sup.children.values()] == [0, 0]


def test_the_cli_offers_exactly_the_roles_there_are():
    # the CLI names the roles itself so that `weir --help` does not import Faust
    from streams.cli.main import ROLE_NAMES
    from streams.context import ROLES

    assert ROLE_NAMES == ROLES


def test_a_librdkafka_role_whose_app_would_share_its_group_refuses_to_start(monkeypatch):
    import streams.app
    from schemas import ConfigurationError

    monkeypatch.setattr(streams.app, "LIBRDKAFKA_ROLES", frozenset({"scoring", "feedback"}))
    with pytest.raises(ConfigurationError, match=r"list it in streams\.app\.LIBRDKAFKA_ROLES"):
        streams.app.create_app(Settings(), "monitor")


def test_insight_roles_yield_the_cpu_to_scoring():
    import os
    import subprocess
    import sys

    from connectors.process import autogroup_niceness
    from streams.supervisor import start_options

    def child(nice: int) -> tuple[int, bool, int | None]:
        """The child's niceness, whether it leads a session, its autogroup's niceness;
        started as the supervisor starts a role."""
        code = (
            "import os\n"
            "from connectors.process import autogroup_niceness\n"
            "print(os.nice(0), os.getsid(0) == os.getpid(), autogroup_niceness())\n"
        )
        out = subprocess.run(
            [sys.executable, "-c", code],
            **start_options(nice),
            capture_output=True,
            text=True,
            check=True,
        )
        niceness, leader, group = out.stdout.split()
        return int(niceness), leader == "True", None if group == "None" else int(group)

    mine, my_group = os.nice(0), autogroup_niceness()
    assert child(0) == (mine, False, my_group)  # scoring: as the supervisor, in its session
    niced = min(19, mine + 10)
    if my_group is None:
        # the root group (or no autogroups): every thread competes by its own niceness,
        # so the niced roles stay in the supervisor's session, thread by thread
        assert child(10) == (niced, False, None)
    else:
        # monitor, feedback, …: niced, and so is the group of the session each leads, else
        # their niceness would count only within the supervisor's session
        assert child(10) == (niced, True, max(niced, my_group))
    assert autogroup_niceness() == my_group  # the test's own group is left alone


@pytest.mark.parametrize(("group", "leads"), [(None, False), (0, True), (5, True)])
def test_niced_roles_lead_sessions_only_from_an_autogroup(monkeypatch, group, leads):
    """A supervisor in the root group (init's descendants before any session starts, as a
    CI runner: read as no autogroup) keeps its niced roles in its session, niced thread by
    thread; one in an autogroup starts each in a session of its own. Scoring never."""
    import connectors.process as process
    from streams.supervisor import start_options

    monkeypatch.setattr(process, "autogroup_niceness", lambda pid="self": group)
    assert process.niced_children_lead_sessions() is leads
    assert start_options(10)["start_new_session"] is leads
    assert start_options(0)["start_new_session"] is False


def test_lower_autogroup_changes_only_a_group_the_process_leads():
    import subprocess
    import sys

    from connectors.process import autogroup_niceness

    if autogroup_niceness() is None:
        pytest.skip("this kernel has no autogroups (/proc/self/autogroup)")
    code = (
        "from connectors.process import autogroup_niceness, lower_autogroup\n"
        "before = autogroup_niceness()\n"
        "print(lower_autogroup(before + 2), lower_autogroup(before + 1), autogroup_niceness())\n"
    )

    def run(new_session: bool) -> list[str]:
        out = subprocess.run(
            [sys.executable, "-c", code],
            start_new_session=new_session,
            capture_output=True,
            text=True,
            check=True,
            timeout=60,
        )
        return out.stdout.split()

    mine = autogroup_niceness()
    assert mine is not None and mine <= 17, "room to lower the priority"
    # in a session of its own: lowered, then never raised again
    assert run(True) == ["True", "False", str(mine + 2)]
    # in this test's session: the group is not the child's to change
    assert run(False) == ["False", "False", str(mine)]
    assert autogroup_niceness() == mine


def test_lower_priority_lowers_every_thread_and_never_raises_one():
    import json
    import subprocess
    import sys

    code = (
        "import json, os, threading, time\n"
        "from connectors.process import lower_priority, thread_ids\n"
        "stop = threading.Event()\n"
        "threads = [threading.Thread(target=stop.wait) for _ in range(3)]\n"
        "[t.start() for t in threads]\n"
        "base = os.getpriority(os.PRIO_PROCESS, os.getpid())\n"
        "def each():\n"
        "    return sorted({os.getpriority(os.PRIO_PROCESS, t) for t in thread_ids(os.getpid())})\n"
        "up = lower_priority(base + 3)\n"
        "after_up = each()\n"
        "again = lower_priority(base + 1)  # a higher priority: left as it is\n"
        "print(json.dumps([base, up, after_up, again, each()]))\n"
        "stop.set()\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    )
    base, up, after_up, again, last = json.loads(done.stdout)
    assert base <= 16, "room to lower the priority in this test's process"
    assert up == base + 3 and after_up == [base + 3], "every thread lowered, not only the main one"
    assert again == base + 3 and last == [base + 3]


def test_the_supervisor_lowers_the_monitor_once_started_and_no_other_role():
    from streams.supervisor import Supervisor

    def argv(settings: Settings, role: str) -> list[str]:
        sup = Supervisor(settings, (role,))
        return sup._argv(sup.children[role])

    settings = Settings()
    assert argv(settings, "monitor")[-4:-2] == ["--nice-after-start", "19"]
    for role in ("scoring", "feedback", "performance", "retrainer"):
        assert "--nice-after-start" not in argv(settings, role), role
    same = settings.model_copy(
        update={"scoring": settings.scoring.model_copy(update={"monitor_niceness": 10})}
    )
    assert "--nice-after-start" not in argv(same, "monitor"), "no lower than the loop's roles"


def test_the_supervisor_has_the_insight_roles_give_way_only_beside_scoring():
    """--scoring-first where the roles share the cores with a scoring role, and only for
    the roles that read through batches (monitor, feedback, learner)."""
    from schemas.settings import LearnerSettings
    from streams.supervisor import Supervisor

    settings = Settings(learner=LearnerSettings(enabled=True))
    roles = ("scoring", "monitor", "feedback", "performance", "retrainer", "learner")
    sup = Supervisor(settings, roles)
    flagged = {r for r in roles if "--scoring-first" in sup._argv(sup.children[r])}
    assert flagged == {"monitor", "feedback", "learner"}
    alone = Supervisor(settings, ("monitor", "feedback", "learner"))  # scoring elsewhere
    assert not any("--scoring-first" in alone._argv(c) for c in alone.children.values())


def test_the_control_fold_is_waited_for_until_it_reaches_the_topic_end():
    from streams.roles.control import FoldProgress

    async def go() -> None:
        progress = FoldProgress({0: 5, 1: 2})
        assert await progress.reached({0: 5, 1: 2}, timeout_s=60), "already there"
        waiting = asyncio.create_task(progress.reached({0: 8, 1: 2}, timeout_s=60))
        await progress.advanced({0: 7, 1: 2})
        await asyncio.sleep(0)  # let the waiter look (no time passes)
        assert not waiting.done(), "one event short on partition 0"
        await progress.advanced({0: 8, 1: 2})
        assert await waiting
        # a fold that does not get there: False once the (here tiny) timeout is up
        assert not await progress.reached({0: 9, 1: 2}, timeout_s=0.001)
        assert progress.folded == {0: 8, 1: 2}

    asyncio.run(go())

"""Child processes weir starts: PID file, log, start and stop; waiting on a condition.

Used by the local stack (Kafka, MinIO), the model host and the local deployer
(model servers), and local runs of workers. Each service writes
``<run_dir>/<name>.pid`` and ``<run_dir>/<name>.log``. A PID is only trusted
while ``/proc/<pid>/cmdline`` still mentions the service's own directory, so
``down`` never signals a recycled PID that now belongs to something else.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from schemas import StackError


def free_port() -> int:
    """A TCP port on 127.0.0.1 that is free right now (the OS picks it)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def thread_ids(pid: int) -> list[int]:
    """The ids of ``pid``'s threads (from /proc; just ``pid`` where there is none)."""
    try:
        return [int(t) for t in os.listdir(f"/proc/{pid}/task")]
    except OSError:
        return [pid]


def lower_priority(niceness: int) -> int:
    """Lower this process's CPU priority to ``niceness``: every thread's, as Linux keeps one
    per thread (librdkafka's threads too; threads started later inherit their starter's),
    and its session's autogroup's when it leads a session (:func:`lower_autogroup`).
    Never raises a priority; returns the main thread's niceness after."""
    for tid in thread_ids(os.getpid()):
        with contextlib.suppress(OSError):  # a thread that has just ended
            if os.getpriority(os.PRIO_PROCESS, tid) < niceness:
                os.setpriority(os.PRIO_PROCESS, tid, niceness)
    lower_autogroup(niceness)
    return os.getpriority(os.PRIO_PROCESS, os.getpid())


def autogroup_niceness(pid: int | str = "self") -> int | None:
    """The niceness of ``pid``'s autogroup (``/proc/<pid>/autogroup``: ``/autogroup-7 nice
    0``), or None where it has none: a kernel without autogroups, or a process in the root
    group (the file is empty there: init's, and its descendants' until one of them starts
    a session; a CI runner's often are)."""
    try:
        return int(Path(f"/proc/{pid}/autogroup").read_text().split()[-1])
    except (OSError, ValueError, IndexError):
        return None


def niced_children_lead_sessions() -> bool:
    """Whether a child this process nices should lead a session of its own, so that its
    autogroup can be niced too (:func:`lower_autogroup`): only where this process sits in
    an autogroup, in which a niceness orders a process only against its own session.

    In the root group (no autogroup of its own) every thread already competes with every
    other thread of the group by its own niceness, and an autogroup would pool a child's
    threads (librdkafka's, a pipeline run's processes) under the weight of one: on a CI
    runner in the root group, with both cores hogged, the closed loop's insight roles each
    in a group of its own fell so far behind that the drift's alert had not come when the
    stream ended; niced thread by thread, as before, they had kept up."""
    return autogroup_niceness() is not None


def lower_autogroup(niceness: int) -> bool:
    """Lower the CPU priority of this process's autogroup to ``niceness``, when this process
    leads its session (the group is then its own); True when it did.

    Where the kernel schedules by autogroup (``kernel.sched_autogroup_enabled``, on in
    most distributions' kernels), the CPU is shared fairly between sessions first, and a
    process's niceness only orders it against processes of its own session: the insight
    roles at niceness 10 in the supervisor's session held back the scoring role, their
    sibling there, but not the broker, the model server or a reader, each in a session
    of its own. Measured with ``bench/peers.py``, every role running, 500 records/s right
    after a 100,000-record backlog: p99 285 to 342 ms; 32 to 37 ms with each niced role
    in a session of its own whose group is niced too. Never raises a priority, and never
    touches a group this process does not lead (a user's shell session)."""
    if os.getsid(0) != os.getpid():
        return False
    now = autogroup_niceness()
    if now is None or now >= niceness:
        return False
    try:
        Path("/proc/self/autogroup").write_text(f"{niceness}\n")
    except OSError:  # not allowed here: the process's own niceness still applies
        return False
    return True


def proc_state(pid: int, tid: int | None = None) -> str | None:
    """The state letter from /proc (``Z`` for a zombie, ``T`` stopped) of process ``pid``,
    or of its thread ``tid``; None if gone."""
    path = f"/proc/{pid}/stat" if tid is None else f"/proc/{pid}/task/{tid}/stat"
    try:
        stat = Path(path).read_text()
    except OSError:
        return None
    return stat.rpartition(")")[2].split()[0]  # after the command name, which may hold spaces


def is_running(pid: int) -> bool:
    state = proc_state(pid)
    return state is not None and state not in ("Z", "X")


def _cmdline(pid: int) -> str:
    try:
        return (
            Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        )
    except OSError:
        return ""


def wait_until(
    check: Callable[[], bool],
    *,
    timeout_s: float,
    what: str,
    interval_s: float = 0.25,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
) -> float:
    """Poll ``check`` until it is true; returns seconds waited, raises StackError at the bound."""
    start = clock()
    while True:
        if check():
            return clock() - start
        if clock() - start > timeout_s:
            raise StackError(f"timed out after {timeout_s:.0f}s {what}", service=what, address="")
        sleep(interval_s)


@dataclass(frozen=True)
class ServiceProcess:
    name: str
    run_dir: Path
    marker: str | None = None  # text the command line must contain; default: the home dir

    @property
    def home(self) -> Path:
        """The service's own directory (config, data); its path marks the PID as ours."""
        return self.run_dir / self.name

    @property
    def pid_file(self) -> Path:
        return self.run_dir / f"{self.name}.pid"

    @property
    def log_file(self) -> Path:
        return self.run_dir / f"{self.name}.log"

    def pid(self) -> int | None:
        """The PID of our running process, or None (stale PID files are removed)."""
        try:
            pid = int(self.pid_file.read_text().strip())
        except (OSError, ValueError):
            return None
        if is_running(pid) and (self.marker or str(self.home)) in _cmdline(pid):
            return pid
        self.pid_file.unlink(missing_ok=True)
        return None

    def start(self, argv: Sequence[str], env: Mapping[str, str] | None = None) -> int:
        """Start ``argv`` detached (own session), logging to the log file; returns its PID.

        ``argv[0]`` must be an absolute path. ``posix_spawn`` rather than ``Popen``:
        the service outlives this process, so there is no Popen object to keep.
        """
        running = self.pid()
        if running is not None:
            return running
        self.home.mkdir(parents=True, exist_ok=True)
        actions = [
            (os.POSIX_SPAWN_OPEN, 0, os.devnull, os.O_RDONLY, 0),
            (
                os.POSIX_SPAWN_OPEN,
                1,
                str(self.log_file),
                os.O_WRONLY | os.O_CREAT | os.O_APPEND,
                0o644,
            ),
            (os.POSIX_SPAWN_DUP2, 1, 2),
        ]
        pid = os.posix_spawn(
            argv[0],
            list(argv),
            dict(env if env is not None else os.environ),
            file_actions=actions,
            setsid=True,
        )
        self.pid_file.write_text(f"{pid}\n")
        # Until the child has exec'd, /proc shows this process's command line and
        # pid() would not recognise it: wait (briefly) for the exec to happen.
        marker = self.marker or str(self.home)
        wait_until(
            lambda: marker in _cmdline(pid) or not is_running(pid),
            timeout_s=10,
            what=f"starting {self.name}",
            interval_s=0.01,
        )
        return pid

    def stop(self, *, timeout_s: float = 30.0) -> int | None:
        """SIGTERM our PID, wait for it to exit, SIGKILL at the bound; returns the PID stopped."""
        pid = self.pid()
        if pid is None:
            return None
        os.kill(pid, signal.SIGTERM)
        try:
            wait_until(
                lambda: not is_running(pid), timeout_s=timeout_s, what=f"stopping {self.name}"
            )
        except StackError:
            os.kill(pid, signal.SIGKILL)
            wait_until(lambda: not is_running(pid), timeout_s=10, what=f"killing {self.name}")
        self._reap(pid)
        self.pid_file.unlink(missing_ok=True)
        return pid

    @staticmethod
    def _reap(pid: int) -> None:
        # When this process started the service, collect the exit status so no zombie stays.
        with contextlib.suppress(ChildProcessError):
            os.waitpid(pid, os.WNOHANG)

    def log_tail(self, lines: int = 20) -> str:
        try:
            return "\n".join(self.log_file.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

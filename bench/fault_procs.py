"""Worker processes of the fault suite: started, watched (alive, restarts, RSS, log), stopped.

A worker is either one role in one process (``weir worker --role scoring``) or
a supervisor over some roles (``weir worker`` for all of them, or this file run
as a script for a subset), which restarts a role that exits and says so in its
log (``role R exited with ...``): that line is how restarts are counted.

    python bench/fault_procs.py --worker-id ID ROLE [ROLE ...]   # supervised roles
"""

from __future__ import annotations

import argparse
import re
import sys
from dataclasses import dataclass
from pathlib import Path

from connectors.process import ServiceProcess, is_running
from schemas.settings import Settings, settings_env
from streams.context import ROLES

EXITED = re.compile(r"role (\w+) exited with (-?\w+)")
PAGE_KB = 4


def children_by_role(parent: int) -> dict[str, int]:
    """Live children of a supervisor, by the ``--role R`` in their command line."""
    found: dict[str, int] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text().rpartition(")")[2].split()
            argv = (entry / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if stat[1] != str(parent) or stat[0] in ("Z", "X") or b"--role" not in argv:
            continue
        found[argv[argv.index(b"--role") + 1].decode()] = int(entry.name)
    return found


def rss_mb(pid: int | None) -> float | None:
    """Resident set size of a live process, MB (from /proc/<pid>/statm)."""
    if pid is None:
        return None
    try:
        pages = int(Path(f"/proc/{pid}/statm").read_text().split()[1])
    except (OSError, IndexError, ValueError):
        return None
    return pages * PAGE_KB / 1024


@dataclass
class Worker:
    """One started worker process (a role, or a supervisor over roles)."""

    proc: ServiceProcess
    roles: tuple[str, ...]
    supervised: bool
    live_port: int = 0

    @property
    def pid(self) -> int | None:
        return self.proc.pid()

    def log(self) -> str:
        try:
            return self.proc.log_file.read_text(errors="replace")
        except OSError:
            return ""

    def log_size(self) -> int:
        try:
            return self.proc.log_file.stat().st_size
        except OSError:
            return 0

    def log_since(self, offset: int) -> str:
        try:
            with self.proc.log_file.open("rb") as f:
                f.seek(offset)
                return f.read().decode(errors="replace")
        except OSError:
            return ""

    def count(self, text: str) -> int:
        return self.log().count(text)

    def restarts(self) -> dict[str, int]:
        """Exits of each role the supervisor saw (and so restarted)."""
        seen: dict[str, int] = {}
        for role, _code in EXITED.findall(self.log()):
            seen[role] = seen.get(role, 0) + 1
        return seen

    def role_pid(self, role: str) -> int | None:
        pid = self.pid
        if pid is None:
            return None
        return children_by_role(pid).get(role) if self.supervised else pid

    def alive(self) -> bool:
        """The process runs, and under a supervisor every role has a live process."""
        pid = self.pid
        if pid is None or not is_running(pid):
            return False
        return not self.supervised or set(children_by_role(pid)) >= set(self.roles)

    def stop(self) -> None:
        self.proc.stop(timeout_s=20)


def start_worker(
    settings: Settings,
    run_dir: Path,
    worker_id: str,
    roles: tuple[str, ...] = ("scoring",),
    *,
    supervised: bool = True,
) -> Worker:
    """Start a worker for ``roles`` with ``settings`` (its live port included)."""
    weir = str(Path(sys.executable).parent / "weir")
    tail = ["--worker-id", worker_id]
    if not supervised:
        (role,) = roles
        argv = [weir, "worker", "--role", role, *tail]
    elif set(roles) == set(ROLES):
        argv = [weir, "worker", *tail]
    else:
        argv = [sys.executable, str(Path(__file__).resolve()), *tail, *roles]
    proc = ServiceProcess(f"worker-{worker_id}", run_dir, marker=f"--worker-id {worker_id}")
    # asks for the Python stacks on a crash in C (none reached the log in our runs)
    proc.start(argv, env=settings_env(settings) | {"PYTHONFAULTHANDLER": "1"})
    return Worker(proc, roles, supervised, settings.live.port)


def main() -> None:
    parser = argparse.ArgumentParser(description="weir's supervisor over some roles")
    parser.add_argument("--worker-id", required=True)
    parser.add_argument("roles", nargs="+", choices=ROLES)
    args = parser.parse_args()
    from streams.supervisor import run_supervisor

    settings = Settings()
    scoring = settings.scoring.model_copy(update={"worker_id": args.worker_id})
    run_supervisor(settings.model_copy(update={"scoring": scoring}), tuple(args.roles))


if __name__ == "__main__":
    main()

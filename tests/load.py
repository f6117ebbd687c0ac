"""Load for tests that must pass on a busy machine: a CPU hog the test starts and stops.

``cpu_hog()`` starts one busy-looping process per core (at normal priority, so
they compete with weir on equal terms), yields their PIDs, and kills them on
the way out, whatever happened. Each hog also stops itself after ``max_s``
seconds, so one can never outlive a killed test run by long.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
from collections.abc import Iterator

HOG = "import time\nend = time.monotonic() + {max_s}\nwhile time.monotonic() < end:\n    pass\n"


@contextlib.contextmanager
def cpu_hog(processes: int | None = None, *, max_s: float = 900.0) -> Iterator[list[int]]:
    count = processes or os.cpu_count() or 2
    procs = [
        subprocess.Popen([sys.executable, "-c", HOG.format(max_s=max_s)]) for _ in range(count)
    ]
    try:
        yield [p.pid for p in procs]
    finally:
        for p in procs:
            with contextlib.suppress(ProcessLookupError):
                p.send_signal(signal.SIGKILL)
            p.wait()


def busy_seconds(pid: int) -> float:
    """CPU seconds a process has used (utime + stime), to show a hog really ran."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

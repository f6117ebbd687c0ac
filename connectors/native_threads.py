"""How many threads a process's numeric libraries (OpenMP, OpenBLAS, MKL) may use.

On a host shared with other busy processes an OpenMP team is a trap: its
threads wait for each other at every parallel step, and a thread whose core is
taken waits out another process's time slice. Measured here (2 cores, six
processes spinning): a histogram gradient-boosting fit of 1,200 rows took 87 s
on OpenMP's default two threads and 0.6 s on one; 50 predictions of 64 rows
took 0.91 s against 0.16 s. So weir's processes that fit or predict run their
numeric libraries on a set number of threads, one by default:
``WEIR_RETRAINING__FIT_THREADS`` for the pipeline's steps and
``WEIR_KSERVE__THREADS`` for model servers. On a host of its own, with large
batches, more may pay.
"""

from __future__ import annotations

import os

from threadpoolctl import threadpool_limits

VARIABLES = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")


def thread_env(threads: int) -> dict[str, str]:
    """The environment that gives a process's numeric libraries ``threads`` threads (read
    when a library loads: for child processes, and for what this one loads later)."""
    return dict.fromkeys(VARIABLES, str(threads))


def limit_threads(threads: int) -> None:
    """``threads`` threads for this process's numeric libraries: those it loads from now on
    (and its children) by the environment, those already loaded by threadpoolctl."""
    os.environ.update(thread_env(threads))
    threadpool_limits(limits=threads)

"""Numeric libraries on the threads weir's settings give them, in every thread of a process
and in the pipeline's steps (child processes)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

from connectors import native_threads
from connectors.pipeline import _weir_environment
from schemas.settings import RetrainingSettings, Settings

# Run in a fresh interpreter: what counts is the state of libraries loaded after the call
PROBE = """
import json, sys, threading
from connectors.native_threads import limit_threads
limit_threads(int(sys.argv[1]))
from sklearn.ensemble import HistGradientBoostingClassifier  # loads OpenMP after the call
from threadpoolctl import threadpool_info
seen = {}
def look(where):
    seen[where] = sorted({(i["user_api"], i["num_threads"]) for i in threadpool_info()})
look("main")
worker = threading.Thread(target=look, args=("worker",))
worker.start(); worker.join()
print(json.dumps(seen))
"""


def _probe(threads: int) -> dict[str, list[list[object]]]:
    env = {k: v for k, v in os.environ.items() if k not in native_threads.VARIABLES}
    out = subprocess.run(
        [sys.executable, "-c", PROBE, str(threads)],
        capture_output=True,
        text=True,
        check=True,
        env=env,
        timeout=120,
    )
    return json.loads(out.stdout)


def test_limit_threads_holds_for_libraries_loaded_later_and_in_every_thread():
    seen = _probe(1)
    for where in ("main", "worker"):
        apis = dict(map(tuple, seen[where]))
        assert apis.get("openmp") == 1, seen  # scikit-learn's OpenMP, loaded after the call
        assert apis.get("blas") == 1, seen  # numpy's BLAS, loaded before it


def test_limit_threads_gives_the_number_asked_for():
    apis = dict(map(tuple, _probe(2)["worker"]))
    assert apis.get("openmp") == 2


def test_the_pipeline_steps_inherit_fit_threads_and_the_environment_is_restored(monkeypatch):
    monkeypatch.setenv("OMP_NUM_THREADS", "7")
    monkeypatch.delenv("MKL_NUM_THREADS", raising=False)
    settings = Settings(retraining=RetrainingSettings(fit_threads=3))
    with _weir_environment(settings):
        assert {v: os.environ.get(v) for v in native_threads.VARIABLES} == dict.fromkeys(
            native_threads.VARIABLES, "3"
        )
        assert os.environ["WEIR_RETRAINING__FIT_THREADS"] == "3"
    assert os.environ["OMP_NUM_THREADS"] == "7"
    assert "MKL_NUM_THREADS" not in os.environ


def test_fit_and_serve_default_to_one_thread():
    s = Settings()
    assert s.retraining.fit_threads == 1
    assert s.kserve.threads == 1

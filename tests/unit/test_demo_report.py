"""The demo: it streams once every role is ready, and its closing table shows the moments
in the order they happened, each run's own verdict."""

from __future__ import annotations

import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from rich.console import Console

from connectors.process import free_port
from schemas import Event, PipelineRunEvent, Prediction, ServiceError, new_event
from schemas.settings import Settings
from streams.dev import loop
from streams.dev.demo_report import Timeline
from streams.dev.loop import (
    LoopConfig,
    LoopReport,
    _enough,
    _run_going,
    _Served,
    print_report,
    wait_ready,
)


def test_the_timeline_is_in_order_and_answers_without_a_run_have_their_own_row():
    tl = Timeline(
        drift_at=3000,
        alert_at=3599,
        alert="io.weir.alert.performance.v1 alert-1",
        run_started_at=3899,
        run_finished_at=9114,
        run_id="run-a",
        swap_at=6400,
        new_version="online",
        served_from={"1": 0, "online": 6400, "2": 9115},
        take_over_at=6299,
        take_over="online beat the served version on the same 500 records",
    )
    report = LoopReport(
        model="sea",
        v1="1",
        timeline=tl,
        runs=[
            ("run-a", "requested", ""),
            ("none-alert-2", "not-started", "feature drift informs"),
            ("run-a", "started", ""),
            ("none-alert-3", "not-started", "feature drift informs"),
            ("run-a", "succeeded", "registered version 2"),
        ],
    )
    console = Console(width=200, record=True)
    print_report(report, console)
    lines = console.export_text().splitlines()
    moments = [
        "concept drift",
        "alert that started",
        "retraining run started",
        "the online learner took over",
        "first record scored by the new version",
        "run finished",
        "first record scored by v2",
        "alerts that started no run",
    ]
    at = [next(i for i, line in enumerate(lines) if m in line) for m in moments]
    assert at == sorted(at), "in the order they happened"
    finished = lines[at[5]]
    assert "succeeded: registered version 2" in finished and "feature drift" not in finished
    assert "2 alerts: feature drift informs" in lines[at[7]]


def test_the_demo_streams_only_once_every_role_is_ready():
    answers = iter([503, 503, 200])

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            code = next(answers, 200)
            body = b"ready\n" if code == 200 else b"not ready: learner: restoring its model\n"
            self.send_response(code)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        port = server.server_address[1]
        assert wait_ready(port, timeout_s=30) >= 0
        assert next(answers, None) is None, "it asked until the answer was 200"
    finally:
        server.shutdown()
        server.server_close()
    with pytest.raises(TimeoutError, match="not ready after"):
        wait_ready(free_port(), timeout_s=1)


def test_a_broker_gone_at_the_end_leaves_a_warning_not_an_error(monkeypatch):
    def unreachable(settings, prefix):
        raise ServiceError("Kafka did not answer", service="kafka", address="127.0.0.1:9092")

    monkeypatch.setattr(loop, "delete_topics", unreachable)
    console = Console(record=True, width=200)
    loop._delete_run_topics(Settings(), console)  # no raise: the run's own error shows instead
    text = console.export_text()
    assert "were not deleted" in text and "did not answer" in text

    monkeypatch.setattr(loop, "delete_topics", lambda settings, prefix: ["a", "b"])
    loop._delete_run_topics(Settings(), console)
    assert "deleted the run's 2 topics" in console.export_text()


class _Arrivals:
    """What `_Served` reads of a Collector: the predictions in arrival order."""

    def __init__(self) -> None:
        self.predictions: list[Event[Prediction]] = []

    def events_since(self, type_: str, start: int) -> list:
        assert type_ == "io.weir.prediction.v1"
        return self.predictions[start:]

    def add(self, model: str, version: str, *, shadow: bool = False) -> None:
        data = Prediction(
            record_id=f"r-{len(self.predictions)}",
            model=model,
            version=version,
            url="http://127.0.0.1:1",
            output=1,
            latency_ms=2.0,
            shadow=shadow,
        )
        self.predictions.append(new_event(data, source="test"))


def test_the_streams_view_of_served_versions_counts_each_prediction_once():
    arrivals = _Arrivals()
    served = _Served(arrivals, "sea")  # type: ignore[arg-type]
    served.versions.add("1")
    for _ in range(3):
        arrivals.add("sea", "1")
    arrivals.add("other", "9")  # another model's
    assert served.update() == set()
    assert (served.count, served.last) == (3, "1")

    arrivals.add("sea", "2", shadow=True)  # mirrored, never served
    arrivals.add("sea", "2")
    arrivals.add("sea", "2")
    assert served.update() == {"2"}  # version 2 served for the first time: the swap
    assert served.update() == set()  # nothing new since
    assert (served.count, served.last, served.versions) == (5, "2", {"1", "2"})


class _RunEvents:
    """What `_enough` reads of a Collector: the pipeline-run events so far."""

    def __init__(self) -> None:
        self.runs: list[Event[PipelineRunEvent]] = []

    def events(self, type_: str) -> list:
        assert type_ == "io.weir.pipeline.run.v1"
        return self.runs

    def add(self, run_id: str, status: str) -> None:
        data = PipelineRunEvent(run_id=run_id, model="sea", status=status, pipeline="retrain")
        self.runs.append(new_event(data, source="test"))


def test_the_stream_goes_on_until_a_run_was_asked_for_and_has_its_rows():
    """On a machine short of CPU the insight roles lag: the learner may take over long
    before the performance alert, and a run asked for after the stream would wait for rows
    that never come. The stream ends only once a run has them (or at max_records)."""
    cfg = LoopConfig(min_records=5000, after_swap=1000)
    runs = _RunEvents()

    def enough(i: int, swapped_at: int | None, *, on: bool = True) -> bool:
        return _enough(cfg, i, swapped_at, runs, runs=on)  # type: ignore[arg-type]

    assert not enough(4999, 100)  # fewer than min_records
    assert not enough(6000, None)  # no new version served yet
    assert not enough(6000, 5500)  # after_swap records have not followed the swap
    assert not enough(6500, 5500)  # no run asked for yet: the alert has not come
    assert enough(6500, 5500, on=False)  # unless retraining runs are off
    runs.add("none-a1", "not-started")  # a feature-drift alert's answer starts no run
    assert not enough(6500, 5500)
    runs.add("run-a", "requested")
    assert not enough(6600, 5500)  # the run gathers the rows after its alert
    runs.add("run-a", "started")
    assert enough(6700, 5500)  # its verdict may come after the stream
    runs.add("run-b", "requested")  # a held alert's next run
    assert not enough(6800, 5500)
    runs.add("run-a", "not-promoted")
    runs.add("run-b", "started")
    assert enough(6900, 5500)
    assert _run_going(runs)  # type: ignore[arg-type]  # run-b: no verdict yet
    runs.add("run-b", "failed")
    assert not _run_going(runs)  # type: ignore[arg-type]


def test_the_status_line_shows_the_newest_run_not_an_alert_answered_without_one():
    from streams.dev.loop import _status_line

    class Events(_RunEvents):
        def count(self, prefix: str) -> int:
            assert prefix == "io.weir.alert."
            return 3

    runs, served = Events(), _Served(_Arrivals(), "sea")  # type: ignore[arg-type]
    line = lambda: _status_line(runs, served, LoopConfig(drift_at=10), 20)  # type: ignore[arg-type]  # noqa: E731
    assert line().endswith("alerts 3 | run -")
    runs.add("run-a", "requested")
    runs.add("run-a", "started")
    runs.add("none-a2", "not-started")  # a feature-drift alert answered while the run goes
    assert line().startswith("drifted | scored 0 | serving ")
    assert line().endswith("alerts 3 | run started")


class _Polls(_RunEvents):
    """A Collector whose waits check their condition once a (simulated) second, after
    running what ``script`` says happens that second."""

    def __init__(self, script: dict[int, Callable[[], None]]) -> None:
        super().__init__()
        self.t = 0
        self.script = script

    def wait(self, condition: Callable[[], bool], *, deadline_s: float) -> bool:
        end = self.t + deadline_s
        while self.t < end:
            self.script.pop(self.t, lambda: None)()
            if condition():
                return True
            self.t += 1
        return condition()


@pytest.mark.parametrize(
    ("caught_up", "asked", "ends", "said"),
    [
        (40, 45, 45, ""),  # the alert's run is asked for just after the roles caught up
        (40, None, 40 + loop.SENT_S, ""),  # no alert came: a few seconds more, then on
        (None, 100, 100, ""),  # asked for while they were still behind
        (None, None, 300, "still behind 300s after"),  # never caught up: said, not hidden
    ],
)
def test_after_the_last_prediction_the_loop_waits_for_the_insight_roles(
    monkeypatch: pytest.MonkeyPatch, caught_up: int | None, asked: int | None, ends: int, said: str
):
    """Scoring comes first: the insight roles can be minutes behind when the last record
    is scored, and the alert that starts the run still to come. The loop waits until a run
    is asked for, or until they have read everything (and SENT_S more for what they sent
    last), ``insight_s`` at most; a broker that does not answer once is asked again."""
    behind = [1000]
    script: dict[int, Callable[[], None]] = {}
    if caught_up is not None:
        script[caught_up] = lambda: behind.__setitem__(0, 0)
    if asked is not None:
        script[asked] = lambda: runs.add("run-a", "requested")
    runs = _Polls(script)

    def insight_behind(settings: Settings, client: object) -> int:
        if runs.t == 7:
            raise ServiceError("no answer", service="kafka", address="127.0.0.1:9092")
        return behind[0]

    monkeypatch.setattr(loop, "insight_behind", insight_behind)
    monkeypatch.setattr(loop, "admin", lambda settings: object())  # no broker here
    console = Console(record=True, width=200)
    loop._await_insight(Settings(), runs, LoopConfig(insight_s=300), console)  # type: ignore[arg-type]
    assert runs.t == ends
    text = console.export_text()
    assert (said in text) if said else "still behind" not in text


def test_a_run_already_asked_for_needs_no_wait_for_the_insight_roles(
    monkeypatch: pytest.MonkeyPatch,
):
    runs = _Polls({})
    runs.add("run-a", "requested")
    monkeypatch.setattr(loop, "insight_behind", lambda *args: pytest.fail("not asked"))
    loop._await_insight(Settings(), runs, LoopConfig(), Console())  # type: ignore[arg-type]
    assert runs.t == 0

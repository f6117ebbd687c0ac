"""A worker's live view on real parts: a kserve.ModelServer, a Faust worker process,
the real broker, Prometheus' text format over HTTP and a real headless Chromium.

The worker gets topics of its own (a prefix for this test), so every count on
its ``/metrics`` can be checked against exactly what the test produced: N
records (plus one malformed message) → N predictions by version 1, one dead
letter, rolling accuracy from the labels, consumer lag drained to 0, and a
swap to an endpoint that is not ready shown as rejected. Then Chromium renders
the status page (its script fetches ``status.json``), the test reads the DOM it
produced, and writes a screenshot to ``out/status-page.png``.
"""

from __future__ import annotations

import base64
import re
import struct
import subprocess
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from connectors.kafka import EventProducer, ensure_topics
from connectors.process import free_port, wait_until
from schemas import InputRecord, Label, new_event
from schemas.settings import (
    KServeSettings,
    LiveSettings,
    RetrainingSettings,
    ScoringSettings,
    Settings,
    StackSettings,
)
from schemas.topics import Topic, topic_name
from streams.dev.localrun import Collector, start_worker
from streams.live import LiveStatus
from streams.servers.deployers import serve
from tests.integration.flip_models import (
    activation,
    expected_output,
    publish_flip_models,
    publish_route,
)

pytestmark = pytest.mark.integration

CHROMIUM = Path("/usr/bin/chromium")  # Debian's package; `make deps-browser` installs it
SCREENSHOT = Path(__file__).resolve().parents[2] / "out" / "status-page.png"
N = 300  # records scored by v1; below the performance detector's 500-outcome warm-up
WORKER_READY_S = 90  # worker process start + control replay + endpoint probe on 2 shared cores
SCORED_S = 120  # scoring and labelling a few hundred records, worker start included
LAG_DRAINED_S = 30  # Faust commits every 1 s; the lag is sampled every 0.5 s here
ROUTE_DECISION_S = 30  # the not-ready endpoint is waited on for control_ready_timeout_s (2 s)
BROWSER_S = 90  # a cold headless Chromium start plus 5 s of virtual time
CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--window-size=1200,800",
    "--virtual-time-budget=5000",
]


def http_status(url: str) -> int | None:
    try:
        return httpx.get(url, timeout=2.0).status_code
    except httpx.TransportError:
        return None


class Scrape:
    """One scrape of /metrics: sample name + labels → value."""

    def __init__(self, url: str) -> None:
        answer = httpx.get(url, timeout=5.0)
        answer.raise_for_status()
        assert answer.headers["content-type"].startswith("text/plain; version=")
        self.samples = {
            (s.name, frozenset(s.labels.items())): s.value
            for family in text_string_to_metric_families(answer.text)
            for s in family.samples
        }

    def value(self, name: str, **labels: str) -> float | None:
        return self.samples.get((name, frozenset(labels.items())))

    def all(self, name: str, **labels: str) -> dict[frozenset[tuple[str, str]], float]:
        """Every sample of ``name`` carrying ``labels`` (the others are left out)."""
        want = frozenset(labels.items())
        return {ls: v for (n, ls), v in self.samples.items() if n == name and want <= ls}


def chromium(url: str, profile: Path, *extra: str) -> str:
    run = subprocess.run(
        [str(CHROMIUM), *CHROMIUM_FLAGS, f"--user-data-dir={profile}", *extra, url],
        capture_output=True,
        text=True,
        timeout=BROWSER_S,
        check=False,
    )
    assert run.returncode == 0, f"chromium failed ({run.returncode}): {run.stderr[-2000:]}"
    return run.stdout


def png_size(path: Path) -> tuple[int, int]:
    head = path.read_bytes()[:24]
    assert head[:8] == b"\x89PNG\r\n\x1a\n" and head[12:16] == b"IHDR", "not a PNG"
    width, height = struct.unpack(">II", head[16:24])
    return width, height


def test_metrics_status_and_page_of_a_real_worker(live_stack: Settings, unique: str, tmp_path):
    assert CHROMIUM.exists(), f"{CHROMIUM} is missing: run `make deps-browser`"
    model, port = f"live{unique}", free_port()
    kafka = live_stack.kafka.model_copy(
        update={"topic_prefix": f"{live_stack.kafka.topic_prefix}-live{unique}"}
    )
    settings = live_stack.model_copy(
        update={
            "kafka": kafka,
            "scoring": ScoringSettings(
                model=model, batch_size=50, batch_wait_s=0.05, control_ready_timeout_s=2.0
            ),
            "kserve": KServeSettings(timeout_s=2.0, max_retries=1),
            "retraining": RetrainingSettings(enabled=False),
            "stack": StackSettings(cache_dir=live_stack.stack.cache_dir, state_dir=tmp_path),
            "live": LiveSettings(port=port, lag_interval_s=0.5, throughput_window_s=60.0),
        }
    )
    ensure_topics(settings)
    records_t, labels_t = topic_name(kafka, Topic.RECORDS), topic_name(kafka, Topic.LABELS)
    publish_flip_models(settings, model)
    v1_port = free_port()
    v1_server = serve(settings, model, "1", v1_port)
    producer = EventProducer(settings)

    def control(version: str, port: int) -> None:
        publish_route(settings, activation(model, version, f"http://127.0.0.1:{port}"), producer)

    control("1", v1_port)
    worker = start_worker(settings, unique)
    base = f"http://127.0.0.1:{port}"
    out = Collector(
        settings,
        [topic_name(kafka, Topic.PREDICTIONS), topic_name(kafka, Topic.DEAD_LETTER)],
        group=f"check-{unique}",
    )
    try:
        wait_until(
            lambda: http_status(f"{base}/readyz") == 200,
            timeout_s=WORKER_READY_S,
            what="the worker's /readyz",
        )
        assert http_status(f"{base}/healthz") == 200

        # N records, each labelled (every 10th label disagrees with v1), and one bad message
        for i in range(N):
            a = ((i * 7919) % 2001 - 1000) / 100.0 or 0.5
            rid = f"{unique}-{i}"
            producer.produce(
                records_t, new_event(InputRecord(id=rid, features={"a": a, "b": 1.0}), source="t")
            )
            truth = expected_output("1", a) ^ (i % 10 == 0)
            producer.produce(labels_t, new_event(Label(record_id=rid, label=truth), source="t"))
        bad_key = f"bad-{unique}".encode()
        producer.produce_raw(records_t, b"{not json", key=bad_key)
        producer.flush()

        out.until(
            lambda: (
                len(out.events("io.weir.prediction.v1")) >= N
                and len(out.events("io.weir.deadletter.v1")) >= 1
            ),
            deadline_s=SCORED_S,
            what=f"{N} predictions and 1 dead letter on the topics",
        )
        stored = out.events("io.weir.prediction.v1")
        assert len(stored) == N and {p.data.version for p in stored} == {"1"}
        [letter] = out.events("io.weir.deadletter.v1")
        assert letter.data.key_base64 == base64.b64encode(bad_key).decode()

        # /metrics matches what was stored (counted after Kafka acked the outputs)
        metrics = f"{base}/metrics"
        wait_until(
            lambda: (
                Scrape(metrics).value(
                    "weir_predictions_total", role="scoring", model=model, version="1"
                )
                == N
            ),
            timeout_s=SCORED_S,
            what=f"weir_predictions_total = {N}",
        )
        scrape = Scrape(metrics)
        # every sample says which role reported it (the supervisor merges the roles' views)
        scoring = {"role": "scoring"}
        assert scrape.value("weir_records_consumed_total", **scoring, model=model) == N + 1
        assert {ls: v for ls, v in scrape.all("weir_predictions_total").items() if v} == {
            frozenset({("role", "scoring"), ("model", model), ("version", "1")}): N
        }
        assert {ls: v for ls, v in scrape.all("weir_dead_letters_total").items() if v} == {
            frozenset({("role", "scoring"), ("error_class", letter.data.error_class)}): 1
        }
        assert scrape.value("weir_model_active_version", **scoring, model=model, version="1") == 1
        assert (
            scrape.value("weir_model_call_seconds_count", **scoring, model=model, version="1") >= 1
        )

        # status.json: the route, the counts and throughput over the (60 s) window
        status = LiveStatus.model_validate_json(httpx.get(f"{base}/status.json").text)
        assert status.ready and status.model == model and status.worker == unique
        assert [(r.model, r.active) for r in status.routes] == [(model, "1")]
        assert status.records_consumed == N + 1 and status.predictions == {"1": N}
        assert status.dead_letters == 1
        assert status.throughput_rps > 0

        # rolling accuracy from the labels: 9 in 10 agree with v1
        def accuracy_of_v1() -> float | None:
            return Scrape(metrics).value(
                "weir_rolling_accuracy", role="performance", model=model, version="1"
            )

        wait_until(
            lambda: (
                accuracy_of_v1() is not None
                and LiveStatus.model_validate_json(httpx.get(f"{base}/status.json").text)
                .accuracy[0]
                .outcomes
                == N
            ),
            timeout_s=SCORED_S,
            what=f"{N} labelled outcomes",
        )
        assert accuracy_of_v1() == 0.9

        # consumer lag: sampled off the hot path, drains to 0 on every partition
        def lag() -> dict[frozenset[tuple[str, str]], float]:
            return Scrape(metrics).all("weir_consumer_lag_records", role="scoring")

        wait_until(
            lambda: len(lag()) == kafka.record_partitions and sum(lag().values()) == 0,
            timeout_s=LAG_DRAINED_S,
            what="consumer lag 0 on every records partition",
        )

        # a swap to an endpoint that is not ready: shown as rejected, v1 stays active
        control("2", free_port())

        def swaps() -> list:
            return LiveStatus.model_validate_json(httpx.get(f"{base}/status.json").text).swaps

        wait_until(
            lambda: any(h.kind == "route" and h.version == "2" for h in swaps()),
            timeout_s=ROUTE_DECISION_S,
            what="the route decision for v2",
        )
        [rejected] = [h for h in swaps() if h.version == "2"]
        assert rejected.ok is False and "not ready" in rejected.summary
        assert (
            Scrape(metrics).value(
                "weir_model_active_version", role="scoring", model=model, version="1"
            )
            == 1
        )

        # a real browser runs the page's script: the DOM shows the active version
        dom = chromium(f"{base}/", tmp_path / "profile-dom", "--dump-dom")
        assert '<body data-loaded="1">' in dom, dom[:2000]
        assert re.search(rf'<tr data-model="{model}" data-active="1">', dom), dom[:4000]
        assert "rejected" in dom
        SCREENSHOT.parent.mkdir(exist_ok=True)
        SCREENSHOT.unlink(missing_ok=True)
        chromium(f"{base}/", tmp_path / "profile-shot", f"--screenshot={SCREENSHOT}")
        assert png_size(SCREENSHOT) == (1200, 800)
        assert SCREENSHOT.stat().st_size > 20_000, "a rendered page, not a blank one"

        # readiness is honest: the active model server stops, /readyz says so and why
        v1_server.stop()
        wait_until(
            lambda: http_status(f"{base}/readyz") == 503,
            timeout_s=ROUTE_DECISION_S,
            what="/readyz 503 with the active model server gone",
        )
        why = httpx.get(f"{base}/readyz").text
        assert f"model server of {model} 1" in why and "not ready" in why, why
        assert http_status(f"{base}/healthz") == 200, "alive, just not ready"
    finally:
        out.close()
        worker.stop()
        v1_server.stop()

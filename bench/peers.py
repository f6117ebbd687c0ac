"""Beside the peers: weir's scoring and the systems a user would pick instead, one run.

Setup (not measured): one scikit-learn LogisticRegression published to the MinIO
registry and served by one ``kserve.ModelServer`` (V2 REST) for the whole run;
N records (``io.weir.record.v1``, binary-mode CloudEvents, 8 float features)
pre-filled once. Each system then gets its own topic prefix, whose records topic
receives a byte-for-byte copy of those N records, and one process that reads them
with a fresh consumer group and writes one ``io.weir.prediction.v1`` per record:

* **bare**: confluent-kafka consume → produce, no model (``peer_loop.py``; the ceiling);
* **naive**: the same loop, one synchronous V2 call per record (``peer_loop.py``);
* **quix**: a Quix Streams app whose ``BatchingSink`` makes one V2 call per batch
  (``peer_quix.py``, run from its own venv under ``~/.cache/weir/bench/quix-venv``,
  created on first use; commit_every / commit_interval = ``--batch-size`` / ``--batch-wait``);
* **weir-scoring** / **weir-all**: the weir worker, scoring role alone / every role
  (``WEIR_COMMANDS``) at weir's default batch size and wait, V2 protocol.

Measured per system, with the process started once and kept running:

* **drain**: records/s from process start to the last of the N predictions read,
  and steady (10 % → 100 % marks); CPU ms per record of the process tree (every
  descendant, from /proc) and of the model server, both over the steady part;
* **latency** at each ``--rates`` value: pre-encoded records produced open-loop at
  their due times for ``--warmup`` + ``--seconds`` s; latency = time this script
  read the prediction - time just before the record was produced (one monotonic
  clock), p50/p99 over the records after the warm-up. "saturated" when fewer than
  95 % of them were predicted within ``--grace`` s of the last send, or the lag grew
  (median of the last fifth > 2x the first fifth + 250 ms); then "done/s" is the
  predictions read per second while the open loop ran.

Predictions are read with a bare consumer (record id from the JSON body), not the
pydantic ``Collector``, which would cap the bare ceiling. System order alternates
per repetition. Every process, topic, group and model the run created is removed.

    .venv/bin/python bench/peers.py [--records 20000] [--rates 500,2000] [--seconds 15]
        [--reps 1] [--systems bare,naive,quix,weir-scoring,weir-all] [--csv PATH]
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import json
import math
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
from _shared import (
    FEATURES,
    bench_settings,
    delete_groups,
    delete_models,
    delete_topics,
    end_offsets,
    groups_with_prefix,
    machine_line,
    prefill,
    publish_model,
    tree_cpu_seconds,
)
from confluent_kafka import OFFSET_BEGINNING, Consumer, Producer, TopicPartition
from rich.console import Console
from rich.table import Table

from connectors.kafka import EventProducer, ensure_topics, list_topics
from connectors.process import ServiceProcess, free_port
from connectors.signing import signed
from schemas import InputRecord, ModelVersionEvent, new_event, to_kafka
from schemas.settings import ScoringSettings, Settings, settings_env
from schemas.topics import Topic, topic_name
from streams.servers.deployers import serve

SYSTEMS = ("bare", "naive", "quix", "weir-scoring", "weir-shadow", "weir-all")
# The weir rows' command after `weir`.
WEIR_COMMANDS = {
    "weir-scoring": ["worker", "--role", "scoring"],
    # the scoring role with a shadow route on a second model server: every batch mirrored
    "weir-shadow": ["worker", "--role", "scoring"],
    "weir-all": ["worker"],
}
WEIR_BATCH = ScoringSettings()  # weir's batch size and wait as a user gets them
QUIX_PINS = ("quixstreams==3.28.1", "httpx==0.28.1")
QUIX_VENV = Path.home() / ".cache" / "weir" / "bench" / "quix-venv"
HERE = Path(__file__).resolve().parent
Message = tuple[bytes, bytes, list[tuple[str, bytes]]]  # key, value, headers
SLOW_MS = 100.0  # a record's latency counted as slow in the phase's log line
TRACE_COLUMNS = ("run", "rate", "sent_s", "sent_epoch_s", "latency_ms", "made_ms", "call_ms")


def quix_python(log: Any) -> Path:
    """The Quix venv's python; the venv is (re)built when missing or its pins changed."""
    python, marker = QUIX_VENV / "bin" / "python", QUIX_VENV / "bench-pins.txt"
    pins = "\n".join(QUIX_PINS)
    if not (python.exists() and marker.exists() and marker.read_text() == pins):
        log(f"creating {QUIX_VENV} with {' '.join(QUIX_PINS)}")
        subprocess.run([sys.executable, "-m", "venv", "--clear", str(QUIX_VENV)], check=True)
        subprocess.run([str(python), "-m", "pip", "install", "-q", *QUIX_PINS], check=True)
        marker.write_text(pins)
    return python


def encode_records(tag: str, n: int) -> list[Message]:
    """``n`` records ``<tag>-<seq>``, encoded up front so producing them costs little."""
    values = np.random.default_rng(5).normal(size=(n, len(FEATURES))).round(6)
    out = []
    for i in range(n):
        record = InputRecord(
            id=f"{tag}-{i:06d}",
            features=dict(zip(FEATURES, map(float, values[i]), strict=True)),
            timestamp=datetime.now(UTC),
        )
        rec = to_kafka(new_event(record, source="bench-peers"))
        assert rec.key is not None
        out.append((rec.key, rec.value, [(k, bytes(v or b"")) for k, v in rec.headers]))
    return out


def copy_topic(settings: Settings, src: str, dst: str) -> int:
    """Copy every message of ``src`` to the same partition of ``dst``, bytes unchanged."""
    bootstrap = settings.kafka.bootstrap_servers
    left = sum(end_offsets(settings, src).values())
    copied = left
    consumer = Consumer(
        {"bootstrap.servers": bootstrap, "group.id": "weir-bench-copy", "enable.auto.commit": False}
    )
    consumer.assign(
        [TopicPartition(src, p, OFFSET_BEGINNING) for p in range(list_topics(settings)[src])]
    )
    producer = Producer({"bootstrap.servers": bootstrap, "linger.ms": 20, "log_level": 3})
    deadline = time.monotonic() + 120
    try:
        while left > 0 and time.monotonic() < deadline:
            for m in consumer.consume(1000, timeout=1.0):
                if m.error() is None:
                    producer.produce(dst, m.value(), m.key(), m.partition(), headers=m.headers())
                    left -= 1
            producer.poll(0)
        if producer.flush(60) or left:
            raise RuntimeError(f"copying {src} → {dst}: {left} left")
    finally:
        consumer.close()
    return copied


def made_at(headers: Any) -> float:
    """A prediction's ce_time header as epoch seconds (NaN when absent)."""
    for name, value in headers or ():
        if name == "ce_time":
            return datetime.fromisoformat(value.decode().replace("Z", "+00:00")).timestamp()
    return float("nan")


class Reader:
    """Reads a predictions topic from its start: first read time per record id."""

    def __init__(self, settings: Settings, topic: str) -> None:
        self.consumer = Consumer(
            {
                "bootstrap.servers": settings.kafka.bootstrap_servers,
                "group.id": "weir-bench-reader",  # assigned, never committed
                "enable.auto.commit": False,
                "fetch.wait.max.ms": 10,
                "log_level": 3,
            }
        )
        parts = list_topics(settings)[topic]
        self.consumer.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in range(parts)])
        self.read_at: dict[str, float] = {}
        self.made_at: dict[str, float] = {}  # the prediction's ce_time, epoch s
        self.call_ms: dict[str, float] = {}  # the model call's latency, from the prediction
        self.predictions = 0
        self.shadows = 0

    def poll(self, timeout: float = 0.05) -> None:
        # consume(n, timeout) waits for n messages or the timeout: poll one, then take the rest
        first = self.consumer.poll(timeout)
        messages = [] if first is None else [first, *self.consumer.consume(1000, timeout=0)]
        now = time.monotonic()
        for m in messages:
            if m.error() is None:
                body = json.loads(m.value())
                if body.get("shadow"):  # mirrored, not served: not what is timed
                    self.shadows += 1
                    continue
                self.predictions += 1
                if body["record_id"] not in self.read_at:
                    self.read_at[body["record_id"]] = now
                    self.made_at[body["record_id"]] = made_at(m.headers())
                    self.call_ms[body["record_id"]] = float(body.get("latency_ms", "nan"))

    def close(self) -> None:
        self.consumer.close()


class OpenLoop(threading.Thread):
    """Produces ``messages`` at ``rate``/s, each at its due time (never in bursts
    unless behind); ``sent_at[seq]`` is the monotonic time just before producing."""

    def __init__(self, bootstrap: str, topic: str, messages: list[Message], rate: float) -> None:
        super().__init__(name="bench-open-loop", daemon=True)
        self.bootstrap, self.topic, self.messages, self.rate = bootstrap, topic, messages, rate
        self.sent_at: list[float] = []
        self.sent_wall: list[float] = []  # epoch s, to set against the predictions' ce_time
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            producer = Producer(
                {"bootstrap.servers": self.bootstrap, "linger.ms": 0, "acks": "all", "log_level": 3}
            )
            producer.list_topics(self.topic, timeout=10)  # connected before the first record
            start = time.monotonic()
            for seq, (key, value, headers) in enumerate(self.messages):
                delay = start + seq / self.rate - time.monotonic()
                if delay > 0:
                    time.sleep(delay)
                self.sent_at.append(time.monotonic())
                self.sent_wall.append(time.time())
                producer.produce(self.topic, value, key, headers=headers)
                producer.poll(0)
            producer.flush(30)
        except BaseException as exc:  # surfaced by the main thread
            self.error = exc


@dataclass
class Latency:
    rate: int
    measured: int = 0
    completed: int = 0
    offered_rate: float = 0.0
    done_rate: float = 0.0
    p50_ms: float | None = None
    p99_ms: float | None = None
    made_p50_ms: float | None = None  # of the latency: record sent -> prediction made (ce_time)
    made_p99_ms: float | None = None
    call_p50_ms: float | None = None  # the model call's own latency (the prediction's latency_ms)
    call_p99_ms: float | None = None
    max_ms: float | None = None
    slow: int = 0  # records over SLOW_MS ...
    slow_seconds: int = 0  # ... and the seconds they were sent in (stalls or spread out)
    saturated: bool = False
    proc_cpu_s: float | None = None
    server_cpu_s: float | None = None


@dataclass
class Result:
    system: str
    rep: int
    records: int
    wall_s: float = 0.0
    steady_rate: float = 0.0
    proc_cpu_ms: float | None = None  # per record, steady part
    server_cpu_ms: float | None = None
    duplicates: int = 0
    latency: dict[int, Latency] = field(default_factory=dict)

    @property
    def rate(self) -> float:
        return self.records / self.wall_s


def delta(a: float | None, b: float | None, per: float = 1.0) -> float | None:
    return None if a is None or b is None else (b - a) / per


class Bench:
    def __init__(self, args: argparse.Namespace, console: Console) -> None:
        self.args, self.console = args, console
        uid = uuid.uuid4().hex[:8]
        self.prefix, self.model = f"bench-peers-{uid}", f"bpeers{uid}"
        self.state_dir = Path(tempfile.mkdtemp(prefix="weir-bench-peers-"))
        self.settings = self.settings_for(self.prefix)
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.server: ServiceProcess | None = None
        self.shadow_server: ServiceProcess | None = None  # weir-shadow's second model server
        self.shadow_url = ""
        self.live: list[list[Message]] = []  # per rate: the records the open loop produces

    def log(self, message: str) -> None:
        self.console.log(message)

    def settings_for(self, prefix: str) -> Settings:
        a = self.args
        return bench_settings(
            prefix=prefix,
            model=self.model,
            state_dir=self.state_dir,
            # weir runs at the defaults a user gets; --batch-size/--batch-wait are Quix's
            batch_size=WEIR_BATCH.batch_size,
            batch_wait=WEIR_BATCH.batch_wait_s,
            partitions=a.partitions,
        )

    def setup(self) -> None:
        t = time.monotonic()
        ensure_topics(self.settings)
        publish_model(self.settings, self.model)
        self.server = serve(self.settings, self.model, "1", self.port)
        self.log(f"model {self.model} v1 served at {self.url} (pid {self.server.pid()})")
        if "weir-shadow" in self.args.systems:
            port = free_port()
            self.shadow_server = serve(self.settings, self.model, "1", port)
            self.shadow_url = f"http://127.0.0.1:{port}"
            self.log(f"shadow server for weir-shadow at {self.shadow_url}")
        prefill(self.settings, topic_name(self.settings.kafka, Topic.RECORDS), self.args.records)
        per_rate = [int(r * (self.args.warmup + self.args.seconds)) for r in self.args.rates]
        self.live = [
            encode_records(f"l{r}", n) for r, n in zip(self.args.rates, per_rate, strict=True)
        ]
        if "quix" in self.args.systems:
            quix_python(self.log)
        self.log(
            f"{self.args.records} records pre-filled, {sum(per_rate)} encoded for the "
            f"open loop; setup {time.monotonic() - t:.1f}s"
        )

    def start(self, system: str, settings: Settings, tag: str) -> ServiceProcess:
        k = settings.kafka
        env = settings_env(settings) | {
            "PEER_BOOTSTRAP": k.bootstrap_servers,
            "PEER_RECORDS": topic_name(k, Topic.RECORDS),
            "PEER_PREDICTIONS": topic_name(k, Topic.PREDICTIONS),
            "PEER_GROUP": f"{k.topic_prefix}-peer",
            "PEER_MODEL": self.model,
            "PEER_VERSION": "1",
            "PEER_URL": self.url,
            "PEER_SESSION_TIMEOUT_MS": str(k.session_timeout_ms),
            "PEER_FETCH_WAIT_MS": str(k.fetch_max_wait_ms),
            "PEER_BATCH_SIZE": str(self.args.batch_size),
            "PEER_BATCH_WAIT_S": str(self.args.batch_wait),
            "PEER_STATE_DIR": str(self.state_dir / tag),
        }
        if system in WEIR_COMMANDS:
            argv = [str(Path(sys.executable).parent / "weir"), *WEIR_COMMANDS[system]]
            argv += ["--worker-id", tag]
        elif system == "quix":
            argv = [str(quix_python(self.log)), str(HERE / "peer_quix.py"), tag]
        else:
            argv = [sys.executable, str(HERE / "peer_loop.py"), system, tag]
        proc = ServiceProcess(tag, settings.stack.run_dir, marker=f"{argv[-2]} {tag}")
        proc.start(argv, env=env)
        return proc

    def run(self, system: str, rep: int) -> Result:
        sub = f"{self.prefix}-{system}-{rep}"
        settings = self.settings_for(sub)
        k = settings.kafka
        ensure_topics(settings)
        if system in WEIR_COMMANDS:
            change = ModelVersionEvent(
                action="activate",
                model=self.model,
                version="1",
                url=self.url,
                protocol="v2",
                features=FEATURES,
            )
            changes = [change]
            if system == "weir-shadow":
                changes.append(
                    change.model_copy(update={"action": "shadow", "url": self.shadow_url})
                )
            for each in changes:
                EventProducer(settings).send(
                    topic_name(k, Topic.MODELS), signed(settings, new_event(each, source="b"))
                )
        copy_topic(
            settings, topic_name(self.settings.kafka, Topic.RECORDS), topic_name(k, Topic.RECORDS)
        )
        reader = Reader(settings, topic_name(k, Topic.PREDICTIONS))
        proc: ServiceProcess | None = None
        try:
            reader.poll(1.0)  # connected before the clock starts
            result = Result(system, rep, self.args.records)
            t0 = time.monotonic()
            proc = self.start(system, settings, sub)
            self.drain(result, proc, reader, t0)
            for rate, messages in zip(self.args.rates, self.live, strict=True):
                result.latency[rate] = self.latency(proc, reader, k, rate, messages)
            result.duplicates = reader.predictions - len(reader.read_at)
            return result
        finally:
            reader.close()
            if proc is not None:
                pid = proc.stop()
                self.log(f"{system} stopped (pid {pid}); log {proc.log_file}")
            delete_groups(settings, groups_with_prefix(settings, sub))
            delete_topics(settings, sub)

    def wait(
        self, proc: ServiceProcess, reader: Reader, done: Any, deadline_s: float, what: str
    ) -> None:
        deadline = time.monotonic() + deadline_s
        while not done():
            if time.monotonic() > deadline:
                raise RuntimeError(f"timed out after {deadline_s:.0f}s waiting for {what}")
            if proc.pid() is None:
                raise RuntimeError(f"{proc.name} exited; see {proc.log_file}\n{proc.log_tail()}")
            reader.poll()

    def cpu(self, proc: ServiceProcess) -> tuple[float | None, float | None]:
        return tree_cpu_seconds(proc.pid()), tree_cpu_seconds(
            self.server.pid() if self.server else None
        )

    def drain(self, r: Result, proc: ServiceProcess, reader: Reader, t0: float) -> None:
        n = r.records
        self.wait(proc, reader, lambda: len(reader.read_at) >= n // 10, self.args.deadline, "10 %")
        t10, (p10, s10) = time.monotonic(), self.cpu(proc)
        self.wait(
            proc, reader, lambda: len(reader.read_at) >= n, self.args.deadline, f"{n} predictions"
        )
        t100, (p100, s100) = time.monotonic(), self.cpu(proc)
        steady_n = n - n // 10
        r.wall_s, r.steady_rate = t100 - t0, steady_n / max(t100 - t10, 1e-9)
        r.proc_cpu_ms = delta(p10, p100, steady_n / 1000)
        r.server_cpu_ms = delta(s10, s100, steady_n / 1000)
        self.log(
            f"{r.system} rep {r.rep}: drained {n} in {r.wall_s:.1f}s = {r.rate:.0f} rec/s "
            f"(steady {r.steady_rate:.0f}); CPU ms/record {r.proc_cpu_ms or 0:.3f} "
            f"+ server {r.server_cpu_ms or 0:.3f}"
        )

    def latency(
        self, proc: ServiceProcess, reader: Reader, k: Any, rate: int, messages: list[Message]
    ) -> Latency:
        a, out = self.args, Latency(rate)
        cpu0 = self.cpu(proc)
        loop = OpenLoop(k.bootstrap_servers, topic_name(k, Topic.RECORDS), messages, rate)
        read0 = reader.predictions
        loop.start()
        self.wait(proc, reader, lambda: not loop.is_alive(), a.warmup + a.seconds + 60, f"{rate}/s")
        if loop.error is not None:
            raise RuntimeError(f"the open loop failed: {loop.error!r}")
        end = loop.sent_at[-1]
        out.done_rate = (reader.predictions - read0) / max(end - loop.sent_at[0], 1e-9)
        warm = int(rate * a.warmup)
        ids = [key.decode() for key, _, _ in messages[warm:]]
        sent = loop.sent_at[warm:]
        self.wait(
            proc,
            reader,
            lambda: all(i in reader.read_at for i in ids[-50:]) or time.monotonic() > end + a.grace,
            a.grace + 5,
            "grace",
        )
        reader.poll()
        cpu1 = self.cpu(proc)
        out.proc_cpu_s, out.server_cpu_s = delta(cpu0[0], cpu1[0]), delta(cpu0[1], cpu1[1])
        lat = [
            (reader.read_at[i] - s) * 1000 if i in reader.read_at else float("inf")
            for i, s in zip(ids, sent, strict=True)
        ]
        done = [v for v in lat if v != float("inf")]
        span = max(sent[-1] - sent[0], 1e-9)
        out.measured, out.completed = len(ids), len(done)
        out.offered_rate = (len(ids) - 1) / span
        if done:
            out.p50_ms, out.p99_ms = float(np.percentile(done, 50)), float(np.percentile(done, 99))
            out.max_ms = max(done)
            slow = [s for s, v in zip(sent, lat, strict=True) if v > SLOW_MS]
            out.slow, out.slow_seconds = len(slow), len({int(s - sent[0]) for s in slow})
            made = [
                (reader.made_at[i] - w) * 1000
                for i, w in zip(ids, loop.sent_wall[warm:], strict=True)
                if not math.isnan(reader.made_at.get(i, math.nan))
            ]
            if made:
                out.made_p50_ms = float(np.percentile(made, 50))
                out.made_p99_ms = float(np.percentile(made, 99))
            calls = [
                reader.call_ms[i] for i in ids if not math.isnan(reader.call_ms.get(i, math.nan))
            ]
            if calls:
                out.call_p50_ms = float(np.percentile(calls, 50))
                out.call_p99_ms = float(np.percentile(calls, 99))
        if a.trace:
            self.trace(a.trace, proc.name, rate, ids, sent, loop.sent_wall[warm:], lat, reader)
        fifth = max(1, len(lat) // 5)
        first, last = statistics.median(lat[:fifth]), statistics.median(lat[-fifth:])
        out.saturated = out.completed < 0.95 * out.measured or last > 2 * first + 250
        state = f"saturated ({out.done_rate:.0f}/s done)" if out.saturated else "kept up"
        self.log(
            f"{proc.name} @{rate}/s: offered {out.offered_rate:.0f}/s, "
            f"{out.completed}/{out.measured} done, "
            f"p50 {out.p50_ms or 0:.0f} p99 {out.p99_ms or 0:.0f} ms "
            f"(to the prediction's time: p50 {out.made_p50_ms or 0:.0f} "
            f"p99 {out.made_p99_ms or 0:.0f}; the model call: p50 {out.call_p50_ms or 0:.0f} "
            f"p99 {out.call_p99_ms or 0:.0f}); {out.slow} over {SLOW_MS:.0f} ms, sent in "
            f"{out.slow_seconds} of {span:.0f} s; {state}"
        )
        return out

    def trace(
        self,
        path: Path,
        name: str,
        rate: int,
        ids: list[str],
        sent: list[float],
        wall: list[float],
        lat: list[float],
        reader: Reader,
    ) -> None:
        """Append one row per measured record (when it was sent, its latency and parts) to
        ``path``: where the tail comes from (a stall at one moment, or spread out)."""
        new = not path.exists()
        with path.open("a", newline="") as f:
            out = csv.writer(f)
            if new:
                out.writerow(TRACE_COLUMNS)
            for i, s, w, v in zip(ids, sent, wall, lat, strict=True):
                made = (reader.made_at.get(i, math.nan) - w) * 1000
                call = reader.call_ms.get(i, math.nan)
                out.writerow(
                    [name, rate, f"{s - sent[0]:.4f}", f"{w:.4f}", f"{v:.2f}", f"{made:.2f}", call]
                )
        self.log(f"per-record latencies of {name} @{rate}/s appended to {path}")

    def cleanup(self, ok: bool) -> None:
        for server in (self.server, self.shadow_server):
            if server is not None:
                self.log(f"model server stopped (pid {server.stop()})")
        delete_groups(self.settings, groups_with_prefix(self.settings, self.prefix))
        stale = [t for t in list_topics(self.settings) if t.startswith(self.prefix)]
        for sub in sorted({t.rpartition(".")[0] for t in stale}):
            delete_topics(self.settings, sub)
        delete_models(self.settings, self.model)
        self.log(f"deleted topics {self.prefix}*, their groups and model {self.model}")
        if ok and not self.args.keep_logs:
            shutil.rmtree(self.state_dir, ignore_errors=True)
        else:
            self.log(f"logs kept in {self.state_dir}")


# ---------------------------------------------------------------- report


def cell(values: list[float | None], fmt: str) -> str:
    vals = [v for v in values if v is not None]
    if not vals:
        return "-"
    mid = format(statistics.median(vals), fmt)
    return mid if len(vals) == 1 else f"{mid} ({min(vals):{fmt}}-{max(vals):{fmt}})"


def latency_cell(runs: list[Latency]) -> str:
    if not runs:
        return "-"
    if any(r.saturated for r in runs):
        return f"saturated ({cell([r.done_rate for r in runs], '.0f')}/s done)"
    return f"{cell([r.p50_ms for r in runs], '.0f')} / {cell([r.p99_ms for r in runs], '.0f')}"


def report(console: Console, results: list[Result], args: argparse.Namespace) -> None:
    by = {s: [r for r in results if r.system == s] for s in args.systems}
    table = Table(
        "system",
        "records/s",
        "steady",
        "CPU ms/rec",
        "server CPU ms/rec",
        *(f"p50 / p99 ms @{rate}/s" for rate in args.rates),
        title=f"beside the peers: {args.records} records drained, open loop {args.seconds:g} s per "
        f"rate; quix batch {args.batch_size} / {args.batch_wait * 1000:.0f} ms; weir at its "
        f"defaults ({WEIR_BATCH.batch_size} / {WEIR_BATCH.batch_wait_s * 1000:.0f} ms)",
    )
    for system, runs in by.items():
        name = system
        if system in WEIR_COMMANDS:
            name += f" (weir {' '.join(WEIR_COMMANDS[system])})"
        table.add_row(
            name,
            cell([r.rate for r in runs], ".0f"),
            cell([r.steady_rate for r in runs], ".0f"),
            cell([r.proc_cpu_ms for r in runs], ".3f"),
            cell([r.server_cpu_ms for r in runs], ".3f"),
            *(
                latency_cell([r.latency[rate] for r in runs if rate in r.latency])
                for rate in args.rates
            ),
        )
    console.print(table)
    ratios = Table(
        "ratio (medians)",
        "records/s",
        "steady",
        "CPU ms/rec",
        *(f"p99 @{r}/s" for r in args.rates),
        title="ratios",
    )
    for a, b in (
        ("weir-scoring", "quix"),
        ("weir-scoring", "bare"),
        ("weir-shadow", "weir-scoring"),
        ("weir-all", "weir-scoring"),
    ):
        if not by.get(a) or not by.get(b):
            continue

        def ratio(get: Any, a: str = a, b: str = b) -> str:
            va = [v for v in map(get, by[a]) if v is not None]
            vb = [v for v in map(get, by[b]) if v is not None]
            if not va or not vb or not statistics.median(vb):
                return "-"
            return f"{statistics.median(va) / statistics.median(vb):.2f}x"

        def p99(rate: int) -> Any:
            return lambda r: (
                None
                if rate not in r.latency or r.latency[rate].saturated
                else r.latency[rate].p99_ms
            )

        ratios.add_row(
            f"{a} / {b}",
            ratio(lambda r: r.rate),
            ratio(lambda r: r.steady_rate),
            ratio(lambda r: r.proc_cpu_ms),
            *(ratio(p99(rate)) for rate in args.rates),
        )
    console.print(ratios)


def write_csv(path: Path, results: list[Result]) -> None:
    rows = []
    for r in results:
        base = {k: v for k, v in asdict(r).items() if k != "latency"} | {"records_s": r.rate}
        rows.append(base | {"phase": "drain"})
        rows += [
            base | {"phase": f"latency@{rate}"} | {f"lat_{k}": v for k, v in asdict(lat).items()}
            for rate, lat in r.latency.items()
        ]
    names = list(dict.fromkeys(k for row in rows for k in row))
    with path.open("w", newline="") as f:
        writer = csv.DictWriter(f, names)
        writer.writeheader()
        writer.writerows(rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--systems", default=",".join(SYSTEMS), help="comma-separated subset")
    parser.add_argument("--records", type=int, default=20_000, help="records drained per system")
    parser.add_argument("--rates", default="500,2000", help="open-loop rates, records/s")
    parser.add_argument("--seconds", type=float, default=15.0, help="measured s per rate")
    parser.add_argument("--warmup", type=float, default=2.0, help="unmeasured s before each rate")
    parser.add_argument("--grace", type=float, default=5.0, help="s to wait after the last send")
    parser.add_argument("--reps", type=int, default=1, help="repetitions, order alternating")
    parser.add_argument("--batch-size", type=int, default=256, help="quix batch size")
    parser.add_argument("--batch-wait", type=float, default=0.05, help="quix batch wait, s")
    parser.add_argument("--partitions", type=int, default=4, help="partitions of data topics")
    parser.add_argument("--deadline", type=float, default=600.0, help="bound per drain, s")
    parser.add_argument("--csv", type=Path, help="write raw results here")
    parser.add_argument("--trace", type=Path, help="append per-record latencies (CSV) here")
    parser.add_argument("--keep-logs", action="store_true", help="keep process logs")
    args = parser.parse_args()
    args.systems = [s.strip() for s in args.systems.split(",") if s.strip()]
    args.rates = [int(r) for r in args.rates.split(",") if r.strip()]
    if unknown := set(args.systems) - set(SYSTEMS):
        parser.error(f"unknown systems {sorted(unknown)}; choose from {', '.join(SYSTEMS)}")
    console = Console(width=None if sys.stdout.isatty() else 160)
    console.rule("weir bench: beside the peers")
    bench = Bench(args, console)
    results: list[Result] = []
    ok = False
    try:
        bench.setup()
        for rep in range(1, args.reps + 1):
            for system in args.systems if rep % 2 else reversed(args.systems):
                results.append(bench.run(system, rep))
        ok = True
    finally:
        with contextlib.suppress(KeyboardInterrupt):
            bench.cleanup(ok)
    report(console, results, args)
    if args.csv:
        write_csv(args.csv, results)
        console.print(f"raw results: {args.csv}")
    console.print(machine_line(bench.settings))


if __name__ == "__main__":
    main()

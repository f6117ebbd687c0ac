"""The one settings object.

Built once, in the CLI's ``main()`` (or a test's fixture), from ``WEIR_``
environment variables with ``__`` between group and field, e.g.
``WEIR_KAFKA__BOOTSTRAP_SERVERS=127.0.0.1:9092`` or
``WEIR_MINIO__SECRET_KEY=...``; then passed down. Nothing reads the
environment at import time. Every group is frozen.

Local defaults bind everything to loopback. A group with ``managed=False``
points at an existing service that ``weir stack up`` must not start.
"""

from __future__ import annotations

import json
import os
import socket
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from schemas.payloads import DEAD_LETTER_INLINE_BYTES, Version

# The MinIO server is built from this Go module version (the last source
# release published to the Go module proxy; MinIO tags are not semver).
MINIO_MODULE = "github.com/minio/minio"
MINIO_VERSION = "v0.0.0-20260212201848-7aac2a2c5b7c"
KAFKA_VERSION = "4.2.2"


def _default_cache_dir() -> Path:
    # Called when Settings is built (in main), never at import.
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "weir"


def _unset_if_empty(value: SecretStr | None) -> SecretStr | None:
    # `${VAR:-}` in a deployment file means: not given
    return None if value is None or not value.get_secret_value().strip() else value


class _Group(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class KafkaSettings(_Group):
    bootstrap_servers: str = Field(
        "127.0.0.1:9092", description="Kafka bootstrap servers (WEIR_KAFKA__BOOTSTRAP_SERVERS)"
    )
    managed: bool = Field(True, description="start a local KRaft broker in `weir stack up`")
    controller_port: int = Field(9093, description="KRaft controller port of the local broker")
    version: str = Field(KAFKA_VERSION, description="Apache Kafka version fetched from Maven")
    heap: str = Field(
        "1g", description="JVM heap of the local broker (1g: what Kafka's own start script gives)"
    )
    topic_prefix: str = Field("weir", pattern=r"^[A-Za-z0-9._-]+$")
    record_partitions: int = Field(4, ge=1, description="partitions of records/predictions/labels")
    replication_factor: int = Field(1, ge=1)
    session_timeout_ms: int = Field(6000, ge=1000, description="consumer group session timeout")
    fetch_max_wait_ms: int = Field(
        100, ge=1, le=5000, description="longest a worker's fetch waits for data (Faust: 1500)"
    )
    client_id: str = "weir"
    linger_ms: int = Field(
        5,
        ge=0,
        le=1000,
        description="producer: longest wait to fill a batch (WEIR_KAFKA__LINGER_MS)",
    )
    compression: Literal["none", "lz4", "zstd", "snappy", "gzip"] = Field(
        "lz4", description="producer batch compression (WEIR_KAFKA__COMPRESSION)"
    )
    delivery_timeout_ms: int = Field(
        120_000, ge=1000, description="producer: how long a message may wait for the broker"
    )
    message_max_bytes: int = Field(
        1_048_588,
        ge=65_536,
        description="largest message: the producer's limit, set to the broker's "
        "message.max.bytes (Kafka's default; the local broker is started with it)",
    )

    security_protocol: Literal["PLAINTEXT", "SASL_PLAINTEXT", "SASL_SSL", "SSL"] = Field(
        "PLAINTEXT", description="how clients reach the broker (WEIR_KAFKA__SECURITY_PROTOCOL)"
    )
    sasl_mechanism: Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"] = Field(
        "PLAIN", description="SASL mechanism (the local broker offers all three)"
    )
    sasl_username: str | None = Field(None, description="this process' Kafka principal")
    sasl_password: SecretStr | None = None
    control_username: str | None = Field(
        None,
        description="the principal that may write the models topic, used only by what publishes "
        "routes (retrainer, `weir models`, the ingress' /admin route); unset: sasl_username",
    )
    control_password: SecretStr | None = None
    ssl_cafile: Path | None = Field(None, description="CA bundle that signed the broker's cert")
    ssl_certfile: Path | None = Field(None, description="client certificate (mutual TLS)")
    ssl_keyfile: Path | None = Field(None, description="client certificate's key (mutual TLS)")

    _empty_is_none = field_validator("sasl_password", "control_password")(_unset_if_empty)

    @model_validator(mode="after")
    def _credentials_complete(self) -> KafkaSettings:
        sasl = self.security_protocol.startswith("SASL")
        if sasl and not (self.sasl_username and self.sasl_password):
            raise ValueError(
                f"WEIR_KAFKA__SECURITY_PROTOCOL={self.security_protocol} needs "
                "WEIR_KAFKA__SASL_USERNAME and WEIR_KAFKA__SASL_PASSWORD"
            )
        if bool(self.control_username) != bool(self.control_password):
            raise ValueError(
                "WEIR_KAFKA__CONTROL_USERNAME and WEIR_KAFKA__CONTROL_PASSWORD go together"
            )
        if (self.ssl_certfile is None) != (self.ssl_keyfile is None):
            raise ValueError("WEIR_KAFKA__SSL_CERTFILE and WEIR_KAFKA__SSL_KEYFILE go together")
        return self

    @property
    def sasl(self) -> bool:
        return self.security_protocol.startswith("SASL")

    @property
    def tls(self) -> bool:
        return self.security_protocol.endswith("SSL")

    def as_control(self) -> KafkaSettings:
        """The same settings, authenticated as the principal that may publish routes."""
        if not (self.sasl and self.control_username):
            return self
        return self.model_copy(
            update={"sasl_username": self.control_username, "sasl_password": self.control_password}
        )

    def without_control(self) -> KafkaSettings:
        """The same settings without the route publisher's password (least privilege)."""
        return self.model_copy(update={"control_username": None, "control_password": None})

    @property
    def host_port(self) -> tuple[str, int]:
        first = self.bootstrap_servers.split(",")[0].strip()
        host, _, port = first.rpartition(":")
        return host or "127.0.0.1", int(port)


class MinioSettings(_Group):
    endpoint: str = Field("127.0.0.1:9000", description="host:port of MinIO / S3")
    console_port: int = 9001
    access_key: str = "weir"
    secret_key: SecretStr = SecretStr("weir-local-secret")
    secure: bool = False
    region: str = "us-east-1"
    managed: bool = Field(True, description="start a local MinIO in `weir stack up`")
    module_version: str = MINIO_VERSION
    models_bucket: str = "models"
    data_bucket: str = "data"
    pipelines_bucket: str = "pipelines"
    dead_letter_bucket: str = Field(
        "dead-letters", description="whole raw values of dead letters too large to carry inline"
    )
    reader_access_key: str | None = Field(
        "weir-reader",
        description="read-only user (models bucket) that model servers and the model host use; "
        "`weir stack up` creates it; empty: they use access_key",
    )
    reader_secret_key: SecretStr | None = SecretStr("weir-reader-local-secret")

    _empty_is_none = field_validator("reader_secret_key")(_unset_if_empty)

    @field_validator("reader_access_key")
    @classmethod
    def _empty_name_is_none(cls, value: str | None) -> str | None:
        return value if value and value.strip() else None

    @model_validator(mode="after")
    def _reader_complete(self) -> MinioSettings:
        if self.reader_access_key is not None and self.reader_secret_key is None:
            raise ValueError(
                "WEIR_MINIO__READER_ACCESS_KEY needs WEIR_MINIO__READER_SECRET_KEY "
                "(or set it empty: model servers then use WEIR_MINIO__ACCESS_KEY)"
            )
        return self

    def as_reader(self) -> MinioSettings:
        """These settings with the read-only user's keys, when there is one."""
        if self.reader_access_key is None or self.reader_secret_key is None:
            return self
        return self.model_copy(
            update={"access_key": self.reader_access_key, "secret_key": self.reader_secret_key}
        )

    @property
    def buckets(self) -> tuple[str, ...]:
        return (
            self.models_bucket,
            self.data_bucket,
            self.pipelines_bucket,
            self.dead_letter_bucket,
        )

    @property
    def url(self) -> str:
        return f"{'https' if self.secure else 'http'}://{self.endpoint}"


class KServeSettings(_Group):
    bind_host: str = Field(
        "127.0.0.1", description="address model servers (and the model host's API) bind to"
    )
    timeout_s: float = Field(10.0, gt=0)
    max_retries: int = Field(5, ge=0)
    request_log: bool = Field(
        False,
        description="model servers log every request (uvicorn's access line and KServe's "
        "two timing lines); off by default: at 100 calls/s that is 300 lines a second",
    )
    deployer: Literal["local", "host"] = Field(
        "local",
        description="how a new version is served: `local` starts a kserve.ModelServer child "
        "process; `host` asks the model host at WEIR_KSERVE__HOST_URL",
    )
    host_token: SecretStr | None = Field(
        None, description="bearer token the model host's POST/DELETE need (and deployers send)"
    )
    host_url: str | None = Field(
        None, description="the model host's API, e.g. http://model-host:8070 (deployer=host)"
    )
    advertised_host: str = Field(
        "127.0.0.1", description="host name in the URLs the model host hands out"
    )
    port_min: int = Field(0, ge=0, le=65535, description="lowest model server port; 0 = any")
    port_max: int = Field(0, ge=0, le=65535, description="highest model server port; 0 = any")
    keep_unrouted: int = Field(
        1,
        ge=0,
        description="versions of a model kept serving with no route on them, newest first "
        "(what a rollback goes back to): when the model host or the local deployer serves a "
        "new version, it stops the older unrouted ones, so retraining never piles servers up",
    )
    threads: int = Field(
        1,
        ge=1,
        description="threads a model server's numeric libraries (OpenMP, BLAS) predict on; "
        "1: on a shared host a team of threads waiting on busy cores slows every prediction "
        "(connectors/native_threads.py)",
    )

    _empty_is_none = field_validator("host_token")(_unset_if_empty)

    @model_validator(mode="after")
    def _deployer_complete(self) -> KServeSettings:
        if self.deployer == "host" and not self.host_url:
            raise ValueError("WEIR_KSERVE__DEPLOYER=host needs WEIR_KSERVE__HOST_URL")
        if (self.port_min == 0) != (self.port_max == 0) or self.port_min > self.port_max:
            raise ValueError(
                f"WEIR_KSERVE__PORT_MIN/PORT_MAX must both be 0 or a range, "
                f"got {self.port_min}-{self.port_max}"
            )
        return self


class KfpSettings(_Group):
    host: str | None = Field(None, description="Kubeflow Pipelines API; unset = local runner")
    pipeline_root: Path | None = None


class EventSettings(_Group):
    source: str = Field("weir", description="CloudEvents `source` of events weir emits")
    max_bytes: int = Field(1_048_576, ge=1024, description="largest accepted event, in bytes")
    mode: Literal["binary", "structured"] = "binary"
    dead_letter_inline_bytes: int = Field(
        DEAD_LETTER_INLINE_BYTES,
        ge=1024,
        le=524_288,
        description="raw bytes a dead letter carries inline; the whole value goes to MinIO",
    )
    dead_letter_store_timeout_s: float = Field(
        2.0, gt=0, description="longest wait to store a large dead letter's value in MinIO"
    )


class ControlSettings(_Group):
    """Who may change routes: signed model-version events, and where routes may point."""

    require_signatures: bool = Field(
        True, description="refuse model-version events without a valid signature"
    )
    keys_dir: Path | None = Field(
        None, description="the key pair's directory; default <cache>/keys (`weir keys`)"
    )
    signing_key: SecretStr | None = Field(
        None, description="Ed25519 private key (base64, 32 bytes) that signs routes; else keys_dir"
    )
    public_keys: tuple[str, ...] = Field(
        (), description="Ed25519 public keys (base64) accepted besides those in keys_dir"
    )
    check_registry: bool = Field(
        True,
        description="refuse a route whose version has no valid card in the registry, or whose "
        "features are not the card's (MinIO away: accepted on its signature, and said so)",
    )
    allowed_hosts: tuple[str, ...] = Field(
        ("127.0.0.1", "localhost", "::1"),
        description="host patterns (fnmatch) a route's URL may point at",
    )

    @field_validator("keys_dir")
    @classmethod
    def _absolute(cls, value: Path | None) -> Path | None:
        return None if value is None else value.expanduser().resolve()

    _empty_is_none = field_validator("signing_key")(_unset_if_empty)


class KnativeSettings(_Group):
    ingress_host: str = Field("127.0.0.1", description="address the CloudEvents ingress binds")
    ingress_port: int = Field(8080, ge=1, le=65535)
    admin_token: SecretStr | None = Field(
        None, description="bearer token of the ingress' /admin route (route events); unset: off"
    )
    ingress_tokens: dict[str, SecretStr] = Field(
        default_factory=dict,
        description="sender name → bearer token; when set, POST / needs one of them "
        '(WEIR_KNATIVE__INGRESS_TOKENS=\'{"sensor-a": "…"}\'); drop a sender to cut it off',
    )
    egress_attempts: int = Field(5, ge=1, description="tries per event before dead-lettering")
    egress_timeout_s: float = Field(10.0, gt=0)
    egress_concurrency: int = Field(
        16,
        ge=1,
        le=256,
        description="events POSTed to the sink at once (each retried on its own); 1 keeps "
        "the order of a partition, which a Knative broker does not keep anyway",
    )
    egress_batch: int = Field(
        512,
        ge=1,
        le=10_000,
        description="events read at once; their offsets are committed once every one of "
        "them was delivered or dead-lettered",
    )
    egress_topics: tuple[str, ...] = Field(
        ("predictions", "alerts"), description="logical topics forwarded to the sink"
    )

    _empty_is_none = field_validator("admin_token")(_unset_if_empty)

    @field_validator("ingress_tokens", mode="before")
    @classmethod
    def _empty_is_no_tokens(cls, value: object) -> object:
        return {} if isinstance(value, str) and not value.strip() else value


class ScoringSettings(_Group):
    model: str = Field("weir-demo", description="the model this scoring worker serves")
    batch_size: int = Field(256, ge=1, le=10_000, description="records per model call at most")
    batch_wait_s: float = Field(
        0.01,
        gt=0,
        description="longest a record waits for its batch to fill, from when it could be "
        "taken (records queued while the previous batch was scored have waited already; a "
        "full batch goes at once)",
    )
    batches_scoring: int = Field(
        2,
        ge=1,
        le=16,
        description="batches scored at once under a backlog: after a full batch, the next is "
        "read and scored while a model call is out (outputs still go in input order)",
    )
    batches_in_flight: int = Field(
        4, ge=1, le=64, description="scored batches whose outputs may await Kafka's ack at once"
    )
    backoff_initial_s: float = Field(0.2, gt=0, description="first wait when the server is down")
    backoff_max_s: float = Field(5.0, gt=0, description="longest wait between retries")
    record_attempts: int = Field(
        4,
        ge=1,
        description="calls a record may fail alone (HTTP 500) before it is dead-lettered; "
        "a server that is down or busy is waited for without limit",
    )
    control_ready_timeout_s: float = Field(10.0, gt=0, description="wait for a new endpoint")
    shadow_in_flight: int = Field(
        2,
        ge=1,
        le=64,
        description="shadow calls running at once; a batch that finds them busy is not mirrored",
    )
    insight_niceness: int = Field(
        10,
        ge=0,
        le=19,
        description="`weir worker` runs every role but scoring at this niceness, so on a busy "
        "machine the insight roles lag, not scoring (0: all alike)",
    )
    monitor_niceness: int = Field(
        19,
        ge=0,
        le=19,
        description="`weir worker` lowers the monitor to this niceness once it has started (it "
        "starts at insight_niceness, so its start-up is not starved): its alerts only inform, "
        "so on a machine short of CPU it lags first, after scoring and the loop's roles",
    )
    insight_share_behind: float = Field(
        0.2,
        gt=0,
        le=1,
        description="while the scoring role is behind (scoring_behind_records), the monitor, "
        "feedback and learner roles `weir worker` runs beside it each use at most this share "
        "of one core, so a backlog drains at scoring's pace and they catch up after (1: no "
        "limit)",
    )
    scoring_behind_records: int = Field(
        5_000,
        ge=0,
        description="the scoring group's uncommitted records beyond which it is behind (and "
        "beyond 3 s of the records' arrival rate: it commits once a second)",
    )
    worker_id: str = Field(
        default_factory=socket.gethostname,
        description="names this worker in route decisions and archives; default: the host name",
    )


class MonitorSettings(_Group):
    drift_detector: Literal["adwin", "page-hinkley"] = "adwin"
    drift_cooldown: int = Field(1000, ge=1, description="updates per stream between drift alerts")
    drift_scale_warmup: int = Field(
        200,
        ge=0,
        description="values of each stream that set its centre and spread; the drift detector "
        "sees standardised values from then on (0: raw values)",
    )
    max_tracked_features: int = Field(
        64, ge=1, description="feature names that get a drift detector; later new names are not"
    )
    outlier_threshold: float = Field(0.95, gt=0, le=1)
    performance_detector: Literal["ddm", "eddm", "hddm-a", "adwin"] = "adwin"
    performance_window: int = Field(500, ge=10, description="outcomes in rolling accuracy")
    performance_cooldown: int = Field(
        1000, ge=1, description="outcomes after a performance alert before the next one"
    )
    recovery_margin: float = Field(
        0.05,
        ge=0,
        lt=1,
        description="after an alert, a version is alerted on again every cooldown while its "
        "accuracy stays more than this below its accuracy before the drift",
    )
    drift_watch_outcomes: int = Field(
        2000,
        ge=0,
        description="after a feature-drift alert, the performance role alerts on the served "
        "version as soon as its accuracy over a full window is recovery_margin below its "
        "accuracy before, for this many outcomes (feature drift raises the watch level; the "
        "outcomes confirm it); 0: off",
    )
    join_window: int = Field(50_000, ge=100, description="record ids kept for late labels")
    archive_chunk_rows: int = Field(500, ge=1, description="training rows per archived object")
    archive_interval_s: float = Field(2.0, gt=0, description="seconds between archive flushes")
    archive_buffer_rows: int = Field(
        200_000, ge=1, description="training rows held while MinIO is away; the oldest go first"
    )
    checkpoint_interval_s: float = Field(
        10.0, gt=0, description="seconds between role-state checkpoints (WEIR_MONITOR__…)"
    )


class RetrainingSettings(_Group):
    enabled: bool = True
    cooldown_outcomes: int = Field(
        20_000,
        ge=0,
        description="labelled outcomes of the model, counted from the alert that started a run "
        "that put a new version live, before another alert may start a run (a re-alert of a "
        "model still degraded waits only retry_after_outcomes)",
    )
    retry_after_outcomes: int = Field(
        3_000,
        ge=0,
        description="labelled outcomes, counted from the alert that started a run that "
        "promoted nothing (or failed), before the next alert may start one",
    )
    cooldown_s: float = Field(
        300.0,
        ge=0,
        description="least time after a run that put a new version live, for alerts that carry "
        "no outcome count (feature drift, with drift_starts_runs)",
    )
    retry_after_s: float = Field(
        30.0,
        ge=0,
        description="least time after a run that promoted nothing, for alerts that carry no "
        "outcome count",
    )
    window_rows: int = Field(2000, ge=50, description="newest archived rows a run trains on")
    min_gain: float = Field(0.01, ge=0, description="accuracy a candidate must add to go live")
    promotion_confidence: float = Field(
        0.95,
        ge=0,
        lt=1,
        description="and McNemar's test of candidate vs current on the same holdout must show "
        "it better at this confidence (0: off)",
    )
    collect_rows: int = Field(
        600,
        ge=0,
        description="labelled rows to gather after an alert before training on them; doubled "
        "for each run in a row that promoted nothing (a gradual drift's rows are still mixed), "
        "at most window_rows",
    )
    collect_timeout_s: float = Field(
        600.0, gt=0, description="longest a run waits for those rows before training on fewer"
    )
    fit_threads: int = Field(
        1,
        ge=1,
        description="threads the pipeline's steps fit and predict on (OpenMP, BLAS); 1: on a "
        "busy shared host a team of threads waiting on each other turned a 0.6 s fit into "
        "87 s (connectors/native_threads.py)",
    )
    drift_starts_runs: bool = Field(
        False,
        description="a feature-drift alert starts a run by itself; off: feature drift "
        "informs (logged, shown) and a run starts when a performance alert confirms",
    )
    rollout: Literal["activate", "canary"] = Field(
        "activate",
        description="how a run's new version goes live: at once, or on canary at "
        "WEIR_CANARY__INITIAL_WEIGHT for the performance role to judge",
    )


class CanarySettings(_Group):
    """The canary contest the performance role judges, for the model it watches."""

    auto: bool = Field(True, description="judge every canary on live labels; off: people decide")
    initial_weight: float = Field(
        0.1, gt=0, le=1, description="traffic share a run's canary starts with"
    )
    steps: tuple[float, ...] = Field(
        (0.25, 0.5),
        description="weights a canary passes through after the initial one before promotion "
        "(JSON list: WEIR_CANARY__STEPS='[0.25, 0.5]'); each needs a passed look",
    )
    min_outcomes: int = Field(
        200, ge=20, description="canary outcomes between two looks at the evidence"
    )
    max_outcomes: int = Field(
        5000, ge=20, description="canary outcomes after which an undecided canary is rolled back"
    )
    confidence: float = Field(
        0.95, gt=0.5, lt=1, description="confidence of the whole contest, over all its looks"
    )
    error_budget: float = Field(
        0.02,
        ge=0,
        lt=1,
        description="accuracy the canary may lose against the active version and still pass",
    )

    @field_validator("steps")
    @classmethod
    def _weights_rise(cls, steps: tuple[float, ...]) -> tuple[float, ...]:
        if any(not 0 < w <= 1 for w in steps) or list(steps) != sorted(set(steps)):
            raise ValueError("canary steps are rising weights in (0, 1]")
        return steps

    @model_validator(mode="after")
    def _looks_fit(self) -> CanarySettings:
        if self.max_outcomes < self.min_outcomes:
            raise ValueError("canary max_outcomes must be at least min_outcomes")
        return self

    @property
    def looks(self) -> int:
        """The most looks a contest takes: every ``min_outcomes`` up to ``max_outcomes``."""
        return -(-self.max_outcomes // self.min_outcomes)


class LearnerSettings(_Group):
    """The embedded online learner: a river model kept in-stream from labels (learner role).

    It learns from every served outcome (predict first, then learn), stores a
    signed snapshot in the registry every ``publish_every`` outcomes and routes
    it as an embedded route: in the ``slot`` it lives in (a shadow challenger by
    default), and as the active route when ``take_over`` and it beats the version
    serving now on the same records.
    """

    enabled: bool = Field(
        False, description="run the learner role (WEIR_LEARNER__ENABLED); the demo turns it on"
    )
    name: Version = Field(
        "online", description="the version name its route serves under (snapshots: <name>.<n>)"
    )
    kind: Literal["arf+linear", "arf", "hoeffding"] = Field(
        "arf+linear",
        description="arf+linear: river's ARFClassifier (adaptive random forest) and two logistic "
        "regressions on standardised features (one stepped by SGD, one by AdaGrad) learning side "
        "by side, answering with the one right more often over the latest 300 records "
        "(agents.leader); arf: the forest alone; "
        "hoeffding: a Hoeffding adaptive tree (smaller and faster, less accurate)",
    )
    seed: int = 42
    publish_every: int = Field(
        500,
        ge=50,
        description="served outcomes learnt between two published snapshots (light ones: "
        "light_publish_every), and between two saves of the learner's whole state (every "
        "member, not only the one a snapshot holds), which a restart resumes from",
    )
    publish_min_s: float = Field(
        0.5,
        ge=0,
        description="and at least this long between them (every scoring worker loads each "
        "one: a forest of the adaptation benchmark, ~0.6 MB stored, serves ~0.09 s after it "
        "is published); a take-over publishes at once",
    )
    light_bytes: int = Field(
        262_144,
        ge=0,
        description="a snapshot this small or smaller (a snapshot holds only the member that "
        "leads: the regression is a few KB, a forest 0.2-3 MB) costs every worker little to "
        "load, so it is published every light_publish_every outcomes, light_publish_min_s "
        "apart; 0: every snapshot at publish_every",
    )
    light_publish_every: int = Field(
        100, ge=10, description="served outcomes learnt between two light snapshots"
    )
    light_publish_min_s: float = Field(
        0.25, ge=0, description="and at least this long between them"
    )
    slot: Literal["shadow", "none"] = Field(
        "shadow",
        description="where its snapshots are routed while it does not serve: the shadow slot "
        "(mirrored, judged on live labels) or nowhere",
    )
    take_over: bool = Field(
        True,
        description="serve it (activate its route) when it beats the serving version on the "
        "same records at ``confidence``",
    )
    window: int = Field(
        1000, ge=50, description="latest paired outcomes the take-over test looks at"
    )
    min_outcomes: int = Field(
        200, ge=20, description="paired outcomes since the serving version changed, at least"
    )
    confidence: float = Field(
        0.99,
        gt=0.5,
        lt=1,
        description="McNemar's test must show the learner better at this confidence",
    )
    alert_confidence: float = Field(
        0.9,
        gt=0.5,
        lt=1,
        description="after a performance alert on the serving version: McNemar's test on the "
        "pairs since the alert must show the learner better at this confidence (that version "
        "is known to be degraded, so less evidence is asked than of a healthy one)",
    )
    alert_min_outcomes: int = Field(
        50, ge=10, description="paired outcomes since that alert, at least"
    )
    keep: int = Field(3, ge=1, description="snapshots kept in the registry; older are deleted")
    refresh_confidence: float = Field(
        0.95,
        gt=0.5,
        lt=1,
        description="publish a snapshot before publish_every when the live learner beats the "
        "snapshot serving now on the records that snapshot answered, at this confidence "
        "(McNemar; at least refresh_min of them): a learner adapting to a drift is served "
        "fresh while it changes, and seldom once it is stable",
    )
    refresh_min: int = Field(
        100, ge=20, description="records its serving snapshot answered before an early refresh"
    )
    warm_rows: int = Field(
        2000,
        ge=0,
        description="a learner with no snapshot first learns the newest this many archived "
        "training rows (the data the first version was trained on), so it does not start from "
        "nothing; 0: start empty",
    )
    light_lag_s: float = Field(
        1.0,
        ge=0,
        description="outcomes made longer ago than this are learnt by the light members only "
        "(arf+linear: the regressions; the forest, ~14x their CPU a record, sheds them) until "
        "the learner is back within half of it: a learner behind the stream still learns "
        "every outcome with what it can afford (counted as light_only); 0: never",
    )
    max_lag_s: float = Field(
        5.0,
        ge=0,
        description="outcomes made longer ago than this are skipped (counted as shed): a "
        "learner slower than the stream learns the newest outcomes rather than fall ever "
        "further behind (what it learns late, it serves late); 0: learn every outcome",
    )


class StackSettings(_Group):
    cache_dir: Path = Field(default_factory=_default_cache_dir)
    state_dir: Path | None = Field(None, description="pids, logs, data; default <cache>/stack")
    ready_timeout_s: float = Field(180.0, gt=0)

    @field_validator("cache_dir", "state_dir")
    @classmethod
    def _absolute(cls, value: Path | None) -> Path | None:
        return None if value is None else value.expanduser().resolve()

    @property
    def run_dir(self) -> Path:
        return self.state_dir or self.cache_dir / "stack"


class LiveSettings(_Group):
    """The worker's live view: Prometheus ``/metrics``, a status page, health checks."""

    host: str = Field("127.0.0.1", description="address the live view binds (WEIR_LIVE__HOST)")
    port: int = Field(0, ge=0, le=65535, description="live view port; 0 = off (WEIR_LIVE__PORT)")
    lag_interval_s: float = Field(5.0, gt=0, description="seconds between consumer-lag samples")
    throughput_window_s: float = Field(5.0, gt=0, description="records/s is averaged over this")
    recent: int = Field(20, ge=1, le=1000, description="alerts and swaps the status page keeps")


class Settings(BaseSettings):
    """Everything weir can be told, in one frozen object."""

    model_config = SettingsConfigDict(
        env_prefix="WEIR_",
        env_nested_delimiter="__",
        frozen=True,
        extra="forbid",
    )

    kafka: KafkaSettings = KafkaSettings()
    minio: MinioSettings = MinioSettings()
    kserve: KServeSettings = KServeSettings()
    kfp: KfpSettings = KfpSettings()
    events: EventSettings = EventSettings()
    scoring: ScoringSettings = ScoringSettings()
    monitor: MonitorSettings = MonitorSettings()
    knative: KnativeSettings = KnativeSettings()
    control: ControlSettings = ControlSettings()
    k_sink: str | None = Field(
        None,
        validation_alias="K_SINK",
        description="sink URL that a Knative SinkBinding injects as K_SINK (egress target)",
    )
    retraining: RetrainingSettings = RetrainingSettings()
    canary: CanarySettings = CanarySettings()
    learner: LearnerSettings = LearnerSettings()
    stack: StackSettings = Field(default_factory=StackSettings)
    live: LiveSettings = LiveSettings()

    @property
    def retrainer_runs(self) -> bool:
        """Whether the retrainer role has work: retraining runs, or canary verdicts to carry out."""
        return self.retraining.enabled or self.canary.auto

    def as_control(self) -> Settings:
        """These settings as a route publisher: Kafka's control principal."""
        return self.model_copy(update={"kafka": self.kafka.as_control()})

    def as_model_reader(self) -> Settings:
        """These settings as something that only loads models: MinIO's read-only user."""
        return self.model_copy(update={"minio": self.minio.as_reader()})

    @model_validator(mode="after")
    def _ports_distinct(self) -> Settings:
        kafka_port = self.kafka.host_port[1]
        minio_port = int(self.minio.endpoint.rpartition(":")[2])
        ports = [kafka_port, self.kafka.controller_port, minio_port, self.minio.console_port]
        if len(set(ports)) != len(ports):
            raise ValueError(f"local stack ports must differ, got {ports}")
        return self


def settings_env(settings: Settings) -> dict[str, str]:
    """The environment that makes a child process build the same Settings.

    Used when weir starts its own helper processes (model servers, workers), so
    they see exactly the settings of the process that started them.
    """
    env = {k: v for k, v in os.environ.items() if not k.startswith("WEIR_") and k != "K_SINK"}
    if settings.k_sink is not None:
        env["K_SINK"] = settings.k_sink
    for group, model in settings:
        if not isinstance(model, BaseModel):
            continue
        for name in type(model).model_fields:
            value = getattr(model, name)
            if value is None:
                continue
            env[f"WEIR_{group.upper()}__{name.upper()}"] = _env_text(value)
    return env


def _env_text(value: object) -> str:
    """A setting's value as its environment variable's text (secrets revealed)."""
    if isinstance(value, SecretStr):
        return value.get_secret_value()
    if isinstance(value, dict):
        return json.dumps({k: _env_text(v) for k, v in value.items()})
    if isinstance(value, tuple | list):
        return json.dumps(list(value))
    return str(value)

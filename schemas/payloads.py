"""Payload models: the ``data`` of every CloudEvent on every weir topic.

Each payload class names its versioned CloudEvents ``type`` (``event_type``)
and the Kafka key it is partitioned by (``partition_key``). All models are
frozen, forbid unknown fields and reject NaN and infinities: a payload that
validates here is safe to feed a model or a detector.

A change that breaks a consumer gets a new ``type`` version (``...v2``); the
JSON Schema of every type is exported to ``schemas/jsonschema/``.
"""

from __future__ import annotations

import base64
import hashlib
from datetime import datetime
from typing import Annotated, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field, Strict, model_validator

from schemas.errors import EventDecodeError, RawMessage

Identifier = Annotated[str, Field(min_length=1, max_length=256)]
ModelName = Annotated[str, Field(min_length=1, max_length=128, pattern=r"^[a-z0-9][a-z0-9._-]*$")]
Version = Annotated[str, Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9._-]+$")]
FeatureName = Annotated[str, Field(min_length=1, max_length=128)]
Output = int | float | str

# A feature value is a JSON number, nothing else: no strings ("1.5"), no booleans,
# no NaN or infinities, and no magnitude whose square overflows a float in a
# detector's running variance (1e308 is finite, its square is not).
MAX_ABS_FEATURE = 1e150
# At most this many features per record: every name a record brings costs the
# monitor detector state, so the schema caps it (JSON Schema ``maxProperties``).
MAX_FEATURES = 256


FeatureValue = Annotated[
    float, Strict(), Field(ge=-MAX_ABS_FEATURE, le=MAX_ABS_FEATURE)
]  # checked by pydantic-core itself: a Python validator here costs every record's every value
Features = Annotated[dict[FeatureName, FeatureValue], Field(min_length=1, max_length=MAX_FEATURES)]


class Payload(BaseModel):
    """Base of every event payload."""

    model_config = ConfigDict(frozen=True, extra="forbid", allow_inf_nan=False)

    event_type: ClassVar[str]

    @property
    def partition_key(self) -> str | None:
        """The Kafka message key; ``None`` lets the producer spread messages."""
        raise NotImplementedError


class InputRecord(Payload):
    """One input to be scored (topic: records)."""

    event_type: ClassVar[str] = "io.weir.record.v1"

    id: Identifier
    features: Features
    entity: Identifier | None = None
    timestamp: datetime | None = None

    @property
    def partition_key(self) -> str:
        return self.entity or self.id


class Prediction(Payload):
    """What was served for one record, and by whom (topic: predictions)."""

    event_type: ClassVar[str] = "io.weir.prediction.v1"

    record_id: Identifier
    model: ModelName
    version: Version
    url: Annotated[str, Field(min_length=1, max_length=2048)]
    output: Output
    scores: dict[str, float] | None = None
    latency_ms: float = Field(ge=0)
    shadow: bool = Field(
        False, description="made by the model's shadow route: mirrored, never served"
    )
    decider: Decider | None = Field(
        None, description="speculative serving: the rule that chose this answer"
    )
    answers: int | None = Field(
        None, ge=0, description="speculative serving: routes that answered within the deadline"
    )

    @property
    def partition_key(self) -> str:
        return self.record_id


class Label(Payload):
    """Ground truth for a record, arriving later (topic: labels)."""

    event_type: ClassVar[str] = "io.weir.label.v1"

    record_id: Identifier
    label: Output
    timestamp: datetime | None = None

    @property
    def partition_key(self) -> str:
        return self.record_id


class Outcome(Payload):
    """A prediction joined with its label: was this model version right (topic: outcomes).

    Keyed by model, so one performance worker sees every outcome of a model,
    whatever the number of scoring workers.
    """

    event_type: ClassVar[str] = "io.weir.outcome.v1"

    record_id: Identifier
    model: ModelName
    version: Version
    output: Output
    label: Output
    correct: bool
    latency_ms: float | None = Field(None, ge=0)
    shadow: bool = Field(False, description="judges the shadow's prediction, not a served one")
    agrees: bool | None = Field(
        None, description="shadow outcomes: the shadow answered as the served version did"
    )
    features: Features | None = Field(
        None,
        description="the record's features, on served outcomes while an online learner "
        "learns from them (WEIR_LEARNER__ENABLED)",
    )
    url: str | None = Field(
        None,
        max_length=2048,
        description="the route that answered, on the outcomes that carry features (the "
        "learner tells its serving snapshot's answers from an older one's)",
    )
    labelled_at: datetime | None = Field(
        None,
        description="when the record's label was given (its time, on the data's clock): what "
        "this outcome speaks for, however far behind the insight roles run; none on shadow "
        "outcomes",
    )

    @property
    def partition_key(self) -> str:
        return self.model


class Alert(Payload):
    """Fields every alert shares (topic: alerts, keyed by model)."""

    alert_id: Identifier
    model: ModelName
    version: Version | None = None

    @property
    def partition_key(self) -> str:
        return self.model


class DriftAlert(Alert):
    """A change in the distribution of one input feature or of the predictions."""

    event_type: ClassVar[str] = "io.weir.alert.drift.v1"

    stream: Annotated[str, Field(min_length=1, max_length=128)]
    detector: Annotated[str, Field(min_length=1, max_length=64)]
    records_seen: int = Field(ge=0)
    mean_before: float | None = None
    mean_after: float | None = None
    evidence_until: datetime | None = Field(
        None,
        description="the time of the record (or prediction) that raised this alert, its "
        "event's: a run it starts (WEIR_RETRAINING__DRIFT_STARTS_RUNS) trains on rows labelled "
        "from then on. The alert's own time is when the monitor got there, which may be long "
        "after on a busy host",
    )


class OutlierAlert(Alert):
    """One record scored above the outlier threshold."""

    event_type: ClassVar[str] = "io.weir.alert.outlier.v1"

    record_id: Identifier
    score: float
    threshold: float


class PerformanceAlert(Alert):
    """Live accuracy of a model version fell, or its error stream drifted."""

    event_type: ClassVar[str] = "io.weir.alert.performance.v1"

    metric: Annotated[str, Field(min_length=1, max_length=64)]
    value: float
    window: int = Field(ge=1)
    detector: Annotated[str, Field(min_length=1, max_length=64)]
    baseline: float | None = Field(
        None,
        description="a re-alert while the model stays degraded: its accuracy before the drift",
    )
    outcomes: int | None = Field(
        None,
        ge=0,
        description="labelled outcomes of the model (every version) the performance role had "
        "judged when it raised this alert: the retrainer counts its cooldowns in them",
    )
    evidence_until: datetime | None = Field(
        None,
        description="when the label of the outcome that raised this alert was given (on the "
        "data's clock): a run it starts trains on rows labelled from then on. The alert's own "
        "time is when the performance role got there, which may be long after on a busy host",
    )


class CanaryVerdict(Alert):
    """The performance role's judgement of a canary against the active version.

    ``verdict``: ``step`` (not worse beyond the error budget: raise the weight to
    ``next_weight``), ``promote`` (passed at the last step: make it active) or
    ``rollback`` (worse beyond the budget, or not shown to be as good within
    the contest's outcomes: clear it). The evidence is the outcomes of each
    version since the contest began and the interval of (canary - active)
    accuracy at ``confidence`` for this look. The retrainer turns a verdict
    into signed route events; a verdict changes nothing by itself.
    """

    event_type: ClassVar[str] = "io.weir.canary.verdict.v1"

    version: Version
    active_version: Version
    verdict: Literal["step", "promote", "rollback"]
    weight: float = Field(gt=0, le=1)
    next_weight: float | None = Field(None, gt=0, le=1)
    canary_outcomes: int = Field(ge=0)
    canary_correct: int = Field(ge=0)
    active_outcomes: int = Field(ge=0)
    active_correct: int = Field(ge=0)
    low: float = Field(ge=-1, le=1)
    high: float = Field(ge=-1, le=1)
    confidence: float = Field(gt=0, lt=1)
    error_budget: float = Field(ge=0, lt=1)
    look: int = Field(ge=1)
    reason: Annotated[str, Field(max_length=4096)]

    @model_validator(mode="after")
    def _step_names_its_weight(self) -> CanaryVerdict:
        if (self.verdict == "step") != (self.next_weight is not None):
            raise ValueError("a step, and only a step, names its next_weight")
        return self

    @property
    def evidence(self) -> dict[str, float]:
        """The figures a route event carries as its ``metrics``."""
        return {
            "canary_outcomes": self.canary_outcomes,
            "canary_accuracy": self.canary_correct / max(self.canary_outcomes, 1),
            "active_outcomes": self.active_outcomes,
            "active_accuracy": self.active_correct / max(self.active_outcomes, 1),
            "difference_low": self.low,
            "difference_high": self.high,
            "confidence": self.confidence,
        }


RouteAction = Literal[
    "activate",
    "canary",
    "shadow",
    "rollback",
    "refresh",
    "speculate",
    "clear-canary",
    "clear-shadow",
    "clear-speculative",
]
CLEARS: dict[str, str] = {
    "clear-canary": "canary",
    "clear-shadow": "shadow",
    "clear-speculative": "speculative",
}
Decider = Literal["first", "confidence", "majority"]
MAX_MEMBERS = 8
# how a route reaches its model: KServe's V1 or V2 REST protocol, or ``embedded`` — a
# registry version loaded into the scoring process itself (an online learner's snapshot)
RouteProtocol = Literal["v1", "v2", "embedded"]
EMBEDDED_SCHEME = "embedded://"


def embedded_url(model: str, registry_version: str) -> str:
    """The url of an embedded route: the registry version the scoring process loads."""
    return f"{EMBEDDED_SCHEME}{model}/{registry_version}"


def embedded_target(url: str) -> tuple[str, str]:
    """(model, registry version) an embedded route's url names; ValueError if it names none."""
    model, sep, version = url.removeprefix(EMBEDDED_SCHEME).partition("/")
    if not url.startswith(EMBEDDED_SCHEME) or not sep or not model or not version or "/" in version:
        raise ValueError(
            f"{url!r} is not an embedded route url ({EMBEDDED_SCHEME}<model>/<version>)"
        )
    return model, version


def _protocol_fits_url(model: str, url: str | None, protocol: str) -> None:
    embedded = url is not None and url.startswith(EMBEDDED_SCHEME)
    if url is None or embedded == (protocol == "embedded"):
        if embedded and url is not None and embedded_target(url)[0] != model:
            raise ValueError(f"embedded route {url} names another model than {model}")
        return
    raise ValueError(
        f"protocol {protocol!r} does not fit url {url}: an embedded route, and only one, "
        f"has protocol 'embedded' and a url {EMBEDDED_SCHEME}<model>/<registry version>"
    )


class SpeculativeMember(BaseModel):
    """One route of a speculative ensemble: a version and the server that answers for it."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    version: Version
    url: Annotated[str, Field(min_length=1, max_length=2048)]
    protocol: RouteProtocol = "v2"
    features: list[FeatureName] | None = Field(default=None, max_length=MAX_FEATURES)


class ModelVersionEvent(Payload):
    """A routing change on the compacted control topic (topic: models, keyed by slot).

    A model has four route slots, and each slot (and ``refresh``) has a key of
    its own, so compaction keeps exactly the latest event of each and a replay
    yields the routes live workers hold:

    * ``<model>``: ``activate`` moves all traffic to ``url``; ``rollback`` does
      the same for an earlier version (``version`` and ``url`` name the version
      to return to);
    * ``<model>:canary``: ``canary`` sends ``weight`` of the traffic to ``url``;
      ``clear-canary`` removes it;
    * ``<model>:shadow``: ``shadow`` mirrors traffic without serving its
      answers; ``clear-shadow`` removes it;
    * ``<model>:speculative``: ``speculate`` serves every record from several
      routes called at once (``members``): what they answered within
      ``deadline_ms`` is decided by ``decider`` (``first`` answer, best
      ``confidence``, ``majority``); ``version`` names the ensemble;
      ``clear-speculative`` removes it;
    * ``<model>:refresh:<version>``: ``refresh`` moves ``version``'s route, in whichever
      slot holds it, to ``url`` (an online learner's newer snapshot of the
      version). It never changes which version a slot holds: a refresh folded
      after another version was activated changes nothing, so it cannot put a
      replaced version back, and compaction keeps the activation it followed.

    An event changes only its own slot (a refresh: the url of its version's
    route, where one is). Because an activate means all traffic,
    weir's tools publish it with a ``clear-canary`` (:meth:`implied`); a canary
    whose version is the active one serves nothing either way. A clear names
    the version it retires and needs no ``url``.
    """

    event_type: ClassVar[str] = "io.weir.model.version.v1"

    action: RouteAction
    model: ModelName
    version: Version
    url: Annotated[str, Field(min_length=1, max_length=2048)] | None = None
    protocol: RouteProtocol = "v2"
    weight: float | None = Field(default=None, gt=0, le=1)
    storage_uri: Annotated[str, Field(max_length=2048)] | None = None
    features: list[FeatureName] | None = Field(
        default=None,
        max_length=MAX_FEATURES,
        description="feature order the model expects; required to serve traffic",
    )
    metrics: dict[str, float] = Field(default_factory=dict)
    run_id: Identifier | None = None
    alert_id: Identifier | None = None
    members: list[SpeculativeMember] | None = Field(
        default=None, min_length=2, max_length=MAX_MEMBERS
    )
    deadline_ms: int | None = Field(default=None, ge=1, le=60_000)
    decider: Decider | None = None

    @model_validator(mode="after")
    def _fields_fit_the_action(self) -> ModelVersionEvent:
        if self.action == "canary" and self.weight is None:
            raise ValueError("a canary needs a weight in (0, 1]")
        if self.action != "canary" and self.weight is not None:
            raise ValueError(f"weight is only meaningful for a canary, not for {self.action!r}")
        speculative = (self.members, self.deadline_ms, self.decider)
        if self.action == "speculate":
            if any(v is None for v in speculative):
                raise ValueError("speculate needs members (2 or more), deadline_ms and decider")
            if len({m.version for m in self.members or ()}) != len(self.members or ()):
                raise ValueError("the members of a speculation are different versions")
        elif any(v is not None for v in speculative):
            raise ValueError(
                f"members, deadline_ms and decider belong to speculate, not {self.action!r}"
            )
        elif self.action not in CLEARS and self.url is None:
            raise ValueError(f"{self.action!r} needs the url of the version's server")
        for _version, url, protocol, _features in self.targets:
            _protocol_fits_url(self.model, url, protocol)
        return self

    @property
    def slot(self) -> Literal["active", "canary", "shadow", "speculative", "refresh"]:
        """The route slot this event sets or clears (``refresh``: a key of its own; it
        moves a version's route in the slot that holds it)."""
        if self.action in ("activate", "rollback"):
            return "active"
        if self.action in ("speculate", "clear-speculative"):
            return "speculative"
        if self.action == "refresh":
            return "refresh"
        return "canary" if self.action in ("canary", "clear-canary") else "shadow"

    @property
    def targets(self) -> list[tuple[str, str, RouteProtocol, list[str] | None]]:
        """(version, url, protocol, features) of every server this route sends records to."""
        if self.members is not None:
            return [(m.version, m.url, m.protocol, m.features) for m in self.members]
        if self.url is None:
            return []
        return [(self.version, self.url, self.protocol, self.features)]

    @property
    def partition_key(self) -> str:
        if self.slot == "refresh":  # compaction keeps the newest place of each version
            return f"{self.model}:refresh:{self.version}"
        return self.model if self.slot == "active" else f"{self.model}:{self.slot}"

    def implied(self) -> list[ModelVersionEvent]:
        """The events to publish for this change: an activate or rollback clears the canary."""
        if self.slot != "active":
            return [self]
        clear = ModelVersionEvent(
            action="clear-canary",
            model=self.model,
            version=self.version,
            run_id=self.run_id,
            alert_id=self.alert_id,
        )
        return [self, clear]


class RouteDecision(Payload):
    """A worker's answer to a model-version event (topic: alerts, keyed by model).

    ``accepted`` is false when the routing change was refused — the endpoint
    was not ready, the route lacks its feature list, or there was nothing to
    roll back to — and the worker kept its current route.
    """

    event_type: ClassVar[str] = "io.weir.model.route.v1"

    model: ModelName
    action: RouteAction
    version: Version
    url: Annotated[str, Field(min_length=1, max_length=2048)] | None = None
    accepted: bool
    reason: Annotated[str, Field(max_length=4096)]
    active_version: Version | None = None
    worker: Annotated[str, Field(min_length=1, max_length=256)]

    @property
    def partition_key(self) -> str:
        return self.model


class PipelineRunEvent(Payload):
    """Retraining lineage: alert id → run id → model version (topic: pipeline-runs)."""

    event_type: ClassVar[str] = "io.weir.pipeline.run.v1"

    run_id: Identifier
    model: ModelName
    status: Literal["requested", "started", "succeeded", "failed", "not-promoted", "not-started"]
    pipeline: Annotated[str, Field(min_length=1, max_length=256)]
    alert_id: Identifier | None = None
    produced_version: Version | None = None
    metrics: dict[str, float] = Field(default_factory=dict)
    reason: Annotated[str, Field(max_length=4096)] | None = None

    @property
    def partition_key(self) -> str:
        return self.model


# What a dead letter carries inline: the raw value up to this many bytes (larger
# values are stored by reference, see DeadLetter), the key and each header value
# up to INLINE_META_BYTES, at most INLINE_HEADERS headers. So a dead letter always
# fits in a Kafka message whatever it reports.
DEAD_LETTER_INLINE_BYTES = 65_536
INLINE_META_BYTES = 4096
INLINE_HEADERS = 64


def _text(value: bytes) -> str:
    return value[:INLINE_META_BYTES].decode("utf-8", "replace")


class DeadLetter(Payload):
    """Anything that could not be processed, with its raw bytes (topic: dead-letter).

    ``raw_base64`` holds the original message value exactly as received when it
    is at most ``inline_max`` bytes (default 64 KiB); a larger value is cut to
    that prefix (``raw_truncated``) and, when the object store answers, kept
    whole at ``raw_ref`` (``s3://bucket/key``). ``raw_size`` and ``raw_sha256``
    always describe the whole original value, so a truncated letter still says
    exactly what it stood for. The key and header values are kept up to 4 KiB
    each (``meta_truncated`` says when any was cut).
    """

    event_type: ClassVar[str] = "io.weir.deadletter.v1"

    raw_base64: str
    key_base64: str | None = None
    headers: dict[str, str] = Field(default_factory=dict)
    error_class: Annotated[str, Field(min_length=1, max_length=128)]
    reason: Annotated[str, Field(min_length=1, max_length=8192)]
    source_topic: str | None = None
    partition: int | None = Field(default=None, ge=0)
    offset: int | None = Field(default=None, ge=0)
    attempts: int = Field(default=1, ge=1)
    original_event_id: str | None = None
    raw_size: int | None = Field(default=None, ge=0, description="bytes of the original value")
    raw_sha256: Annotated[str, Field(pattern=r"^[0-9a-f]{64}$")] | None = None
    raw_truncated: bool = False
    raw_ref: Annotated[str, Field(max_length=2048)] | None = None
    meta_truncated: bool = False

    @classmethod
    def from_raw(
        cls,
        raw: RawMessage,
        *,
        error_class: str,
        reason: str,
        attempts: int = 1,
        event_id: str | None = None,
        inline_max: int = DEAD_LETTER_INLINE_BYTES,
    ) -> DeadLetter:
        """The dead-letter payload for a message: byte for byte up to ``inline_max``."""
        value, key = raw.value, raw.key
        headers = raw.headers[:INLINE_HEADERS]
        cut = (
            len(raw.headers) > INLINE_HEADERS
            or (key is not None and len(key) > INLINE_META_BYTES)
            or any(len(k) > 256 or len(v) > INLINE_META_BYTES for k, v in headers)
        )
        return cls(
            raw_base64=base64.b64encode(value[:inline_max]).decode("ascii"),
            key_base64=(
                None if key is None else base64.b64encode(key[:INLINE_META_BYTES]).decode("ascii")
            ),
            headers={k[:256]: _text(v) for k, v in headers},
            error_class=error_class[:128],
            reason=reason[:8192] or error_class,
            source_topic=raw.origin.topic,
            partition=raw.origin.partition,
            offset=raw.origin.offset,
            attempts=attempts,
            original_event_id=None if event_id is None else event_id[:1024],
            raw_size=len(value),
            raw_sha256=hashlib.sha256(value).hexdigest(),
            raw_truncated=len(value) > inline_max,
            meta_truncated=cut,
        )

    @classmethod
    def from_error(
        cls,
        err: EventDecodeError,
        *,
        attempts: int = 1,
        inline_max: int = DEAD_LETTER_INLINE_BYTES,
    ) -> DeadLetter:
        """The dead-letter payload for bytes that failed to decode."""
        return cls.from_raw(
            err.raw,
            error_class=err.error_class,
            reason=err.reason,
            attempts=attempts,
            event_id=err.event_id,
            inline_max=inline_max,
        )

    @property
    def complete(self) -> bool:
        """Whether ``raw`` is the whole original value (else fetch ``raw_ref``)."""
        return not self.raw_truncated

    @property
    def raw(self) -> bytes:
        """The inline bytes: the whole value when :attr:`complete`, else its prefix."""
        return base64.b64decode(self.raw_base64)

    @property
    def key(self) -> bytes | None:
        return None if self.key_base64 is None else base64.b64decode(self.key_base64)

    @property
    def partition_key(self) -> str | None:
        key = self.key
        return None if key is None else key.decode("utf-8", errors="replace")


PAYLOAD_TYPES: tuple[type[Payload], ...] = (
    InputRecord,
    Prediction,
    Label,
    Outcome,
    DriftAlert,
    OutlierAlert,
    PerformanceAlert,
    CanaryVerdict,
    ModelVersionEvent,
    RouteDecision,
    PipelineRunEvent,
    DeadLetter,
)

PAYLOAD_BY_TYPE: dict[str, type[Payload]] = {cls.event_type: cls for cls in PAYLOAD_TYPES}

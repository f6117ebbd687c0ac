"""The Faust app factory: one app, one consumer group, per role.

``create_app(settings, role)`` builds a ``faust.App`` whose id — and so whose
consumer group — is ``<prefix>-<role>-<model>``, and attaches that role's
agents (:mod:`streams.roles`). Roles share nothing but topics, so each lags,
restarts and scales (by the partitions of the topic it reads) on its own:

=========== ======================== ==========================================
role        reads                    writes
=========== ======================== ==========================================
scoring     records, models          predictions, dead-letter, alerts (routes)
monitor     records, predictions     alerts (feature/prediction drift, outliers)
feedback    records, predictions,    outcomes (keyed by model), training rows
            labels                   (MinIO archive)
performance outcomes                 alerts (performance), live accuracy
retrainer   alerts, outcomes, models pipeline-runs, models (new versions)
learner     outcomes, models         models (its snapshots, embedded routes),
                                     registry snapshots (MinIO)
=========== ======================== ==========================================

Every role sends through one :class:`~connectors.kafka_async.AsyncProducer`
(librdkafka batching) and reports to its own :class:`~streams.live.LiveView`;
:mod:`streams.supervisor` runs all of them as child processes for
``weir worker``.
"""

from __future__ import annotations

import faulthandler
import gc
import logging
from typing import Any

import faust

from connectors.kafka import tls_context
from connectors.process import lower_priority
from schemas import ConfigurationError
from schemas.settings import KafkaSettings, Settings
from schemas.topics import Topic, topic_name
from streams import faust_transport
from streams.context import PUBLISHERS, ROLES, RoleContext, role_group, role_off
from streams.live import LiveView
from streams.logs import limit_logs
from streams.roles import attach_role

log = logging.getLogger("weir.app")
# Net allocations of container objects between young collections (CPython's default: 700).
# A scoring role's batches in flight hold more than 10,000 of them, so at 10,000 young
# collections kept scanning them (and gen-1 ones again): 41-59 collections and 0.14-0.17 s
# of CPU per drain of bench/peers.py (100,000 records and an open loop), about 5 % of the
# role's CPU, counted with gc.callbacks. At 200,000 the same drains ran none. Garbage held
# only by a reference cycle waits longer to be freed.
GC_THRESHOLD = 200_000

LIBRDKAFKA_ROLES = frozenset(
    {"scoring", "monitor", "feedback", "learner"}
)  # roles reading via streams/roles/batches


def create_app(
    settings: Settings, role: str, *, scoring_first: bool = False
) -> tuple[faust.App, RoleContext]:
    """The Faust app of one role, its agents attached; ``scoring_first``: it shares the
    cores with a scoring role (see :mod:`streams.roles.scoring_first`)."""
    if role not in ROLES:
        raise ConfigurationError(f"unknown role {role!r}; roles: {', '.join(ROLES)}")
    off = role_off(settings, role)
    if off is not None:
        raise ConfigurationError(off)
    if role in PUBLISHERS:  # it publishes routes: Kafka's control principal
        settings = settings.as_control()
    k = settings.kafka
    datadir = settings.stack.run_dir / "faust" / role
    datadir.parent.mkdir(parents=True, exist_ok=True)  # Faust creates only the last level
    group = role_group(settings, role)
    app = faust.App(
        # the app id is its agents' consumer group; the roles that read through a
        # librdkafka consumer of their own (streams/roles/batches.py) use the role's
        # group there, so their app joins another
        f"{group}-app" if role in LIBRDKAFKA_ROLES else group,
        broker=[f"kafka://{hp.strip()}" for hp in k.bootstrap_servers.split(",")],
        broker_credentials=faust_credentials(k),
        value_serializer="raw",
        key_serializer="raw",
        store="memory://",
        web_enabled=False,
        topic_allow_declare=False,  # weir's topics are created by `weir topics create`
        topic_disable_leader=True,
        consumer_auto_offset_reset="earliest",
        broker_session_timeout=k.session_timeout_ms / 1000,
        broker_heartbeat_interval=max(0.5, k.session_timeout_ms / 4000),
        broker_commit_interval=1.0,
        producer_acks=-1,
        # On shutdown, do not wait for buffered records to be acked: the scoring
        # agent acks by hand, so records it holds but has not scored are simply
        # not committed and are delivered again (at-least-once), instead of the
        # worker hanging until it is killed.
        stream_wait_empty=False,
        datadir=str(datadir),
    )
    faust_transport.install(app, k.fetch_max_wait_ms)
    ctx = RoleContext(
        app=app,
        settings=settings,
        role=role,
        group=group,
        topics={t: _raw_topic(app, topic_name(k, t)) for t in Topic},
        live=LiveView(settings, role=role),
        scoring_first=scoring_first,
    )
    attach_role(ctx)
    ctx.on_shutdown(ctx.close)  # deliver what is queued before the process ends
    return app, ctx


def faust_credentials(k: KafkaSettings) -> faust.types.auth.CredentialsT | None:
    """Faust's form of the security settings every other client gets from connectors.kafka."""
    if k.sasl:
        assert k.sasl_password is not None
        return faust.SASLCredentials(
            username=k.sasl_username,
            password=k.sasl_password.get_secret_value(),
            mechanism=k.sasl_mechanism,
            ssl_context=tls_context(k) if k.tls else None,
        )
    if k.tls:
        return faust.SSLCredentials(tls_context(k))
    return None


def _raw_topic(app: faust.App, name: str) -> Any:
    return app.topic(
        name, value_type=bytes, key_type=bytes, value_serializer="raw", key_serializer="raw"
    )


def quiet_gc() -> None:
    """Keep the cyclic GC's full collections off the hot path: what was built at start-up
    (modules, the app, its services) is frozen out of later scans, and young collections
    run less often. A full scan of the start-up heap was a pause of tens of ms."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(GC_THRESHOLD, *gc.get_threshold()[1:])


def run_role(
    settings: Settings,
    role: str,
    *,
    loglevel: str = "info",
    nice_after_start: int = 0,
    scoring_first: bool = False,
) -> None:
    """Run one role in the foreground until interrupted; once it has started (its modules
    imported, its app up), at niceness ``nice_after_start`` if that is lower priority.
    ``scoring_first``: see :func:`create_app`."""
    faulthandler.enable()  # a crash in a C extension leaves every thread's Python stack
    app, _ = create_app(settings, role, scoring_first=scoring_first)

    @app.task
    async def once_started() -> None:  # Faust's worker has set up its log handlers by now
        limit_logs()
        quiet_gc()
        if nice_after_start:
            now = lower_priority(nice_after_start)
            log.info("%s runs at niceness %d from now on", role, now)

    worker = faust.Worker(app, loglevel=loglevel, quiet=True)
    worker.execute_from_commandline()

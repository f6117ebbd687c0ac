"""The learner role: an online river model kept in-stream from labels, served as a route.

Reads ``outcomes`` (keyed by model, so one learner sees every outcome of its
model), and ``alerts`` for the scoring workers' route decisions, in its own
consumer group; the feedback role puts the record's features on served
outcomes while ``WEIR_LEARNER__ENABLED``. Each one is
predicted, then learnt (:class:`agents.learner.OnlineLearner`).

Every ``WEIR_LEARNER__PUBLISH_EVERY`` outcomes the model is stored in the
registry as a signed snapshot ``<name>.<n>`` (river, with its card) and routed
as an *embedded* route — ``embedded://<model>/<name>.<n>``, protocol
``embedded``, version ``<name>`` — that the scoring workers load and score in
their own process (:mod:`connectors.embedded`):

* while it serves (it is the active version), the active route moves to the
  new snapshot; the version stays ``<name>``, so detectors and history see one
  version that keeps learning;
* otherwise, in ``WEIR_LEARNER__SLOT`` (the shadow slot by default: mirrored,
  judged on live labels, serving nobody);
* when it beats the serving version on the same records
  (``WEIR_LEARNER__TAKE_OVER``), its snapshot is published at once and
  activated, with the test's evidence in the event's ``metrics``. A
  performance alert on the serving version (read on ``alerts``) lowers the
  bar: the pairs since the alert decide on their own, at
  ``WEIR_LEARNER__ALERT_CONFIDENCE`` (0.9) instead of ``CONFIDENCE`` (0.99).

This role publishes routes, so it holds the signing key and runs as Kafka's
control principal, like the retrainer. Its own control fold, and the scoring
workers' route decisions on ``alerts``, tell it when one of its routes was
refused (a registry problem; a signing key the workers do not trust, which its
own fold does trust): the log names the worker and its reason, and a take-over
refused before its own fold showed it sends the learner back to challenging the
serving version instead of waiting for a route that never comes.

**It stays near the stream's head:** an outcome made more than
``WEIR_LEARNER__LIGHT_LAG_S`` ago (1 s) is learnt by the model's light members
only (the default's regressions; the forest, ~14 times their CPU, sheds it;
counted as ``light_only``), until outcomes come within half of that again; one
made more than ``WEIR_LEARNER__MAX_LAG_S`` ago (5 s) is skipped (counted as
``shed`` in the snapshot's card). A learner slower than the stream (a forest on
a busy small machine) then learns every outcome with what it can afford, and
skips only when even that is too slow, instead of falling ever further behind:
after a drift, what it learns late it would also serve late.

**A first start is warm:** with no snapshot in the registry it first learns the
newest ``WEIR_LEARNER__WARM_ROWS`` archived training rows (oldest first), the
data the first version was trained on, so it can challenge that version soon.

**Snapshots hold what answers:** a snapshot of the default model
(:class:`agents.leader.LeaderClassifier`) holds only the member that leads.
While that is the regression, a snapshot is a few kilobytes and is published
every ``WEIR_LEARNER__LIGHT_PUBLISH_EVERY`` outcomes (100, at least
``LIGHT_PUBLISH_MIN_S`` apart) instead of ``PUBLISH_EVERY`` (500): after a
drift the workers serve a model a few hundred records fresher, at the cost of
loading a few kilobytes more often.

**Its state survives a restart:** every ``WEIR_LEARNER__PUBLISH_EVERY``
outcomes (at least ``PUBLISH_MIN_S`` apart) and at a stop, the whole learner
(every member) is stored in the registry beside its snapshots, signed like
them (``<model>/<name>.state/``, not a version; a model of one piece, whose
snapshot is all of it, saves none). At start it loads that state, else its
newest snapshot (:func:`agents.learner.resume_from`), of the configured kind
only (waiting for MinIO if it is away; a snapshot's member goes back into a
fresh model of the kind, leading), numbers its next snapshot after the newest one
stored and goes on learning from its committed offsets. Outcomes learnt after
the last state of a crash are not learnt again (at most ``publish_every``).
The newest ``WEIR_LEARNER__KEEP`` snapshots stay in the registry.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Callable
from typing import Any, TypeVar

from agents.learner import OnlineLearner, Resume, TakeOver, resume_from
from agents.routing import RoutingTable
from connectors.archive import read_window
from connectors.bounded import Bounded
from connectors.minio_store import ObjectNotFound, ObjectStore
from connectors.registry import LoadedModel, ModelRegistry, lean_pickle, snapshot_number
from connectors.signing import signed
from schemas import (
    Event,
    Outcome,
    PerformanceAlert,
    RawMessage,
    RouteDecision,
    ServiceError,
    new_event,
)
from schemas.events import utc_now
from schemas.payloads import embedded_url
from schemas.settings import LearnerSettings
from schemas.topics import Topic
from streams.context import RoleContext
from streams.roles.batches import attach_batches
from streams.roles.control import attach_control
from streams.roles.decode import decoded_batch

log = logging.getLogger("weir.learner")
T = TypeVar("T")

BATCH_SIZE = 500
BATCH_WAIT_S = 0.2
MINIO_TIMEOUT_S = 60.0  # a forest's state of a few MB to a busy MinIO
RESTORE_RETRY_S = 2.0
LOG_EVERY_S = 30.0  # at most one of each of its repeated warnings this often
ROUTED_KEPT = 32  # urls of its latest routes, whose refusals it reports
FEATURELESS_WARN = 100  # served outcomes without features before the log says why


def newest_snapshot(
    registry: ModelRegistry, model: str, name: str, numbers: list[int]
) -> tuple[int, LoadedModel] | None:
    """The newest snapshot of ``name`` among ``numbers`` (newest first) that loads
    (signature and digest checked), as (number, LoadedModel); older ones than the newest
    ``keep`` are left to :func:`prune`."""
    for n in numbers:
        try:
            return n, registry.load(model, f"{name}.{n}")
        except ServiceError as err:
            if err.retriable:
                raise
            log.warning(
                "snapshot %s.%d of %s refused (%s); trying an older one", name, n, model, err
            )
    return None


def saved_state(registry: ModelRegistry, model: str, name: str) -> LoadedModel | None:
    """The learner's saved whole state (:meth:`ModelRegistry.load_state`), a LoadedModel;
    None when there is none, or it is refused."""
    try:
        return registry.load_state(model, name)
    except ObjectNotFound:
        return None
    except ServiceError as err:
        if err.retriable:
            raise
        log.warning("the saved state of %s of %s refused (%s); not used", name, model, err)
        return None


def restore_from(
    registry: ModelRegistry, model: str, settings: LearnerSettings
) -> tuple[Resume | None, int]:
    """What a starting learner resumes from (:func:`agents.learner.resume_from`: its saved
    state or its newest snapshot), and the number of the newest snapshot stored, which its
    next snapshot follows (whatever it resumes from)."""
    name = settings.name
    numbers = registry.snapshot_numbers(model, name)
    resume, notes = resume_from(
        settings,
        saved_state(registry, model, name),
        newest_snapshot(registry, model, name, numbers),
    )
    for note in notes:
        log.warning("learner %s of %s: %s", name, model, note)
    return resume, max(numbers, default=0)


def prune(registry: ModelRegistry, model: str, name: str, newest: int, keep: int) -> int:
    """Delete the snapshots older than the newest ``keep``; returns how many."""
    old = [
        v
        for v in registry.version_names(model)
        if (n := snapshot_number(name, v)) is not None and n <= newest - keep
    ]
    for version in old:
        registry.delete(model, version)
    return len(old)


def attach_learner(ctx: RoleContext) -> None:
    settings, model = ctx.settings, ctx.settings.scoring.model
    s = settings.learner
    routing = RoutingTable()
    registry = ModelRegistry.for_settings(settings)
    minio = Bounded(MINIO_TIMEOUT_S, pause_s=RESTORE_RETRY_S)
    state = {"learner": OnlineLearner(s, model)}
    started = asyncio.Event()
    warned: list[bool] = []  # the learner stopped, and the log said so once
    told_featureless: list[bool] = []  # outcomes come without features, and the log said so
    published_at = [float("-inf")]  # loop time of the last scheduled snapshot
    state_saved = [float("-inf")]  # loop time the learner's whole state was last saved
    shed_logged = [float("-inf")]  # loop time the log last said the learner skips outcomes
    refusal_logged = [float("-inf")]  # and that a worker refused one of its routes
    routed: deque[str] = deque(maxlen=ROUTED_KEPT)  # urls of the routes it sent (this run)

    def heard(decision: RouteDecision) -> None:
        """A control fold's answer to a route of the learner's: its own fold's, or a scoring
        worker's (on ``alerts``; a worker that trusts other signing keys refuses what the
        learner's own fold accepted)."""
        if decision.accepted or decision.url not in routed:  # not one it sent in this run
            return
        if state["learner"].refused(decision.url):  # its take-over, not folded yet
            log.error(
                "the take-over by %s was refused by %s (%s); it challenges version %s again",
                s.name,
                decision.worker,
                decision.reason,
                decision.active_version,
            )
            return
        now = asyncio.get_running_loop().time()
        if now >= refusal_logged[0] + LOG_EVERY_S:  # each snapshot's route may be refused
            refusal_logged[0] = now
            log.error(
                "route %s of %s refused by %s: %s (the learner's snapshots go on being routed; "
                "a worker that does not trust the learner's signing key refuses every one)",
                decision.url,
                s.name,
                decision.worker,
                decision.reason,
            )

    async def patiently(what: str, call: Callable[[], T]) -> T:
        while True:
            try:
                return await asyncio.to_thread(call)
            except ServiceError as err:  # MinIO away: the learner waits, nothing else does
                log.warning("cannot read %s yet (%s); retrying", what, err)
                await asyncio.sleep(RESTORE_RETRY_S)

    ctx.problems["state"] = "restoring its model (its newest snapshot, or archived rows)"

    @ctx.app.task
    async def restore() -> None:
        found, number = await patiently(
            f"{s.name}'s state and snapshots", lambda: restore_from(registry, model, s)
        )
        state["learner"].snapshot = number  # its next snapshot follows those stored
        if found is not None:
            state["learner"] = OnlineLearner(
                s,
                model,
                estimator=found.estimator,
                features=tuple(found.card.features),
                snapshot=number,
                learnt=int(found.card.metrics.get("learnt", 0)),
            )
            log.info(
                "learner %s of %s restored from %s (%d outcomes learnt; newest snapshot %d)",
                s.name,
                model,
                found.what,
                state["learner"].learnt,
                number,
            )
        elif s.warm_rows:  # a first start: learn what version 1 learnt from, not nothing
            rows = await patiently(
                "the training archive",
                lambda: read_window(
                    ObjectStore(settings.minio), settings.minio.data_bucket, model, s.warm_rows
                ),
            )
            # in a thread: the forest learns 2,000 rows in ~3 s on an idle core (tens of
            # seconds on a busy one), and the loop keeps answering Kafka and /healthz meanwhile
            # (no batch is read before ``started``, so nothing else touches the learner)
            learnt = await asyncio.to_thread(
                state["learner"].warm, [(row.features, row.label) for row in rows]
            )
            log.info("learner %s of %s warmed on %d archived rows", s.name, model, learnt)
        await ctx.ready.wait()  # the control fold caught up: the routes are known
        ctx.problems.pop("state", None)  # /readyz: ready to learn
        started.set()

    async def store_snapshot(learner: OnlineLearner) -> str | None:
        """Store the next snapshot; its registry version, or None when MinIO is away."""
        card = learner.next_card(utc_now())
        # on the loop, so nothing learns meanwhile: a plain pickle without the random
        # generators' state (10 ms for a forest where joblib takes 1.5 s); the card says so
        # (learner.format)
        blob = learner.snapshot_blob(lean_pickle)
        try:
            await minio.call(registry.publish_bytes, card, blob)
        except (ServiceError, TimeoutError) as err:
            log.warning("snapshot %s not stored (%s); learning goes on", card.version, err)
            return None
        number = learner.snapshot + 1
        learner.published(number)
        try:
            await minio.call(prune, registry, model, s.name, number, s.keep)
        except (ServiceError, TimeoutError) as err:
            log.warning("old snapshots of %s not pruned yet: %s", s.name, err)
        return card.version

    async def save_state(learner: OnlineLearner) -> None:
        """Store the whole learner for its restart (on the loop: nothing learns meanwhile)."""
        state_saved[0] = asyncio.get_running_loop().time()
        card = learner.state_card(utc_now())
        blob = lean_pickle(learner.estimator)
        try:
            await minio.call(registry.save_state, card, blob)
        except (ServiceError, TimeoutError) as err:
            log.warning("the state of %s not saved (%s); learning goes on", s.name, err)
            return
        learner.state_saved()

    async def publish(learner: OnlineLearner, take: TakeOver | None) -> None:
        version = await store_snapshot(learner)
        if version is None:
            return
        # routed by the routes as they are now (the learner's fold lags while it learns):
        # whether it serves (a refresh) or challenges (its shadow route), and whether the
        # version a take-over beat still serves (a refresh that loses a race with a
        # promotion changes nothing; a take-over would replace the promoted version)
        if not await ctx.routes_caught_up():
            log.warning("snapshot %s routes nowhere: the routes may be behind", version)
            return
        routes = routing.get(model)
        if take is not None and not learner.take_over_stands(routes, take):
            log.warning(
                "%s does not take over from version %s: %s serves now",
                s.name,
                take.served_version,
                routes.active.version if routes.active else "no version",
            )
            take = None
        changes = learner.route_events(routes, version, take)
        events: list[Event[Any]] = []
        for change in changes:
            event = new_event(change, source=settings.events.source)
            events.append(await asyncio.to_thread(signed, settings, event))
        routed.append(embedded_url(model, version))  # before sending: a refusal may be quick
        if take is not None:
            learner.took_over(embedded_url(model, version))
        if events:
            await ctx.send_all([(Topic.MODELS, e) for e in events])
            for event in events:
                ctx.live.record_event(event)
        if take is not None:
            log.warning(
                "%s takes over from version %s: %s", s.name, take.served_version, take.reason
            )
        ctx.live.record_accuracy(
            f"{s.name} (learner)", learner.recent_accuracy or 0.0, learner.learnt
        )

    async def handle(batch: list[RawMessage]) -> None:
        learner = state["learner"]
        active = routing.get(model).active
        learner.follow(active.version if active else None)
        shed, light_only, learnt = learner.shed, learner.light_only, learner.learnt
        # bad outcomes are the performance role's to report
        for found in decoded_batch(ctx, batch):
            if found is not None and isinstance(found.data, RouteDecision):
                heard(found.data)
            elif (
                found is not None
                and isinstance(found.data, PerformanceAlert)
                and found.data.model == model
            ):  # the version it names is degraded: less evidence is asked to take over
                learner.alarmed(found.data.version)
            if found is None or not isinstance(found.data, Outcome):
                continue
            age_s = (utc_now() - found.time).total_seconds() if found.time else 0.0
            if learner.learn(found.data, age_s=age_s) is None:
                if learner.stopped is not None and not warned:
                    warned.append(True)
                    log.error("learner %s stopped learning: %s", s.name, learner.stopped)
                continue
            take = learner.take_over()
            if take is not None:
                await publish(learner, take)
        light = learner.light_only - light_only
        ctx.live.record_learner(
            learnt=learner.learnt - learnt, light=light, shed=learner.shed - shed
        )
        if learner.featureless >= FEATURELESS_WARN and not told_featureless:
            told_featureless.append(True)
            log.error(
                "%d served outcomes of %s came without the record's features, so the learner "
                "cannot learn them: set WEIR_LEARNER__ENABLED=true for the feedback role too "
                "(it puts the features on outcomes only then)",
                learner.featureless,
                model,
            )
        now = asyncio.get_running_loop().time()
        behind = learner.shed > shed or light > 0
        if behind and now >= shed_logged[0] + LOG_EVERY_S:
            shed_logged[0] = now
            log.warning(
                "learner %s is behind the outcomes: more than %g s behind, its light members "
                "alone learn them (%d so far); more than %g s, it skips to the newest (%d "
                "skipped so far); %d learnt",
                s.name,
                s.light_lag_s,
                learner.light_only,
                s.max_lag_s,
                learner.shed,
                learner.learnt,
            )
        if (
            learner.due
            and learner.features is not None
            and now >= published_at[0] + learner.min_gap_s
        ):
            published_at[0] = now
            await publish(learner, None)
        if (
            learner.state_due
            and learner.features is not None
            and now >= state_saved[0] + s.publish_min_s
        ):
            await save_state(learner)

    async def save_at_stop() -> None:
        learner = state["learner"]
        if (
            started.is_set()
            and learner.splits
            and learner.since_state
            and learner.features is not None
        ):
            await save_state(learner)

    # which version serves, what is in the shadow, and whether its take-over was refused
    attach_control(ctx, routing, emit=False, on_decision=heard)
    ctx.on_shutdown(save_at_stop)
    attach_batches(
        ctx,
        # alerts: the scoring workers' route decisions, and performance alerts
        (Topic.OUTCOMES, Topic.ALERTS),
        handle,
        size=BATCH_SIZE,
        wait_s=BATCH_WAIT_S,
        after=started,
    )

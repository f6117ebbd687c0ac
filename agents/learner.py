"""The embedded online learner's core: served outcomes in, a river model and its routes out.

"The state is the model itself": one learner per model learns from every
served outcome the feedback role joins (features ⨝ label), predicting each
record before learning from it, so its accuracy is prequential — measured on
records it had not seen. Framework-free; the learner role
(``streams/roles/learner.py``) feeds it outcomes, stores its snapshots in the
registry and publishes their routes.

Every outcome also pairs the learner's answer with the served version's on
the same record. Over the latest pairs since the serving version last changed
— the latest ``window``, ``window/2`` and ``window/4`` of them, so that pairs
from before a drift do not hide one for long — McNemar's exact test
(:func:`connectors.mcnemar.mcnemar_p`) says whether the learner is better; at
``confidence`` (shared by the windows, Bonferroni) it asks to take over —
its snapshot becomes the active route, and serves while a pipeline run
trains. A version that is promoted later is paired against afresh and has to
be beaten again. Pairs are only made while another version serves: when the
learner serves, its outcomes teach it and nothing is compared.

A performance alert on the version it challenges lowers the bar: the
performance role has already seen that version degrade, so the pairs made
since the alert are tested on their own, at ``alert_confidence`` (0.9) from
``alert_min_outcomes`` (50) pairs, before the windows at ``confidence``. The
learner, adapting from the first record after a drift, then serves a few
hundred records sooner while a pipeline run gathers rows and trains.
"""

from __future__ import annotations

import dataclasses
from collections import deque
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any

from agents.routing import ModelRoutes
from connectors.mcnemar import mcnemar_p
from schemas import ModelVersionEvent, Outcome
from schemas.model_card import ModelCard
from schemas.payloads import embedded_url
from schemas.settings import LearnerSettings

if TYPE_CHECKING:
    from connectors.registry import LoadedModel

CHECK_EVERY = 25  # pairs between two take-over tests (the exact test sums binomial terms)
# A classifier learns each label value as a class: more distinct labels than this look
# continuous (a regression target), and the learner stops rather than grow without bound.
MAX_CLASSES = 256
RECENT = 1000  # outcomes the learner's recent accuracy is measured over


def new_estimator(kind: str, seed: int) -> Any:
    """A fresh river classifier of ``kind`` (``WEIR_LEARNER__KIND``)."""
    if kind == "arf+linear":
        from agents.leader import LeaderClassifier

        return LeaderClassifier.arf_and_linear(seed)
    if kind == "arf":
        from river import forest

        return forest.ARFClassifier(seed=seed)
    from river import tree

    return tree.HoeffdingAdaptiveTreeClassifier(seed=seed)


def _described(estimator: Any) -> dict[str, str | float | int]:
    """What a model card says of ``estimator`` beyond its family (a LeaderClassifier: its
    members and which leads)."""
    describe = getattr(estimator, "describe", None)
    return describe() if callable(describe) else {}


@dataclass(frozen=True)
class Resume:
    """What a restarting learner goes on from (:func:`resume_from`)."""

    what: str  # "its saved state" or "snapshot <n>"
    estimator: Any  # the whole model: a snapshot's member is put back in its classifier
    card: ModelCard


def resume_from(
    settings: LearnerSettings,
    state: LoadedModel | None,
    snapshot: tuple[int, LoadedModel] | None,
) -> tuple[Resume | None, list[str]]:
    """Of the learner's saved state and its newest snapshot, the one a restart goes on
    from, and why the others were not used.

    Only one of the configured kind (the card's ``learner.family``: a state or snapshot
    stored before ``WEIR_LEARNER__KIND`` changed is not used). Of the two, the state,
    which holds every member, though a snapshot (light ones go out five times as often)
    may have learnt up to ``publish_every`` outcomes more; but a snapshot of the whole
    model (a model of one piece, which saves no state) that had learnt more than a
    state left over from before is newer. A snapshot that holds one member of the model
    (``learner.holds``) is put back in a fresh model of the kind, leading."""
    family = f"river-{settings.kind}"
    notes: list[str] = []
    options: list[tuple[str, LoadedModel]] = []
    named = [("its saved state", state)]
    if snapshot is not None:
        named.append((f"snapshot {snapshot[0]}", snapshot[1]))
    for what, loaded in named:
        if loaded is None:
            continue
        got = (loaded.card.learner or {}).get("family")
        if got != family:
            notes.append(f"{what} is of {got}, not {family} (WEIR_LEARNER__KIND): not used")
            continue
        options.append((what, loaded))
    if not options:
        return None, notes
    what, loaded = options[0]
    if len(options) == 2:
        (_, state_), (later, snap) = options
        whole = not (snap.card.learner or {}).get("holds")
        if whole and _learnt(snap.card) > _learnt(state_.card):
            what, loaded = later, snap
            notes.append(
                f"its saved state had learnt {_learnt(state_.card):.0f} outcomes, {later} "
                f"{_learnt(snap.card):.0f}: {later}, the whole model, is newer"
            )
    estimator = loaded.estimator
    holds = (loaded.card.learner or {}).get("holds")
    if holds:
        estimator = new_estimator(settings.kind, settings.seed).around(str(holds), estimator)
    return Resume(what, estimator, loaded.card), notes


def _learnt(card: ModelCard) -> float:
    return float(card.metrics.get("learnt", 0))


@dataclass(frozen=True)
class TakeOver:
    """The learner beat the serving version on the same records."""

    served_version: str
    pairs: int
    only_learner_right: int
    only_served_right: int
    p: float
    learner_accuracy: float
    served_accuracy: float
    last_record: str = ""  # the newest record the pairs judge (the take-over's delay starts there)
    after_alert: bool = False  # judged on the pairs since a performance alert on that version

    @property
    def evidence(self) -> dict[str, float]:
        """The figures its route event carries as ``metrics``."""
        return {
            "pairs": self.pairs,
            "only_learner_right": self.only_learner_right,
            "only_served_right": self.only_served_right,
            "mcnemar_p": self.p,
            "learner_accuracy": self.learner_accuracy,
            "served_accuracy": self.served_accuracy,
            "after_alert": float(self.after_alert),
        }

    @property
    def reason(self) -> str:
        since = " since a performance alert on it" if self.after_alert else ""
        return (
            f"online learner beats version {self.served_version} on the same "
            f"{self.pairs} records{since}: {self.learner_accuracy:.1%} vs "
            f"{self.served_accuracy:.1%} "
            f"({self.only_learner_right} only it got right, {self.only_served_right} only the "
            f"served one; McNemar p={self.p:.2g}; up to record {self.last_record})"
        )


class _Pairs:
    """The latest ``size`` (learner right, served right) pairs and their counts."""

    def __init__(self, size: int) -> None:
        self.pairs: deque[tuple[bool, bool]] = deque(maxlen=size)
        self.b = self.c = self.mine = self.served = 0

    def push(self, mine: bool, served: bool) -> None:
        if len(self.pairs) == self.pairs.maxlen:
            self._count(*self.pairs[0], -1)
        self.pairs.append((mine, served))
        self._count(mine, served, 1)

    def _count(self, mine: bool, served: bool, step: int) -> None:
        self.b += step * (mine and not served)
        self.c += step * (served and not mine)
        self.mine += step * mine
        self.served += step * served

    def clear(self) -> None:
        self.pairs.clear()
        self.b = self.c = self.mine = self.served = 0


class OnlineLearner:
    def __init__(
        self,
        settings: LearnerSettings,
        model: str,
        *,
        estimator: Any = None,
        features: tuple[str, ...] | None = None,
        snapshot: int = 0,
        learnt: int = 0,
    ) -> None:
        self.settings = settings
        self.model = model
        self.estimator = estimator or new_estimator(settings.kind, settings.seed)
        self.features = features  # fixed by the first outcome (sorted names) or the snapshot
        self.snapshot = snapshot  # number of the newest snapshot published
        self.learnt = learnt
        self.since_publish = 0
        self.since_state = 0  # outcomes learnt since its whole state was last saved
        self.skipped = 0  # outcomes without the learner's features
        self.shed = 0  # outcomes skipped because the learner was too far behind
        self.light_only = 0  # outcomes only its light members learnt, the learner being behind
        self.featureless = 0  # served outcomes of its model that came without features
        self.classes: set[int | float | str] = set()
        self.stopped: str | None = None  # why it no longer learns, if it does not
        self._recent: deque[bool] = deque(maxlen=RECENT)
        sizes = {max(settings.min_outcomes, settings.window // k) for k in (1, 2, 4)}
        self._windows = [_Pairs(size) for size in sorted(sizes)]
        self._paired_with: str | None = None
        self._unchecked = 0
        self._last_record = ""
        # the pairs since a performance alert on the version it challenges (``alarmed``)
        self._alerted: str | None = None
        self._since_alert = _Pairs(settings.window)
        # the version the routes say is active (None: not told, pair with any other), and
        # the one it took over from, whose late outcomes are not paired again until the
        # routes show the take-over (or that would take over once more)
        self._active: str | None = None
        self._left: str | None = None
        self._taking: str | None = None  # the url of its take-over route, until folded
        # while it serves: the live learner against the newest snapshot, on the records that
        # snapshot answered (an adapting learner outruns its snapshot: refresh it early)
        self._fresh = _Pairs(settings.publish_every)
        # pickled size of its latest snapshot by the member it held (a snapshot holds only
        # the leader): a light one is published more often (``light_bytes``)
        self._sizes: dict[str, int] = {}

    @property
    def name(self) -> str:
        return self.settings.name

    @property
    def recent_accuracy(self) -> float | None:
        """Prequential accuracy over its latest outcomes."""
        return sum(self._recent) / len(self._recent) if self._recent else None

    @property
    def paired_with(self) -> str | None:
        """The serving version the current pairs compare against."""
        return self._paired_with

    @property
    def pairs(self) -> int:
        return len(self._windows[-1].pairs)

    def learn(self, outcome: Outcome, *, age_s: float = 0.0) -> bool | None:
        """Predict ``outcome``'s record, then learn it; whether the guess was right, or None
        when the outcome is not one to learn from (a shadow's, another model's, no features)
        or not one to learn now: made ``age_s`` ago, more than ``max_lag_s``, it is skipped
        (counted in ``shed``) so that a learner slower than the stream learns its newest
        outcomes, not ever older ones. Made more than ``light_lag_s`` ago, it is learnt by
        the estimator's light members only (counted in ``light_only``; an estimator without
        ``lighten`` learns it whole), until outcomes come within half of that again."""
        if outcome.shadow or outcome.model != self.model:
            return None
        if outcome.features is None:  # the feedback role puts them on only for a learner
            self.featureless += 1
            return None
        if self.settings.max_lag_s and age_s > self.settings.max_lag_s:
            self.shed += 1
            return None
        light = self._lighten(age_s)
        mine = self._learn_one(outcome.features, outcome.label)
        if mine is not None:
            self.light_only += light
            self._pair(outcome, mine)
        return mine

    def _lighten(self, age_s: float) -> bool:
        """Whether its light members alone learn an outcome made ``age_s`` ago: from
        ``light_lag_s`` behind, until back within half of it (set on the estimator)."""
        lighten = getattr(self.estimator, "lighten", None)
        if lighten is None or not self.settings.light_lag_s:
            return False
        light = age_s > self.settings.light_lag_s / (2 if self.estimator.lightened else 1)
        lighten(light)
        return light

    def warm(self, rows: Iterable[tuple[Mapping[str, Any], Any]]) -> int:
        """Learn labelled rows (features, label) before any outcome — the archived training
        data, oldest first — so a new learner does not start from nothing; nothing is paired.
        Returns how many were learnt."""
        self._lighten(0.0)
        return sum(self._learn_one(features, label) is not None for features, label in rows)

    def _learn_one(self, features: Mapping[str, Any], label: Any) -> bool | None:
        if self.stopped is not None:
            return None
        if label not in self.classes:
            if len(self.classes) >= MAX_CLASSES:
                self.stopped = (
                    f"more than {MAX_CLASSES} distinct labels ({label!r} is new): the "
                    "online learner is a classifier, and these labels look continuous"
                )
                return None
            self.classes.add(label)
        if self.features is None:
            self.features = tuple(sorted(features))
        try:
            x = {name: features[name] for name in self.features}
        except KeyError:
            self.skipped += 1
            return None
        guess = self.estimator.predict_one(x)
        mine = guess is not None and guess == label
        self.estimator.learn_one(x, label)
        self.learnt += 1
        self.since_publish += 1
        self.since_state += 1
        self._recent.append(mine)
        return bool(mine)

    def _pair(self, outcome: Outcome, mine: bool) -> None:
        served_version, served = outcome.version, outcome.correct
        if served_version == self.name:  # its own snapshot served: compared with itself live
            self._reset(None)
            if outcome.url is None or outcome.url == self._serving_url:
                self._fresh.push(mine, served)
            return
        if served_version == self._left or self._active not in (None, served_version):
            return  # late outcomes of a version that no longer serves
        if served_version != self._paired_with:
            self._reset(served_version)
        for window in self._windows:
            window.push(mine, served)
        if served_version == self._alerted:
            self._since_alert.push(mine, served)
        self._unchecked += 1
        self._last_record = outcome.record_id

    def _reset(self, served_version: str | None) -> None:
        for window in self._windows:
            window.clear()
        self._paired_with = served_version
        self._unchecked = 0
        if served_version != self._alerted:  # an alert is on the version it named only
            self._alerted = None
            self._since_alert.clear()

    def alarmed(self, version: str | None) -> None:
        """A performance alert on ``version``: when that is the version it challenges (or
        would, it has paired with none yet), the pairs made from now on are also tested on
        their own (``alert_confidence``, ``alert_min_outcomes``). A re-alert starts them
        afresh: the newest drift is the one to judge."""
        if version is None or version == self.name or version == self._left:
            return
        if self._paired_with not in (None, version) or self._active not in (None, version):
            return
        self._alerted = version
        self._since_alert.clear()

    def take_over(self) -> TakeOver | None:
        """A take-over the latest pairs call for, or None (tested every few pairs). After a
        performance alert on the version it challenges, the pairs since the alert are
        tested first, at ``alert_confidence``; then the windows, at ``confidence`` shared
        among them (the one with the smallest p answers)."""
        s = self.settings
        if not s.take_over or self._unchecked < CHECK_EVERY or self._paired_with is None:
            return None
        self._unchecked = 0
        if self._alerted == self._paired_with:
            found = self._test(self._since_alert, s.alert_min_outcomes, 1 - s.alert_confidence)
            if found is not None:
                return dataclasses.replace(found, after_alert=True)
        tests = (
            self._test(w, s.min_outcomes, (1 - s.confidence) / len(self._windows))
            for w in self._windows
        )
        return min((t for t in tests if t is not None), key=lambda t: t.p, default=None)

    def _test(self, pairs: _Pairs, least: int, max_p: float) -> TakeOver | None:
        """McNemar's exact test on ``pairs``: a take-over when the learner is better at
        ``max_p`` on at least ``least`` of them."""
        n = len(pairs.pairs)
        if n < least or pairs.b <= pairs.c:
            return None
        p = mcnemar_p(pairs.b, pairs.c)
        if p > max_p:
            return None
        assert self._paired_with is not None
        return TakeOver(
            served_version=self._paired_with,
            pairs=n,
            only_learner_right=pairs.b,
            only_served_right=pairs.c,
            p=p,
            learner_accuracy=pairs.mine / n,
            served_accuracy=pairs.served / n,
            last_record=self._last_record,
        )

    def take_over_stands(self, routes: ModelRoutes, take: TakeOver) -> bool:
        """Whether the version ``take`` beat still serves: one promoted since the pairs were
        made is not what the learner was compared with."""
        return routes.active is not None and routes.active.version == take.served_version

    def route_events(
        self, routes: ModelRoutes, version: str, take: TakeOver | None
    ) -> list[ModelVersionEvent]:
        """The control events for its new snapshot ``version``, given the routes now: a
        take-over (activate, clearing a canary and its own shadow route), a ``refresh`` of
        its route while it serves (moving its version's url only, so it never undoes a
        promotion that reached the topic first), else its shadow route (``slot``) or
        nothing."""
        name, model = self.settings.name, self.model
        serving = routes.active is not None and routes.active.version == name
        common: dict[str, Any] = {
            "model": model,
            "version": name,
            "url": embedded_url(model, version),
            "protocol": "embedded",
            "features": list(self.features or ()),
            "metrics": take.evidence
            if take is not None
            else {"learnt": self.learnt, "prequential_accuracy": self.recent_accuracy or 0},
        }
        if take is not None:  # activate (and clear a canary), and leave the shadow slot
            events = ModelVersionEvent(action="activate", **common).implied()
            if routes.shadow is not None and routes.shadow.version == name:
                events.append(ModelVersionEvent(action="clear-shadow", model=model, version=name))
            return events
        if self.activating and not serving:
            # its take-over is not folded yet: a shadow route now would mirror the
            # version that serves beside itself; the next snapshot will move the active route
            return []
        if serving:  # a newer snapshot of what serves; a canary contest goes on. A refresh,
            # not an activate: should a promotion reach the topic first, it changes nothing
            return [ModelVersionEvent(action="refresh", **common)]
        if self.settings.slot == "shadow":
            return [ModelVersionEvent(action="shadow", **common)]
        return []

    def took_over(self, url: str) -> None:
        """Its route ``url`` is being published as the active one: stop comparing until
        another serves (called before the event is sent, so a refusal finds it)."""
        self._left = self._paired_with
        self._taking = url
        self._reset(None)

    @property
    def activating(self) -> bool:
        """It published its take-over and the routes it follows show neither it nor another
        new version serving yet: its scheduled snapshots route nowhere meanwhile."""
        return self._left is not None

    def follow(self, active_version: str | None) -> None:
        """The version the routes say is active now: only its outcomes are paired (a late
        outcome of a version replaced since would compare the learner with the past)."""
        self._active = active_version
        if active_version not in (None, self._left):  # it serves, or another version does
            self._left = self._taking = None

    def refused(self, url: str | None) -> bool:
        """The routes refused its route ``url`` (a signature, registry or readiness problem).
        When that was its take-over, not folded yet, it pairs with the serving version again
        from scratch rather than wait for a take-over that will not come; returns whether
        it was."""
        if self._taking is None or url != self._taking:
            return False
        self._left = self._taking = None
        return True

    @property
    def _serving_url(self) -> str:
        return embedded_url(self.model, f"{self.name}.{self.snapshot}")

    def snapshot_blob(self, dumps: Callable[[Any], bytes]) -> bytes:
        """The next snapshot's artifact: ``dumps`` of what it answers with — the leading
        member of a :class:`~agents.leader.LeaderClassifier`, else the whole model. Its size
        sets how soon the next snapshot of that member is due (:attr:`light`)."""
        serving = getattr(self.estimator, "serving", None)
        blob = dumps(serving() if callable(serving) else self.estimator)
        self._sizes[self._holds] = len(blob)
        return blob

    @property
    def _holds(self) -> str:
        """The member a snapshot taken now holds ("" for a model of one piece)."""
        return str(getattr(self.estimator, "leader", ""))

    @property
    def light(self) -> bool:
        """The latest snapshot of the member a snapshot would hold now was ``light_bytes``
        or smaller: snapshots are cheap to load, so they are due more often."""
        size = self._sizes.get(self._holds)
        return size is not None and size <= self.settings.light_bytes

    @property
    def min_gap_s(self) -> float:
        """Seconds at least between two scheduled snapshots."""
        s = self.settings
        return s.light_publish_min_s if self.light else s.publish_min_s

    @property
    def due(self) -> bool:
        """Time for the next snapshot: ``publish_every`` outcomes learnt since the last
        (``light_publish_every`` when it is :attr:`light`), or the live learner beats the
        snapshot serving now on the records it answered (McNemar at ``refresh_confidence``,
        at least ``refresh_min`` of them)."""
        s = self.settings
        if self.since_publish >= (s.light_publish_every if self.light else s.publish_every):
            return True
        fresh = self._fresh
        if len(fresh.pairs) < s.refresh_min or fresh.b <= fresh.c:
            return False
        return mcnemar_p(fresh.b, fresh.c) <= 1 - s.refresh_confidence

    def next_card(self, now: datetime) -> ModelCard:
        """The card of the next snapshot (``<name>.<n>``), for the registry; it says which
        member the snapshot holds (``learner.holds``), if it holds one."""
        holds = {"holds": self._holds} if self._holds else {}
        return self._card(f"{self.name}.{self.snapshot + 1}", now, holds)

    def state_card(self, now: datetime) -> ModelCard:
        """The card of its saved whole state (``<name>.state``, every member): what a
        restart resumes from (:meth:`ModelRegistry.save_state`)."""
        return self._card(f"{self.name}.state", now, {"state": True})

    def _card(self, version: str, now: datetime, extra: dict[str, Any]) -> ModelCard:
        if self.features is None:
            raise ValueError("the learner has learnt nothing yet: no features, no snapshot")
        accuracy = self.recent_accuracy
        return ModelCard(
            name=self.model,
            version=version,
            framework="river",
            features=list(self.features),
            metrics={"learnt": self.learnt, "light_only": self.light_only, "shed": self.shed}
            | ({"prequential_accuracy": accuracy} if accuracy is not None else {}),
            created_at=now,
            learner={
                "family": f"river-{self.settings.kind}",
                "online": True,
                "format": "pickle",  # written with connectors.registry.lean_pickle
                "seed": self.settings.seed,
            }
            | _described(self.estimator)
            | extra,
        )

    @property
    def splits(self) -> bool:
        """A snapshot holds part of the model (a :class:`~agents.leader.LeaderClassifier`'s
        leader): its whole state is saved apart. A model of one piece saves none; its
        newest snapshot is its whole state."""
        return callable(getattr(self.estimator, "serving", None))

    @property
    def state_due(self) -> bool:
        """Time to save its whole state: ``publish_every`` outcomes learnt since the last
        (only when :attr:`splits`)."""
        return self.splits and self.since_state >= self.settings.publish_every

    def state_saved(self) -> None:
        self.since_state = 0

    def published(self, snapshot: int) -> None:
        self.snapshot = snapshot
        self.since_publish = 0
        self._fresh.clear()

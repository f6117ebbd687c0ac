"""Speculative serving: several routes called at once, a deadline, and a decider.

A model with a speculative route (``weir models speculate``; a ``speculate``
event on the control topic) has each batch sent to every member route at
once. What answered within ``deadline_ms`` decides each record:

* ``first``: the answer of the first member that answered for the record;
* ``confidence``: the answer with the highest class probability (members that
  return no probabilities count as least confident; ties go to the earlier);
* ``majority``: the label most members answered; a tie goes to the label of
  the earliest answer among the tied ones.

"Earliest" is the order answers arrived in; answers that arrived together are
taken in the order the route lists its members.

``first`` stops waiting as soon as every record has an answer; the others wait
for every member or the deadline, whichever comes first. The prediction names
the member that made the chosen answer (``version``, ``url``), the decider, and
how many members answered within the deadline (``answers``). A member that
answers after the deadline is not waited for and not cancelled: its answer is
counted as late (:attr:`Speculator.late`, the ``weir_speculative_late_total``
metric) when it arrives. A record no member answered within the deadline goes
the ordinary way, to the active route with its retries: the deadline bounds
the speculation, never the delivery.
"""

from __future__ import annotations

import asyncio
import logging
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from pydantic import ValidationError

from agents.predictions import prediction_of, route_rows
from agents.routing import Route, Speculation
from connectors.kserve_client import InferenceClient, InferenceResult, ModelServerError
from schemas import Prediction

log = logging.getLogger("weir.speculation")


@dataclass(frozen=True)
class _Answer:
    member: Route
    rank: int  # order of arrival
    prediction: Prediction

    @property
    def confidence(self) -> float:
        scores = self.prediction.scores
        return max(scores.values()) if scores else float("-inf")


def decide(decider: str, answers: Sequence[_Answer]) -> _Answer:
    """The chosen answer among ``answers`` (non-empty, in order of arrival) by ``decider``."""
    if decider == "confidence":
        return max(answers, key=lambda a: (a.confidence, -a.rank))
    if decider == "majority":
        votes = Counter(repr(a.prediction.output) for a in answers)
        most = max(votes.values())
        return next(a for a in answers if votes[repr(a.prediction.output)] == most)
    return answers[0]


class Speculator:
    def __init__(
        self, client: InferenceClient, *, on_late: Callable[[str, int], None] | None = None
    ) -> None:
        self._client = client
        self._on_late = on_late
        self.late: Counter[str] = Counter()  # version → answers (rows) that came after a deadline
        self._stragglers: set[asyncio.Task[Any]] = set()

    async def score(
        self, spec: Speculation, record_ids: Sequence[str], features: Sequence[dict[str, float]]
    ) -> list[Prediction | None]:
        """Per record, the decided prediction, or None when no member answered in time."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + spec.deadline_s
        calls: dict[asyncio.Task[InferenceResult], tuple[Route, list[int]]] = {}
        for member in spec.members:
            fitted = route_rows(member, features)
            index = [i for i, row in enumerate(fitted) if not isinstance(row, ValueError)]
            if not index:
                continue
            rows = [fitted[i] for i in index]
            task = asyncio.create_task(
                self._client.predict(member.url, member.model, member.protocol, rows)
            )
            calls[task] = (member, index)
        answers: list[list[_Answer]] = [[] for _ in record_ids]
        pending = set(calls)
        rank = 0
        while pending:
            left = deadline - loop.time()
            if left <= 0:
                break
            done, pending = await asyncio.wait(
                pending, timeout=left, return_when=asyncio.FIRST_COMPLETED
            )
            for task in [t for t in calls if t in done]:  # answers that came together: in
                member, index = calls[task]  # the members' order, so ties are decided the same
                result = self._result(task, member)
                if result is None:
                    continue
                for row, i in enumerate(index):
                    try:
                        prediction = prediction_of(member, record_ids[i], result, row)
                    except ValidationError:
                        continue  # this member's answer for this record is not a prediction
                    answers[i].append(_Answer(member, rank, prediction))
                rank += 1
            if spec.decider == "first" and all(answers):
                break
        for task in pending:  # late: counted when it arrives, never waited for
            member, index = calls[task]
            self._stragglers.add(task)
            task.add_done_callback(self._straggler_done(member))
        out: list[Prediction | None] = []
        for found in answers:
            if not found:
                out.append(None)
                continue
            chosen = decide(spec.decider, found)
            out.append(
                chosen.prediction.model_copy(
                    update={"decider": spec.decider, "answers": len(found)}
                )
            )
        return out

    @staticmethod
    def _result(task: asyncio.Task[InferenceResult], member: Route) -> InferenceResult | None:
        error = task.exception()
        if error is None:
            return task.result()
        if isinstance(error, ModelServerError):
            log.warning("speculative member %s did not answer: %s", member.version, error)
            return None
        raise error

    def _straggler_done(self, member: Route) -> Callable[[asyncio.Task[InferenceResult]], None]:
        def done(task: asyncio.Task[InferenceResult]) -> None:
            self._stragglers.discard(task)
            if task.cancelled() or task.exception() is not None:
                return
            rows = len(task.result().labels)
            self.late[member.version] += rows
            if self._on_late is not None:
                self._on_late(member.version, rows)

        return done

    async def close(self) -> None:
        """Wait for the late answers still on their way (at shutdown)."""
        if self._stragglers:
            await asyncio.wait(set(self._stragglers))

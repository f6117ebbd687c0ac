"""Small helpers several test modules share: scripted HTTP answers, topics of a test's own."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import httpx

from connectors.kafka import admin, ensure_topics, list_topics
from connectors.process import wait_until
from schemas.settings import Settings
from schemas.topics import topic_specs


class Recorder:
    """An httpx MockTransport handler that answers from a script and records requests.

    The answers are used in order; the last one repeats. An exception is raised
    instead of answering (a connection error, a timeout).
    """

    def __init__(self, *answers: httpx.Response | Exception) -> None:
        self.answers = list(answers)
        self.requests: list[httpx.Request] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        answer = self.answers.pop(0) if len(self.answers) > 1 else self.answers[0]
        if isinstance(answer, Exception):
            raise answer
        return answer


@contextmanager
def own_topics(settings: Settings, prefix: str) -> Iterator[Settings]:
    """``settings`` with every weir topic under ``prefix``, created now and deleted after."""
    kafka = settings.kafka.model_copy(update={"topic_prefix": prefix})
    settings = settings.model_copy(update={"kafka": kafka})
    ensure_topics(settings)
    names = [spec.name for spec in topic_specs(settings.kafka)]
    wait_until(lambda: set(names) <= set(list_topics(settings)), timeout_s=30, what="new topics")
    try:
        yield settings
    finally:
        client = admin(settings)  # kept referenced until its futures are done
        for future in client.delete_topics(names, operation_timeout=30).values():
            future.result(timeout=30)

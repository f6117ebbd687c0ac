"""connectors.retrying.retried: the first try bare, then backoff, the last error as it was."""

from __future__ import annotations

import asyncio

import pytest

from connectors.retrying import retried


class Flaky:
    """Fails ``failures`` times with ``error``, then answers."""

    def __init__(self, failures: int, error: Exception) -> None:
        self.failures, self.error, self.calls = failures, error, 0

    async def __call__(self) -> str:
        self.calls += 1
        if self.calls <= self.failures:
            raise self.error
        return "answer"


def run(flaky: Flaky, attempts: int) -> tuple[str | BaseException, list[float]]:
    waits: list[float] = []

    async def sleep(s: float) -> None:
        waits.append(round(s, 6))

    async def go() -> str:
        return await retried(
            flaky,
            attempts=attempts,
            retriable=lambda e: isinstance(e, ConnectionError),
            first_wait_s=0.05,
            max_wait_s=0.3,
            jitter_s=0,
            sleep=sleep,
        )

    try:
        return asyncio.run(go()), waits
    except Exception as exc:
        return exc, waits


def test_the_first_try_that_answers_waits_for_nothing() -> None:
    assert run(Flaky(0, ConnectionError()), attempts=5) == ("answer", [])


def test_retries_double_their_wait_up_to_the_cap() -> None:
    flaky = Flaky(5, ConnectionError("down"))
    assert run(flaky, attempts=6) == ("answer", [0.05, 0.1, 0.2, 0.3, 0.3])
    assert flaky.calls == 6


def test_the_last_error_is_raised_once_the_attempts_are_spent() -> None:
    error = ConnectionError("still down")
    flaky = Flaky(10, error)
    got, waits = run(flaky, attempts=3)
    assert got is error and flaky.calls == 3 and waits == [0.05, 0.1]


@pytest.mark.parametrize("attempts", [1, 5])
def test_an_error_that_is_not_retriable_is_raised_at_once(attempts: int) -> None:
    error = ValueError("bad request")
    flaky = Flaky(1, error)
    assert run(flaky, attempts=attempts) == (error, [])
    assert flaky.calls == 1

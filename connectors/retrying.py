"""A call retried with exponential backoff and jitter, its first try without tenacity.

The model-server client calls once per batch on the scoring path and the egress
once per event; tenacity's per-use objects (``AsyncRetrying``, its state and
closures, in reference cycles that only the cyclic GC frees) cost more than a
loopback call. So the first try goes out bare, and tenacity is built only once a
retry is due. Retries wait ``first_wait_s``, then twice that, and so on up to
``max_wait_s``, each plus up to ``jitter_s``.
"""

from __future__ import annotations

import random
from collections.abc import Awaitable, Callable
from typing import TypeVar

from tenacity import AsyncRetrying, retry_if_exception, stop_after_attempt, wait_exponential_jitter

_T = TypeVar("_T")


async def retried(
    call: Callable[[], Awaitable[_T]],
    *,
    attempts: int,
    retriable: Callable[[BaseException], bool],
    first_wait_s: float,
    max_wait_s: float,
    jitter_s: float,
    sleep: Callable[[float], Awaitable[None]],
) -> _T:
    """``await call()``, tried up to ``attempts`` times while it raises what ``retriable``
    accepts; the last error is raised as it was."""
    try:
        return await call()
    except Exception as exc:
        if attempts <= 1 or not retriable(exc):
            raise
    await sleep(first_wait_s + random.uniform(0, jitter_s))
    retrying = AsyncRetrying(
        stop=stop_after_attempt(attempts - 1),
        # the n-th retry waits first_wait_s * 2**(n-1): these are retries 2, 3, …
        wait=wait_exponential_jitter(multiplier=2 * first_wait_s, max=max_wait_s, jitter=jitter_s),
        retry=retry_if_exception(retriable),
        reraise=True,
        sleep=sleep,
    )
    async for attempt in retrying:
        with attempt:
            return await call()
    raise AssertionError("unreachable: tenacity reraises")  # pragma: no cover

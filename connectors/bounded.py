"""Blocking calls to a service that must never hold up an event loop for long.

Each call runs in a thread and is bounded in time; after a failure no call is
tried for ``pause_s``, so a service that is away costs its callers one timeout,
not one per message. The callers decide what to do without the service (a dead
letter goes out truncated, a route is accepted on its signature alone).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import TypeVar

from schemas import ServiceError

T = TypeVar("T")


class Bounded:
    def __init__(
        self,
        timeout_s: float,
        *,
        pause_s: float = 30.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.timeout_s = timeout_s
        self.pause_s = pause_s
        self._clock = clock
        self._paused_until = 0.0

    @property
    def paused(self) -> bool:
        """A recent call failed: do not try the service yet."""
        return self._clock() < self._paused_until

    async def call(self, fn: Callable[..., T], *args: object) -> T:
        """``fn(*args)`` in a thread, at most ``timeout_s``; a ServiceError or TimeoutError
        pauses every call for ``pause_s`` and is raised."""
        try:
            return await asyncio.wait_for(asyncio.to_thread(fn, *args), self.timeout_s)
        except (ServiceError, TimeoutError):
            self._paused_until = self._clock() + self.pause_s
            raise

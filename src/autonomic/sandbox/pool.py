"""A warm pool: guests started ahead of time, so that an execution skips the start-up.

Each guest is already confined and blocked reading its request; taking one hands over a
process that has run nothing yet, and it is destroyed after its single use, so nothing
passes from one execution to the next. The pool refills in the background, between
executions.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Awaitable, Callable

from autonomic.errors import SandboxError
from autonomic.sandbox.guest import Guest

__all__ = ["WarmPool"]


class WarmPool:
    """Keeps ``size`` idle guests started by ``start``."""

    def __init__(self, start: Callable[[], Awaitable[Guest]], size: int) -> None:
        self._start = start
        self._size = size
        self._ready: deque[Guest] = deque()
        self._starting: set[asyncio.Task[None]] = set()
        self._closed = False
        self._failure: SandboxError | None = None

    def fill(self) -> None:
        """Start as many guests as the pool lacks."""
        while not self._closed and len(self._ready) + len(self._starting) < self._size:
            task = asyncio.create_task(self._add())
            self._starting.add(task)
            task.add_done_callback(self._starting.discard)

    async def _add(self) -> None:
        try:
            guest = await self._start()
        except SandboxError as e:
            self._failure = e  # for wait_full; an execution that finds none starts cold
            return
        self._failure = None
        if self._closed:
            await guest.discard()
        else:
            self._ready.append(guest)

    async def wait_full(self) -> None:
        """Fill the pool and wait until it is full; SandboxError if a guest cannot start."""
        while len(self._ready) < self._size and not self._closed:
            self.fill()
            await asyncio.wait(set(self._starting))
            if self._failure is not None:
                failure, self._failure = self._failure, None
                raise failure

    async def take(self) -> Guest | None:
        """An idle guest, or None when none is ready.

        It does not refill: starting a guest takes a CPU for tens of milliseconds, which
        would slow the execution that took this one; call ``fill`` once it is done.
        """
        while self._ready:
            guest = self._ready.popleft()
            if guest.alive:
                return guest
            await guest.discard()
        return None

    async def aclose(self) -> None:
        """Stop refilling and destroy every idle guest."""
        self._closed = True
        for task in list(self._starting):
            task.cancel()
        if self._starting:
            await asyncio.wait(self._starting)
        while self._ready:
            await self._ready.popleft().discard()

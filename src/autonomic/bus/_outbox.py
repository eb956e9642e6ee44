"""The outbox of a network bus: ``publish`` puts a message here and returns at once; one
task sends what waits, in order and in batches, and keeps it through a broker outage.

While the broker is away the outbox holds up to ``limit`` messages and then drops the
oldest: a message is a hint, and a dropped one costs a subscriber a poll, never data.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import deque
from collections.abc import Awaitable, Callable

__all__ = ["Outbox", "Send"]

log = logging.getLogger("autonomic.bus")

Send = Callable[[list[tuple[str, str, int]]], Awaitable[None]]
"""Send a batch of (topic, message, number) in order; raise if any may not have gone.
The number is unique to the message within this outbox, for brokers that deduplicate."""

_BATCH = 512
_RETRY_S = (0.05, 0.1, 0.25, 0.5)


class Outbox:
    def __init__(self, send: Send, *, name: str, limit: int = 100_000) -> None:
        self._send, self._name = send, name
        self._queue: deque[tuple[str, str, int]] = deque(maxlen=limit)
        self._numbers = 0
        self._ready = asyncio.Event()
        self._idle = asyncio.Event()
        self._idle.set()
        self._task: asyncio.Task[None] | None = None
        self.dropped = 0

    def put(self, topic: str, message: str) -> None:
        if len(self._queue) == self._queue.maxlen:
            self.dropped += 1
            if self.dropped == 1 or self.dropped % 10_000 == 0:
                log.warning("%s: the broker lags; %d hints dropped", self._name, self.dropped)
        self._numbers += 1
        self._queue.append((topic, message, self._numbers))
        self._idle.clear()
        self._ready.set()

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._pump(), name=f"{self._name}-outbox")

    async def stop(self, grace_s: float) -> None:
        """Give what waits ``grace_s`` seconds to go, then stop sending."""
        if self._task is None:
            return
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(grace_s):
                await self._idle.wait()
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task
        self._task = None

    async def _pump(self) -> None:
        failures = 0
        while True:
            if not self._queue:
                self._idle.set()
                self._ready.clear()
                await self._ready.wait()
                continue
            batch = [self._queue[i] for i in range(min(_BATCH, len(self._queue)))]
            try:
                await self._send(batch)
            except Exception as e:
                if failures == 0:
                    log.warning(
                        "%s: cannot publish (%s); holding %d hints", self._name, e, len(self._queue)
                    )
                await asyncio.sleep(_RETRY_S[min(failures, len(_RETRY_S) - 1)])
                failures += 1
                continue
            if failures:
                log.warning("%s: publishing again", self._name)
                failures = 0
            sent = batch[-1][2]
            while self._queue and self._queue[0][2] <= sent:
                self._queue.popleft()

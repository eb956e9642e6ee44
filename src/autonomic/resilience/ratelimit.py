"""A token bucket: at most ``rate`` calls a second on average, bursts of up to ``burst``."""

from __future__ import annotations

import asyncio
import math
import threading
import time
from collections.abc import Awaitable, Callable

from autonomic.errors import ConfigError

__all__ = ["TokenBucket"]


class TokenBucket:
    """Shared by every run, thread and event loop of the process; ``acquire`` waits, never refuses.

    Each caller reserves its token at once under a thread lock (the count may go below
    zero) and then sleeps until that token is due, so waiters are served in order and no
    asyncio object ties the bucket to the first event loop that used it. The rate limits
    something outside the process, so two loops share one bucket rather than each getting
    its own allowance. A waiter that is cancelled gives its token back.
    """

    def __init__(
        self,
        rate: float,
        burst: int = 1,
        *,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        if not (isinstance(rate, int | float) and math.isfinite(rate) and rate > 0):
            raise ConfigError(f"rate must be a positive number of calls per second, got {rate!r}")
        if isinstance(burst, bool) or not isinstance(burst, int) or burst < 1:
            raise ConfigError(f"burst must be a whole number >= 1, got {burst!r}")
        self.rate, self.burst = float(rate), burst
        self._clock = clock
        self._sleep = sleep
        self._lock = threading.Lock()
        self._tokens = float(burst)
        self._updated = clock()

    def _reserve(self) -> float:
        """Take a token now; the seconds until it is really there."""
        with self._lock:
            now = self._clock()
            self._tokens = min(self.burst, self._tokens + (now - self._updated) * self.rate)
            self._updated = now
            self._tokens -= 1
            return 0.0 if self._tokens >= 0 else -self._tokens / self.rate

    def _give_back(self) -> None:
        with self._lock:
            self._tokens = min(self.burst, self._tokens + 1)

    async def acquire(self) -> float:
        """Take a token, waiting as long as needed; returns the seconds waited."""
        delay = self._reserve()
        if delay > 0:
            try:
                await self._sleep(delay)
            except BaseException:
                self._give_back()
                raise
        return delay

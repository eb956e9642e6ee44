"""Retrying transient model failures with exponential backoff, jitter and Retry-After.

Only ``ModelUnavailable`` (rate limits, 5xx, timeouts, dropped connections, an open
breaker) is retried: a 400 or 401 fails the same way every time, so it is raised at once,
and a failure that caps its own attempts (an HTTP 500) gets no more than that.
A server that asks for a longer wait than ``max_delay`` is not waited on inside the
call; the error goes up so the runtime can suspend the run instead of holding a worker.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

from autonomic.errors import ModelUnavailable
from autonomic.models.base import Model, ModelRequest, ModelResponse
from autonomic.models.wrapper import ModelWrapper, with_meta
from autonomic.resilience.backoff import backoff_delay

__all__ = ["Retrying"]


class Retrying(ModelWrapper):
    """Retries ``inner`` up to ``attempts`` times in all; ``meta["attempts"]`` says how many."""

    def __init__(
        self,
        inner: Model,
        *,
        attempts: int = 4,
        base_delay: float = 0.5,
        max_delay: float = 30.0,
        jitter: float = 0.5,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        if attempts < 1 or not 0 <= jitter <= 1:
            raise ValueError("attempts must be >= 1 and jitter between 0 and 1")
        super().__init__(inner)
        self.attempts = attempts
        self.base_delay, self.max_delay, self.jitter = base_delay, max_delay, jitter
        self._sleep = sleep

    async def _complete(self, request: ModelRequest) -> ModelResponse:
        attempt = 1
        while True:
            try:
                response = await self.inner.complete(request)
            except ModelUnavailable as e:
                limit = min(self.attempts, e.max_attempts or self.attempts)
                if attempt >= limit or (e.retry_after or 0.0) > self.max_delay:
                    raise
                await self._sleep(
                    backoff_delay(
                        attempt,
                        base_delay=self.base_delay,
                        max_delay=self.max_delay,
                        retry_after=e.retry_after,
                        jitter=self.jitter,
                    )
                )
                attempt += 1
                continue
            return with_meta(response, attempts=attempt) if attempt > 1 else response

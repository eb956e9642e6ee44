"""Circuit breakers for model endpoints, one per endpoint, shared by every run in the process.

Errors that say nothing about the server's health (a 400, a malformed answer) do not
count; an open breaker refuses with ``ModelUnavailable`` and the time left as
``retry_after``, so retries and fallbacks treat it like any transient failure.
"""

from __future__ import annotations

import threading
from typing import Any

from autonomic.errors import ModelUnavailable
from autonomic.models.base import Model, ModelRequest, ModelResponse
from autonomic.models.wrapper import ModelWrapper
from autonomic.resilience.breaker import (
    BreakerState,
    CircuitBreaker,
    CircuitOpen,
    TransitionCallback,
    subscribe_transitions,
)

__all__ = [
    "BreakerState",
    "CircuitBreaker",
    "CircuitBreakerModel",
    "TransitionCallback",
    "breaker_for",
    "subscribe_transitions",
]


_breakers: dict[str, CircuitBreaker] = {}
_breakers_lock = threading.Lock()


def breaker_for(endpoint: str, **settings: Any) -> CircuitBreaker:
    """The process-wide breaker of ``endpoint``; ``settings`` apply when it is first made."""
    with _breakers_lock:
        if endpoint not in _breakers:
            _breakers[endpoint] = CircuitBreaker(endpoint, **settings)
        return _breakers[endpoint]


class CircuitBreakerModel(ModelWrapper):
    """Guards ``inner`` with the shared breaker of its endpoint (or the one given)."""

    def __init__(
        self,
        inner: Model,
        *,
        breaker: CircuitBreaker | None = None,
        failure_threshold: int = 5,
        reset_timeout: float = 30.0,
    ) -> None:
        super().__init__(inner)
        self.breaker = breaker or breaker_for(
            self.endpoint, failure_threshold=failure_threshold, reset_timeout=reset_timeout
        )

    async def _complete(self, request: ModelRequest) -> ModelResponse:
        try:
            self.breaker.before_call()
        except CircuitOpen as e:
            raise ModelUnavailable(str(e), retry_after=e.retry_after) from None
        try:
            response = await self.inner.complete(request)
        except ModelUnavailable as e:
            self.breaker.on_failure(e)
            raise
        except BaseException:
            self.breaker.on_neutral()
            raise
        self.breaker.on_success()
        return response

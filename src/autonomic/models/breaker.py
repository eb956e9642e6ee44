"""Circuit breakers, one per provider endpoint, shared by every run in the process.

After ``failure_threshold`` transient failures in a row the breaker opens and calls fail
at once (``ModelUnavailable`` with the time left as ``retry_after``) instead of piling
onto a server that is down. After ``reset_timeout`` one probe call is let through
(half-open): its success closes the breaker, its failure opens it again. Errors that
say nothing about the server's health (a 400, a malformed answer) do not count.

Every transition is reported to subscribers (``subscribe_transitions``) and to the call that
caused it, whose response carries it in ``meta["breaker"]``, so the runtime can record it.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Any, Literal

from autonomic.errors import ModelUnavailable
from autonomic.models.base import Model, ModelRequest, ModelResponse
from autonomic.models.wrapper import ModelWrapper, note_transition

__all__ = [
    "BreakerState",
    "CircuitBreaker",
    "CircuitBreakerModel",
    "TransitionCallback",
    "breaker_for",
    "subscribe_transitions",
]

BreakerState = Literal["closed", "open", "half_open"]
TransitionCallback = Callable[[dict[str, Any]], None]

_log = logging.getLogger(__name__)
_subscribers: list[TransitionCallback] = []


def subscribe_transitions(callback: TransitionCallback) -> Callable[[], None]:
    """Call ``callback(transition)`` on every breaker's transitions; returns an unsubscribe."""
    _subscribers.append(callback)
    return lambda: _subscribers.remove(callback)


def _publish(transition: dict[str, Any]) -> None:
    note_transition(transition)
    for callback in _subscribers.copy():  # a callback may unsubscribe itself
        try:
            callback(transition)
        except Exception:
            _log.exception("a circuit breaker subscriber failed")


class CircuitBreaker:
    """Closed, open or half-open; thread-safe, so one instance can serve every event loop."""

    def __init__(
        self,
        endpoint: str,
        *,
        failure_threshold: int = 5,
        reset_timeout: float = 30.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if failure_threshold < 1 or reset_timeout < 0:
            raise ValueError("failure_threshold must be >= 1 and reset_timeout >= 0")
        self.endpoint = endpoint
        self.failure_threshold = failure_threshold
        self.reset_timeout = reset_timeout
        self._clock = clock
        self._lock = threading.Lock()
        self._state: BreakerState = "closed"
        self._failures = 0
        self._opened_at = 0.0
        self._probing = False

    @property
    def state(self) -> BreakerState:
        return self._state

    def _move(self, to: BreakerState, reason: str) -> dict[str, Any]:
        transition = {
            "endpoint": self.endpoint,
            "from": self._state,
            "to": to,
            "reason": reason,
            "at": time.time(),
        }
        self._state = to
        if to == "open":
            self._opened_at = self._clock()
        return transition

    def before_call(self) -> None:
        """Let a call through, or raise ``ModelUnavailable`` while the breaker is open."""
        transition = None
        with self._lock:
            if self._state == "open":
                waited = self._clock() - self._opened_at
                if waited < self.reset_timeout:
                    raise ModelUnavailable(
                        f"circuit open for {self.endpoint} after {self._failures} failures",
                        retry_after=self.reset_timeout - waited,
                    )
                transition = self._move("half_open", "reset timeout elapsed; probing")
            elif self._state == "half_open" and self._probing:
                raise ModelUnavailable(
                    f"circuit half-open for {self.endpoint}: a probe call is in flight",
                    retry_after=min(1.0, self.reset_timeout),
                )
            self._probing = self._state == "half_open"
        if transition:
            _publish(transition)

    def on_success(self) -> None:
        transition = None
        with self._lock:
            self._failures = 0
            self._probing = False
            if self._state != "closed":
                transition = self._move("closed", "a call succeeded")
        if transition:
            _publish(transition)

    def on_failure(self, error: BaseException) -> None:
        transition = None
        with self._lock:
            self._failures += 1
            self._probing = False
            reason = f"{type(error).__name__}: {error}"[:300]
            if self._state == "half_open":
                transition = self._move("open", f"the probe failed: {reason}")
            elif self._state == "closed" and self._failures >= self.failure_threshold:
                transition = self._move("open", f"{self._failures} failures in a row: {reason}")
        if transition:
            _publish(transition)

    def on_neutral(self) -> None:
        """A call ended in a way that says nothing about the endpoint (cancelled, bad request)."""
        with self._lock:
            self._probing = False

    def __repr__(self) -> str:
        return f"CircuitBreaker({self.endpoint!r}, state={self._state!r})"


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
        self.breaker.before_call()
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

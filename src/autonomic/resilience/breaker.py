"""Circuit breakers: closed, open, half-open; shared by every run in the process.

After ``failure_threshold`` failures in a row the breaker opens and calls are refused at
once instead of piling onto something that is down. After ``reset_timeout`` one probe
call is let through (half-open): its success closes the breaker, its failure opens it
again. Model endpoints and tools each get their own breaker.

Every transition goes to subscribers (``subscribe_transitions``) and to the call that
caused it (``collecting``), so the runtime can record it as an event.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Any, Literal

from autonomic.errors import AutonomicError, ConfigError
from autonomic.resilience.describe import describe_error

__all__ = [
    "BreakerState",
    "CircuitBreaker",
    "CircuitOpen",
    "TransitionCallback",
    "collecting",
    "is_collecting",
    "note_transition",
    "subscribe_transitions",
]


class CircuitOpen(AutonomicError):
    """A breaker refused the call; ``retry_after`` says when it will let one through."""

    def __init__(self, message: str, retry_after: float) -> None:
        super().__init__(message)
        self.retry_after = retry_after


_collected: ContextVar[list[dict[str, Any]] | None] = ContextVar(
    "autonomic_breaker_transitions", default=None
)

BreakerState = Literal["closed", "open", "half_open"]
TransitionCallback = Callable[[dict[str, Any]], None]

_log = logging.getLogger(__name__)
_subscribers: list[TransitionCallback] = []


def subscribe_transitions(callback: TransitionCallback) -> Callable[[], None]:
    """Call ``callback(transition)`` on every breaker's transitions; returns an unsubscribe."""
    _subscribers.append(callback)
    return lambda: _subscribers.remove(callback)


def note_transition(transition: dict[str, Any]) -> None:
    """Record a transition for the call in progress, if one is collecting (see ``collecting``)."""
    collected = _collected.get()
    if collected is not None:
        collected.append(transition)


def is_collecting() -> bool:
    return _collected.get() is not None


@contextmanager
def collecting() -> Iterator[list[dict[str, Any]]]:
    """Collect the transitions caused by the code inside the block."""
    collected: list[dict[str, Any]] = []
    token = _collected.set(collected)
    try:
        yield collected
    finally:
        _collected.reset(token)


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
        if isinstance(failure_threshold, bool) or not isinstance(failure_threshold, int):
            raise ConfigError(
                f"failure_threshold must be a whole number, got {failure_threshold!r}"
            )
        if failure_threshold < 1:
            raise ConfigError(f"failure_threshold must be >= 1, got {failure_threshold}")
        if not (isinstance(reset_timeout, int | float) and math.isfinite(reset_timeout)):
            raise ConfigError(f"reset_timeout must be a number of seconds, got {reset_timeout!r}")
        if reset_timeout < 0:
            raise ConfigError(f"reset_timeout must be >= 0 seconds, got {reset_timeout:g}")
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
        """Let a call through, or raise ``CircuitOpen`` while the breaker is open."""
        transition = None
        with self._lock:
            if self._state == "open":
                waited = self._clock() - self._opened_at
                if waited < self.reset_timeout:
                    raise CircuitOpen(
                        f"circuit open for {self.endpoint} after {self._failures} failures",
                        self.reset_timeout - waited,
                    )
                transition = self._move("half_open", "reset timeout elapsed; probing")
            elif self._state == "half_open" and self._probing:
                raise CircuitOpen(
                    f"circuit half-open for {self.endpoint}: a probe call is in flight",
                    min(1.0, self.reset_timeout),
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

    def on_failure(self, error: BaseException | str) -> None:
        """A call failed; ``error`` is the exception, or already a line describing it."""
        reason = (error if isinstance(error, str) else describe_error(error))[:300]
        transition = None
        with self._lock:
            self._failures += 1
            self._probing = False
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

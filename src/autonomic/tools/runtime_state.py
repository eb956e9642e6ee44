"""Each tool's circuit breaker and rate limit, made on first use and shared by every run,
thread and event loop of the process (one per tool object, forgotten with it)."""

from __future__ import annotations

import threading
import weakref
from dataclasses import dataclass

from autonomic.resilience.breaker import CircuitBreaker
from autonomic.resilience.ratelimit import TokenBucket
from autonomic.tools.options import options_of

__all__ = ["ToolRuntimeState", "state_of"]


@dataclass(frozen=True, slots=True)
class ToolRuntimeState:
    breaker: CircuitBreaker | None
    bucket: TokenBucket | None


_states: dict[int, ToolRuntimeState] = {}
_pinned: list[object] = []  # tools that cannot be weakly referenced: kept so ids stay unique
_lock = threading.Lock()


def _new_state(tool: object, name: str) -> ToolRuntimeState:
    options = options_of(tool)
    breaker = (
        CircuitBreaker(
            f"tool {name}",
            failure_threshold=options.breaker_threshold,
            reset_timeout=options.breaker_reset_s,
        )
        if options.breaker_threshold
        else None
    )
    bucket = TokenBucket(options.rate_per_s, options.burst) if options.rate_per_s else None
    return ToolRuntimeState(breaker, bucket)


def state_of(tool: object, name: str) -> ToolRuntimeState:
    """The breaker and rate limit of ``tool`` (keyed by identity: tools need not be hashable)."""
    key = id(tool)
    state = _states.get(key)
    if state is not None:
        return state
    with _lock:
        state = _states.get(key)
        if state is None:
            state = _states[key] = _new_state(tool, name)
            try:
                weakref.finalize(tool, _states.pop, key, None)
            except TypeError:
                _pinned.append(tool)
    return state

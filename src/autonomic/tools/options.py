"""How the runtime executes a tool: retries, circuit breaker, rate limit, output cap, secrets.

Any Tool may carry ``options: ToolOptions``; tools without it get the defaults. Breakers
and rate limits are per tool and shared by every run in the process.
"""

from __future__ import annotations

import weakref
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from autonomic.errors import ConfigError
from autonomic.resilience.breaker import CircuitBreaker
from autonomic.resilience.ratelimit import TokenBucket

if TYPE_CHECKING:
    from autonomic.tools.base import Tool

__all__ = ["DEFAULT_OPTIONS", "ToolOptions", "ToolRuntimeState", "options_of", "state_of"]


@dataclass(frozen=True, slots=True)
class ToolOptions:
    """``retries``: extra attempts for failures the tool marks retryable (and for timeouts,
    when the tool is idempotent). ``breaker_threshold`` failures in a row open the tool's
    circuit for ``breaker_reset_s`` (0 turns the breaker off). ``rate_per_s``/``burst``: a
    token bucket. Observations longer than ``max_observation_chars`` are cut for the model;
    the whole output stays in the log. ``secrets``: names the tool receives in its context.
    """

    retries: int = 0
    backoff_s: float = 0.5
    max_backoff_s: float = 10.0
    breaker_threshold: int = 5
    breaker_reset_s: float = 30.0
    rate_per_s: float | None = None
    burst: int = 1
    max_observation_chars: int = 16_000
    secrets: tuple[str, ...] = ()
    requires_approval: bool | Callable[[dict[str, Any]], bool] = False

    def __post_init__(self) -> None:
        if self.retries < 0 or self.backoff_s < 0 or self.breaker_threshold < 0:
            raise ConfigError("retries, backoff_s and breaker_threshold cannot be negative")
        if self.rate_per_s is not None and self.rate_per_s <= 0:
            raise ConfigError("rate_per_s must be positive (or None for no limit)")
        if self.max_observation_chars < 100:
            raise ConfigError("max_observation_chars must be at least 100")


DEFAULT_OPTIONS = ToolOptions()


def options_of(tool: Tool) -> ToolOptions:
    options = getattr(tool, "options", None)
    return options if isinstance(options, ToolOptions) else DEFAULT_OPTIONS


@dataclass(slots=True)
class ToolRuntimeState:
    breaker: CircuitBreaker | None
    bucket: TokenBucket | None


_states: weakref.WeakKeyDictionary[Tool, ToolRuntimeState] = weakref.WeakKeyDictionary()


def state_of(tool: Tool) -> ToolRuntimeState:
    """The tool's breaker and rate limiter, made on first use and shared by all runs."""
    state = _states.get(tool)
    if state is None:
        options = options_of(tool)
        breaker = (
            CircuitBreaker(
                f"tool {tool.spec.name}",
                failure_threshold=options.breaker_threshold,
                reset_timeout=options.breaker_reset_s,
            )
            if options.breaker_threshold
            else None
        )
        bucket = TokenBucket(options.rate_per_s, options.burst) if options.rate_per_s else None
        state = _states[tool] = ToolRuntimeState(breaker, bucket)
    return state

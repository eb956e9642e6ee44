"""How the runtime executes a tool: retries, circuit breaker, rate limit, output caps, secrets,
approval. Plain configuration, checked when the tool is declared; the breakers and rate
limits these describe live in ``tools.runtime_state``."""

from __future__ import annotations

import inspect
import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from autonomic.errors import ConfigError

__all__ = ["DEFAULT_OPTIONS", "ApprovalRule", "ToolOptions", "options_of"]

ApprovalRule = bool | Callable[[dict[str, Any]], bool]
"""``True``/``False``, or a function of a call's arguments saying whether it needs approval."""


def _whole(name: str, value: object, minimum: int, meaning: str) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ConfigError(f"{name} must be a whole number >= {minimum} ({meaning}), got {value!r}")


def _seconds(name: str, value: object, meaning: str, *, positive: bool = False) -> None:
    ok = (
        not isinstance(value, bool)
        and isinstance(value, int | float)
        and math.isfinite(value)
        and (value > 0 if positive else value >= 0)
    )
    if not ok:
        bound = "> 0" if positive else ">= 0"
        raise ConfigError(f"{name} must be a number {bound} ({meaning}), got {value!r}")


def _check_approval_rule(rule: object) -> None:
    if isinstance(rule, bool):
        return
    if not callable(rule):
        raise ConfigError(
            f"requires_approval must be True, False or a function of the call's arguments, "
            f"got {rule!r}"
        )
    if inspect.iscoroutinefunction(rule) or inspect.iscoroutinefunction(type(rule).__call__):
        raise ConfigError("requires_approval must be a plain (not async) function returning a bool")
    try:
        signature = inspect.signature(rule)
    except (TypeError, ValueError):  # some builtins have no signature to check
        return
    try:
        signature.bind({})
    except TypeError:
        raise ConfigError(
            f"requires_approval function {getattr(rule, '__name__', rule)!r} must take one "
            "argument: the call's arguments as a dict"
        ) from None


def _names(secrets: object) -> tuple[str, ...]:
    if isinstance(secrets, Iterable) and not isinstance(secrets, str | bytes):
        items = tuple(secrets)
        names = tuple(n for n in items if isinstance(n, str) and n)
        if len(names) == len(items):
            return names
    raise ConfigError(
        f"secrets must be a sequence of names, e.g. secrets=('API_TOKEN',), got {secrets!r}"
    )


@dataclass(frozen=True, slots=True)
class ToolOptions:
    """``retries``: extra attempts for failures the tool marks retryable (and for timeouts,
    when the tool is idempotent), ``backoff_s`` apart, doubling up to ``max_backoff_s``.
    ``breaker_threshold`` failures in a row open the tool's circuit for ``breaker_reset_s``
    (0 turns the breaker off). ``rate_per_s``/``burst``: a token bucket. Observations longer
    than ``max_observation_chars`` are cut for the model; the log keeps up to
    ``max_output_chars`` of them. ``secrets``: names the tool receives in its context.
    ``requires_approval``: whether a call must be approved by a person before it runs
    (``True``, or a function of the call's arguments returning a bool).
    ``side_effects``: the tool changes something outside the run (sends, pays, deletes)
    even if it is idempotent; guards that stop tainted data from reaching such tools
    (``guards.shields``) treat every non-idempotent tool as one too.
    """

    retries: int = 0
    backoff_s: float = 0.5
    max_backoff_s: float = 10.0
    breaker_threshold: int = 5
    breaker_reset_s: float = 30.0
    rate_per_s: float | None = None
    burst: int = 1
    max_observation_chars: int = 16_000
    max_output_chars: int = 1_000_000
    secrets: tuple[str, ...] = ()
    requires_approval: ApprovalRule = False
    side_effects: bool = False

    def __post_init__(self) -> None:
        _whole("retries", self.retries, 0, "extra attempts")
        _seconds("backoff_s", self.backoff_s, "seconds before the first retry")
        _seconds("max_backoff_s", self.max_backoff_s, "the longest wait between retries")
        _whole("breaker_threshold", self.breaker_threshold, 0, "failures in a row; 0 turns it off")
        _seconds("breaker_reset_s", self.breaker_reset_s, "seconds the circuit stays open")
        if self.rate_per_s is not None:
            _seconds("rate_per_s", self.rate_per_s, "calls a second, or None", positive=True)
        _whole("burst", self.burst, 1, "calls allowed at once")
        _whole("max_observation_chars", self.max_observation_chars, 100, "what the model sees")
        _whole(
            "max_output_chars",
            self.max_output_chars,
            self.max_observation_chars,
            "what the log keeps; at least max_observation_chars",
        )
        object.__setattr__(self, "secrets", _names(self.secrets))
        _check_approval_rule(self.requires_approval)
        if not isinstance(self.side_effects, bool):
            raise ConfigError(f"side_effects must be True or False, got {self.side_effects!r}")


DEFAULT_OPTIONS = ToolOptions()


def options_of(tool: object) -> ToolOptions:
    """The options of any tool; a tool that does not say gets the defaults."""
    try:
        options = getattr(tool, "options", None)
    except Exception:  # a broken property is the same as none
        return DEFAULT_OPTIONS
    return options if isinstance(options, ToolOptions) else DEFAULT_OPTIONS

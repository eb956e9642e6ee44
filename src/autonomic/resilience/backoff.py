"""Exponential backoff with jitter, shared by model retries and tool retries."""

from __future__ import annotations

import random

__all__ = ["backoff_delay"]


def backoff_delay(
    attempt: int,
    *,
    base_delay: float,
    max_delay: float,
    retry_after: float | None,
    jitter: float,
) -> float:
    """Seconds to wait before retry number ``attempt`` (1-based): Retry-After wins if longer.

    ``jitter`` (0 to 1) is how much of the exponential delay is randomised, so that many
    runs hit by the same outage do not retry in lockstep.
    """
    exponential = min(max_delay, base_delay * 2.0 ** (attempt - 1))
    delay = exponential * (1 - jitter + jitter * random.random())
    return max(delay, retry_after or 0.0)

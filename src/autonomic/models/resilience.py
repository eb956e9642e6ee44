"""The usual stack of wrappers in one call: a cache over fallbacks over retried, guarded models.

    resilient(primary, fallbacks=[backup], cache=ResponseCache())
    = CachedModel(Fallback([Retrying(CircuitBreakerModel(primary)),
                            Retrying(CircuitBreakerModel(backup))]))

Each layer is an ordinary wrapper Model; compose them by hand for any other order.
"""

from __future__ import annotations

from collections.abc import Sequence

from autonomic.models.base import Model
from autonomic.models.breaker import CircuitBreakerModel
from autonomic.models.cache import CachedModel, ResponseCache
from autonomic.models.fallback import Fallback
from autonomic.models.retry import Retrying

__all__ = ["resilient"]


def resilient(
    model: Model,
    *,
    fallbacks: Sequence[Model] = (),
    attempts: int = 4,
    base_delay: float = 0.5,
    max_delay: float = 30.0,
    failure_threshold: int = 5,
    reset_timeout: float = 30.0,
    cache: ResponseCache | None = None,
) -> Model:
    """``model`` with retries and its endpoint's circuit breaker, then fallbacks, then a cache."""

    def guarded(m: Model) -> Model:
        breaker = CircuitBreakerModel(
            m, failure_threshold=failure_threshold, reset_timeout=reset_timeout
        )
        return Retrying(breaker, attempts=attempts, base_delay=base_delay, max_delay=max_delay)

    chain: Model = guarded(model)
    if fallbacks:
        chain = Fallback([chain, *(guarded(m) for m in fallbacks)])
    return chain if cache is None else CachedModel(chain, cache)

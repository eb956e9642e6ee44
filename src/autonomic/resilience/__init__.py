"""Resilience shared by models and tools: circuit breakers, backoff, rate limits."""

from autonomic.resilience.backoff import backoff_delay
from autonomic.resilience.breaker import CircuitBreaker, CircuitOpen, subscribe_transitions
from autonomic.resilience.ratelimit import TokenBucket

__all__ = ["CircuitBreaker", "CircuitOpen", "TokenBucket", "backoff_delay", "subscribe_transitions"]

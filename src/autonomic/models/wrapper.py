"""The base of wrapper models (retry, breaker, fallback, cascade, cache), and what they report.

A wrapper is itself a Model around one or more models. Circuit breaker transitions
can happen deep inside a stack of wrappers, on an attempt that then failed and was
retried or fallen back from; they are gathered for the whole call in a context variable
and the outermost wrapper puts them in ``response.meta["breaker"]``.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from typing import Any

import msgspec

from autonomic.models.base import Model, ModelRequest, ModelResponse
from autonomic.resilience.breaker import collecting, is_collecting

__all__ = ["ModelWrapper", "sum_costs", "with_meta"]


def with_meta(response: ModelResponse, **meta: Any) -> ModelResponse:
    """The response with entries added to its ``meta``."""
    return msgspec.structs.replace(response, meta={**response.meta, **meta})


def sum_costs(costs: Sequence[float | None]) -> float | None:
    """The total of several calls' costs; unknown if any one is unknown."""
    return None if any(c is None for c in costs) else sum(c for c in costs if c is not None)


class ModelWrapper(ABC):
    """A Model that adds behaviour around ``inner``; subclasses implement ``_complete``."""

    def __init__(self, inner: Model) -> None:
        self.inner = inner

    @property
    def name(self) -> str:
        return self.inner.name

    @property
    def endpoint(self) -> str:
        return str(getattr(self.inner, "endpoint", self.inner.name))

    async def complete(self, request: ModelRequest) -> ModelResponse:
        if is_collecting():
            return await self._complete(request)
        with collecting() as collected:
            response = await self._complete(request)
        return with_meta(response, breaker=collected) if collected else response

    @abstractmethod
    async def _complete(self, request: ModelRequest) -> ModelResponse: ...

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.inner!r})"

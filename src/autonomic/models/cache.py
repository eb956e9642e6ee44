"""A response cache: exact by request digest, and optionally semantic by embedding similarity.

An exact hit needs the same model and the same request (messages, tools, schema,
purpose). A semantic hit, off unless an embedder is given, needs all of that to match
except the wording of the last message, whose embedding must be at least ``threshold``
similar (cosine) to a cached one: "capital of France?" and "what's France's capital"
share an answer, the same question after a different conversation does not. A hit costs
nothing: ``usage`` is zero, ``cost`` 0.0, and ``meta["cached"]`` is True.
"""

from __future__ import annotations

import asyncio
import hashlib
import inspect
import math
import threading
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, NamedTuple

import msgspec

from autonomic.models.base import Model, ModelRequest, ModelResponse, Usage
from autonomic.models.wrapper import ModelWrapper

__all__ = ["CacheHit", "CacheKey", "CachedModel", "Embedder", "ResponseCache", "request_digest"]

Embedder = Callable[[str], "Sequence[float] | Awaitable[Sequence[float]]"]


def request_digest(model: str, request: ModelRequest) -> str:
    """A stable digest of what a model was asked (dict keys sorted, so order does not matter)."""
    encoded = msgspec.json.encode([model, request], order="sorted")
    return hashlib.sha256(encoded).hexdigest()


def _scope_digest(model: str, request: ModelRequest) -> str:
    """The digest of everything but the last message's wording: what a semantic hit must share."""
    last = request.messages[-1] if request.messages else None
    scope: list[object] = [model, request.messages[:-1], last.role if last else ""]
    scope += [request.tools, request.purpose, request.response_schema]
    return hashlib.sha256(msgspec.json.encode(scope, order="sorted")).hexdigest()


def _unit(vector: Sequence[float]) -> tuple[float, ...]:
    norm = math.sqrt(sum(x * x for x in vector)) or 1.0
    return tuple(x / norm for x in vector)


class CacheHit(NamedTuple):
    response: ModelResponse
    kind: str
    similarity: float


class CacheKey(NamedTuple):
    """Where a request is filed: its digest, and (semantic caches only) its scope digest."""

    digest: str
    scope: str | None


class _Entry(NamedTuple):
    response: ModelResponse
    stored_at: float
    scope: str | None
    embedding: tuple[float, ...] | None


class ResponseCache:
    """An in-memory LRU of responses, safe to share between models, runs and threads."""

    def __init__(
        self,
        *,
        max_entries: int = 1024,
        ttl: float | None = None,
        embedder: Embedder | None = None,
        threshold: float = 0.95,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if max_entries < 1 or not 0 < threshold <= 1:
            raise ValueError("max_entries must be >= 1 and threshold in (0, 1]")
        self._entries: OrderedDict[str, _Entry] = OrderedDict()
        self._lock = threading.Lock()
        self._max, self._ttl, self._clock = max_entries, ttl, clock
        self._embedder, self._threshold = embedder, threshold

    def __len__(self) -> int:
        return len(self._entries)

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()

    @property
    def semantic(self) -> bool:
        return self._embedder is not None

    async def embed(self, request: ModelRequest) -> tuple[float, ...] | None:
        """The unit embedding of the last message (None without an embedder)."""
        if self._embedder is None or not request.messages:
            return None
        text = request.messages[-1].content
        if inspect.iscoroutinefunction(self._embedder):
            vector = await self._embedder(text)
        else:
            vector = await asyncio.to_thread(self._embedder, text)
        if inspect.isawaitable(vector):
            vector = await vector
        return _unit(vector)

    def _fresh(self, entry: _Entry) -> bool:
        return self._ttl is None or self._clock() - entry.stored_at <= self._ttl

    def key(self, model: str, request: ModelRequest) -> CacheKey:
        scope = _scope_digest(model, request) if self.semantic else None
        return CacheKey(request_digest(model, request), scope)

    def get(self, key: CacheKey, embedding: tuple[float, ...] | None = None) -> CacheHit | None:
        """An exact hit, else (given the request's ``embedding``) the most similar one."""
        with self._lock:
            entry = self._entries.get(key.digest)
            if entry is not None and self._fresh(entry):
                self._entries.move_to_end(key.digest)
                return CacheHit(entry.response, "exact", 1.0)
        if embedding is None or key.scope is None:
            return None
        return self._nearest(key.scope, embedding)

    def _nearest(self, scope: str, embedding: tuple[float, ...]) -> CacheHit | None:
        best: tuple[float, str] | None = None
        with self._lock:
            for key, entry in self._entries.items():
                if entry.scope != scope or entry.embedding is None or not self._fresh(entry):
                    continue
                similarity = sum(a * b for a, b in zip(embedding, entry.embedding, strict=True))
                if similarity >= self._threshold and (best is None or similarity > best[0]):
                    best = (similarity, key)
            if best is None:
                return None
            self._entries.move_to_end(best[1])
            return CacheHit(self._entries[best[1]].response, "semantic", best[0])

    def put(
        self, key: CacheKey, response: ModelResponse, embedding: tuple[float, ...] | None = None
    ) -> None:
        entry = _Entry(response, self._clock(), key.scope, embedding)
        with self._lock:
            self._entries[key.digest] = entry
            self._entries.move_to_end(key.digest)
            while len(self._entries) > self._max:
                self._entries.popitem(last=False)


def _cacheable(response: ModelResponse) -> bool:
    """Unusable answers are worth asking again, so they are not kept."""
    if any(c.error for c in response.tool_calls):
        return False
    return bool(response.text or response.tool_calls)


class CachedModel(ModelWrapper):
    """Answers from ``cache`` when it can, otherwise asks ``inner`` and remembers the answer."""

    def __init__(self, inner: Model, cache: ResponseCache | None = None) -> None:
        super().__init__(inner)
        self.cache = cache if cache is not None else ResponseCache()

    async def _complete(self, request: ModelRequest) -> ModelResponse:
        key = self.cache.key(self.inner.name, request)
        hit = self.cache.get(key)
        embedding = None
        if hit is None and self.cache.semantic:
            embedding = await self.cache.embed(request)
            hit = self.cache.get(key, embedding)
        if hit is not None:
            meta: dict[str, Any] = {**hit.response.meta, "cached": True, "cache": hit.kind}
            meta.pop("price_unknown", None)
            if hit.kind == "semantic":
                meta["similarity"] = round(hit.similarity, 4)
            return msgspec.structs.replace(hit.response, usage=Usage(), cost=0.0, meta=meta)
        response = await self.inner.complete(request)
        if _cacheable(response):
            self.cache.put(key, response, embedding)
        return response

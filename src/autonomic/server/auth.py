"""Who is asking, and may they: bearer API keys, scopes per endpoint, a rate limit per key.

``require_scope("runs:read")`` is the dependency every endpoint (this package's and
routers mounted by others) declares; it answers 401 for a missing or refused key, 403
for a key without the scope, and 429 with ``Retry-After`` for a key over its rate. The
key's tenant bounds what it sees: runs of other tenants do not exist for it.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Awaitable, Callable
from typing import Annotated

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from autonomic.server.keys import ApiKey, KeyRefused, KeyStore
from autonomic.server.problems import Problem

__all__ = ["Principal", "RateLimiter", "authenticate", "require_scope"]

Principal = ApiKey
"""The key a request was made with (its tenant, scopes and identity)."""

_bearer = HTTPBearer(auto_error=False, description="an API key: 'autonomic keys create'")


class RateLimiter:
    """A token bucket per key: ``rate_per_s`` tokens a second, up to ``burst``."""

    def __init__(self) -> None:
        self._buckets: dict[str, tuple[float, float]] = {}

    def retry_after(self, key: ApiKey, now: float | None = None) -> float:
        """0 when the request may go ahead (and takes its token), else seconds to wait."""
        now = time.monotonic() if now is None else now
        tokens, last = self._buckets.get(key.id, (float(key.burst), now))
        tokens = min(float(key.burst), tokens + (now - last) * key.rate_per_s)
        if tokens >= 1.0:
            self._buckets[key.id] = (tokens - 1.0, now)
            return 0.0
        self._buckets[key.id] = (tokens, now)
        return (1.0 - tokens) / key.rate_per_s


async def authenticate(
    request: Request,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> ApiKey:
    """The request's key, checked and counted against its rate limit."""
    challenge = {"WWW-Authenticate": "Bearer"}
    if credentials is None or credentials.scheme.lower() != "bearer":
        raise Problem(
            401,
            "Unauthorized",
            "send an API key as 'Authorization: Bearer ak_...' "
            "(create one with 'autonomic keys create')",
            headers=challenge,
        )
    keys: KeyStore = request.app.state.keys
    token = credentials.credentials
    try:
        if keys.seen(token):
            key = keys.verify(token)
        else:  # a first sight costs a scrypt hash: off the loop
            key = await asyncio.to_thread(keys.verify, token)
    except KeyRefused as e:
        raise Problem(401, "Unauthorized", str(e), headers=challenge) from None
    wait = request.app.state.limiter.retry_after(key)
    if wait > 0:
        raise Problem(
            429,
            "Too Many Requests",
            f"API key {key.id} is limited to {key.rate_per_s:g} requests/s "
            f"(burst {key.burst}); retry after {wait:.2f}s",
            headers={"Retry-After": str(max(1, math.ceil(wait)))},
        )
    request.state.principal = key
    return key


def require_scope(scope: str) -> Callable[..., Awaitable[ApiKey]]:
    """A dependency: the request's key, which must have ``scope`` (403 otherwise)."""

    async def dependency(key: Annotated[ApiKey, Depends(authenticate)]) -> ApiKey:
        if scope not in key.scopes:
            raise Problem(
                403,
                "Forbidden",
                f"API key {key.id} lacks the scope {scope!r} (it has: {', '.join(key.scopes)})",
            )
        return key

    dependency.__name__ = f"require_{scope.replace(':', '_')}"
    return dependency

"""A bus on Redis Streams (``redis://host:6379/0?prefix=app``; ``pip install "autonomic[redis]"``).

Each topic is a stream (``prefix:topic``), trimmed to ``keep`` entries and expiring
``ttl_s`` after its last message. A plain subscriber reads the stream from where it
stood when it subscribed (XREAD); a group is a consumer group (XREADGROUP), whose
members take one message at a time, acknowledge it (XACK) when they ask for the next,
and take over (XAUTOCLAIM) what a member left unacknowledged for ``claim_idle_s``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import time
from types import TracebackType
from typing import Any, Self

from autonomic.bus._outbox import Outbox
from autonomic.bus._url import redacted, split_bus_url
from autonomic.bus.base import BrokerUnreachable
from autonomic.errors import ConfigError

try:
    import redis.asyncio as aioredis
    from redis.exceptions import RedisError, ResponseError
except ImportError as e:  # pragma: no cover - depends on the extras installed
    raise ConfigError('the Redis bus needs redis-py: pip install "autonomic[redis]"') from e

__all__ = ["RedisBus"]

log = logging.getLogger("autonomic.bus")

_RETRY_S = 0.5
_CALL_S = 5.0
"""How long a call may wait for the server (a server that hangs is one that is away)."""
_GRACE_S = 0.5
"""How long a blocking read may wait for the server's reply past its block."""
_FIELD = b"m"


class RedisBus:
    def __init__(self, url: str) -> None:
        self.url = redacted(url)
        self._client_url, self.options = split_bus_url(url)
        self._client: aioredis.Redis | None = None
        self._opened = 0
        self._outbox = Outbox(self._send, name=f"redis bus {self.url}")

    def _key(self, topic: str) -> str:
        return f"{self.options.prefix}:{topic}"

    @property
    def client(self) -> aioredis.Redis:
        if self._client is None:
            raise ConfigError("the Redis bus is not open: open the runtime (or bus) first")
        return self._client

    async def open(self) -> None:
        self._opened += 1
        if self._opened > 1:
            return
        client = aioredis.Redis.from_url(
            self._client_url, socket_connect_timeout=2.0, health_check_interval=10
        )
        try:
            await client.ping()
        except (RedisError, OSError) as e:
            self._opened -= 1
            await client.aclose()
            raise BrokerUnreachable(
                f"cannot reach the Redis bus at {self.url}: {e}; start Redis or fix the bus URL"
            ) from None
        self._client = client
        self._outbox.start()

    async def close(self) -> None:
        if self._opened == 0:
            return
        self._opened -= 1
        if self._opened > 0:
            return
        await self._outbox.stop(grace_s=2.0)
        client, self._client = self._client, None
        if client is not None:
            await client.aclose()

    def publish(self, topic: str, message: str = "") -> None:
        self._outbox.put(topic, message)

    async def _send(self, batch: list[tuple[str, str, int]]) -> None:
        keep, ttl = self.options.keep, max(1, int(self.options.ttl_s))
        async with self.client.pipeline(transaction=False) as pipe:
            for topic, message, _ in batch:
                pipe.xadd(self._key(topic), {_FIELD: message}, maxlen=keep, approximate=True)
            for key in {self._key(topic) for topic, _, _ in batch}:
                pipe.expire(key, ttl)
            async with asyncio.timeout(_CALL_S):
                await pipe.execute()

    def subscribe(self, topic: str, *, group: str | None = None) -> _Subscription:
        return _Subscription(self, topic, group)


class _Subscription:
    def __init__(self, bus: RedisBus, topic: str, group: str | None) -> None:
        self._bus, self._key = bus, bus._key(topic)
        self._grouped, self._group = group is not None, group or ""
        self._consumer = f"c-{secrets.token_hex(6)}"
        self._last_id: bytes = b"0-0"
        self._waiting: list[tuple[bytes, bytes]] = []
        self._unacked: bytes | None = None
        self._next_claim = 0.0
        self._claim_cursor: bytes = b"0-0"
        self._started = False

    async def __aenter__(self) -> Self:
        try:
            async with asyncio.timeout(_CALL_S):
                await self._start()
        except (RedisError, OSError) as e:  # the broker is away: next() tries again
            log.debug("redis bus: %s; subscribing when it is back", e)
        return self

    async def _start(self) -> None:
        if not self._grouped:
            newest: Any = await self._bus.client.xrevrange(self._key, count=1)
            self._last_id = newest[0][0] if newest else b"0-0"
        else:
            await self._join()
        self._started = True

    async def _join(self) -> None:
        try:
            await self._bus.client.xgroup_create(self._key, self._group, id="$", mkstream=True)
        except ResponseError as e:
            if "BUSYGROUP" not in str(e):
                raise

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if not self._grouped:
            return
        with contextlib.suppress(RedisError, OSError):
            await self._ack()
            await self._bus.client.xgroup_delconsumer(self._key, self._group, self._consumer)

    async def next(self, wait_s: float | None) -> str | None:
        deadline = None if wait_s is None else time.monotonic() + wait_s
        while not self._waiting:
            left = None if deadline is None else deadline - time.monotonic()
            if left is not None and left <= 0:
                return None
            try:  # (bounded: a server that hangs must not hold the caller past its wait)
                async with asyncio.timeout(None if left is None else left + _GRACE_S):
                    await (self._read(left) if self._started else self._start())
            except (RedisError, OSError) as e:  # (TimeoutError is an OSError)
                log.debug("redis bus: %s; retrying", e)
                if "NOGROUP" in str(e):  # the server lost the group (restarted empty)
                    with contextlib.suppress(RedisError, OSError):
                        await self._join()
                pause = _RETRY_S if deadline is None else min(_RETRY_S, deadline - time.monotonic())
                await asyncio.sleep(max(0.0, pause))
        entry_id, message = self._waiting.pop(0)
        if self._grouped:
            self._unacked = entry_id
        return message.decode()

    async def _read(self, left: float | None) -> None:
        block = 0 if left is None else max(1, int(left * 1000))
        client = self._bus.client
        if not self._grouped:
            replies: Any = await client.xread({self._key: self._last_id}, count=1000, block=block)
            for _, entries in replies or ():
                for entry_id, fields in entries:
                    self._last_id = entry_id
                    self._waiting.append((entry_id, fields.get(_FIELD, b"")))
            return
        await self._ack()
        if time.monotonic() >= self._next_claim and await self._take_over():
            return
        block = min(block or 2**31, max(1, int(self._bus.options.claim_idle_s * 250)))
        replies = await client.xreadgroup(
            self._group, self._consumer, {self._key: ">"}, count=1, block=block
        )
        for _, entries in replies or ():
            for entry_id, fields in entries:
                self._waiting.append((entry_id, fields.get(_FIELD, b"")))

    async def _take_over(self) -> bool:
        """Take one message another member has held too long (it died handling it)."""
        idle_ms = int(self._bus.options.claim_idle_s * 1000)
        self._next_claim = time.monotonic() + self._bus.options.claim_idle_s / 4
        reply: Any = await self._bus.client.xautoclaim(
            self._key, self._group, self._consumer, idle_ms, self._claim_cursor, count=1
        )
        self._claim_cursor = reply[0]
        for entry_id, fields in reply[1]:
            if fields is not None:
                self._waiting.append((entry_id, fields.get(_FIELD, b"")))
        return bool(self._waiting)

    async def _ack(self) -> None:
        if self._unacked is not None:
            await self._bus.client.xack(self._key, self._group, self._unacked)
            self._unacked = None

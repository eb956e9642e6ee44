"""Every backend of the Bus protocol, opened fresh and isolated per test: each test gets
its own key prefix on the real Redis (6379), its own stream on the real NATS (4222),
removed afterwards, and its own channel on the real PostgreSQL (5432)."""

from __future__ import annotations

import contextlib
import os
import secrets
from collections.abc import AsyncIterator

from autonomic.bus import Bus, open_bus

BUS_KINDS = ["local", "redis", "nats", "postgres"]
REDIS_URL = "redis://127.0.0.1:6379/0"
NATS_URL = "nats://127.0.0.1:4222"
POSTGRES = os.environ.get(
    "AUTONOMIC_TEST_POSTGRES", "postgresql://postgres@127.0.0.1:5432/postgres"
)


def bus_url(kind: str, prefix: str, query: str = "") -> str:
    if kind == "local":
        return "local://"
    if kind == "postgres":  # the schema names the channel; nothing is left in the database
        return f"{POSTGRES}?schema={prefix}"
    base = REDIS_URL if kind == "redis" else NATS_URL
    return f"{base}?prefix={prefix}{query}"


@contextlib.asynccontextmanager
async def bus_for(kind: str, query: str = "") -> AsyncIterator[Bus]:
    prefix = f"t{secrets.token_hex(6)}"
    bus = open_bus(bus_url(kind, prefix, query))
    await bus.open()
    try:
        yield bus
    finally:
        await bus.close()
        await forget(kind, prefix)


async def forget(kind: str, prefix: str) -> None:
    """Remove what a test left on a broker."""
    if kind == "redis":
        import redis.asyncio as aioredis

        client = aioredis.Redis.from_url(REDIS_URL)
        async with client:
            keys = [key async for key in client.scan_iter(match=f"{prefix}:*")]
            if keys:
                await client.delete(*keys)
    elif kind == "nats":
        import nats
        import nats.js.errors

        nc = await nats.connect(NATS_URL)
        with contextlib.suppress(nats.js.errors.NotFoundError):
            await nc.jetstream().delete_stream(prefix)
        await nc.close()

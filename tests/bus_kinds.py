"""Every backend of the Bus protocol, opened fresh and isolated per test."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator

from autonomic.bus import Bus, open_bus

BUS_KINDS = ["local"]


def bus_url(kind: str) -> str:
    return "local://"


@contextlib.asynccontextmanager
async def bus_for(kind: str) -> AsyncIterator[Bus]:
    bus = open_bus(bus_url(kind))
    await bus.open()
    try:
        yield bus
    finally:
        await bus.close()

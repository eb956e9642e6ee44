"""The bus: hints that something changed (a run's new events, a run ready to drive).

The store is the truth; the bus only wakes whoever waits, so that following a run or
claiming a woken one does not poll hard. A lost message costs latency, never data.
Pick one by URL with ``open_bus``; network backends are imported only when used.
"""

from __future__ import annotations

from autonomic.bus.base import Bus, Subscription
from autonomic.bus.local import LocalBus
from autonomic.errors import ConfigError

__all__ = ["DEFAULT_BUS_URL", "Bus", "LocalBus", "Subscription", "open_bus"]

DEFAULT_BUS_URL = "local://"

_SCHEMES = ("local", "redis", "rediss", "nats", "tls", "postgresql")


def open_bus(url: str) -> Bus:
    """A bus for ``url`` (not yet opened): ``local://`` (this process only),
    ``redis://host:6379/0`` (Redis Streams), ``nats://host:4222`` (NATS JetStream) or
    ``postgresql://host/db`` (LISTEN/NOTIFY; a PostgreSQL store's own bus by default);
    ``?prefix=app`` (``?schema=app`` for PostgreSQL) keeps one deployment's topics apart
    from another's on one broker."""
    scheme = url.split("://", 1)[0] if "://" in url else ""
    if scheme == "local":
        return LocalBus()
    if scheme in ("redis", "rediss"):
        from autonomic.bus.redis import RedisBus

        return RedisBus(url)
    if scheme in ("nats", "tls"):
        from autonomic.bus.nats import NatsBus

        return NatsBus(url)
    if scheme in ("postgresql", "postgres"):
        from autonomic.bus.postgres import PostgresBus

        return PostgresBus.from_url(url)
    raise ConfigError(
        f"unknown bus URL {url!r}: use one of " + ", ".join(f"{s}://..." for s in _SCHEMES)
    )

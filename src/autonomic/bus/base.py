"""The Bus protocol: publish a hint on a topic; subscribers wait for the next one.

A network bus (Redis, NATS) lives as long as it is open: ``open()`` connects and
``close()`` lets go, and they nest, so one bus can be shared by several runtimes. A
subscriber either hears every message (``group=None``: every process following a run,
every worker's claim loop) or competes with the other members of its ``group`` (each
message goes to one of them). A message is acknowledged when its subscriber asks for
the next one or leaves: a member that dies while handling one leaves it to be delivered
again to another, so delivery is at least once and consumers must be idempotent.
"""

from __future__ import annotations

from types import TracebackType
from typing import Protocol, Self

from autonomic.errors import ConfigError

__all__ = ["READY_TOPIC", "BrokerUnreachable", "Bus", "Subscription", "run_topic"]

READY_TOPIC = "ready"
"""A run became ready to drive (its wait ended, or it was submitted)."""


class BrokerUnreachable(ConfigError):
    """The bus's broker did not answer when opened: down, restarting, or a wrong address
    (a worker waits for it, as for its store, before it gives up)."""


def run_topic(run_id: str) -> str:
    """A run committed new events or changed status."""
    return f"run:{run_id}"


class Subscription(Protocol):
    async def next(self, wait_s: float | None) -> str | None:
        """The next message, or None when ``wait_s`` seconds pass first (or the broker
        cannot be reached within them). Acknowledges the previous message."""
        ...

    async def __aenter__(self) -> Self: ...

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None: ...


class Bus(Protocol):
    async def open(self) -> None:
        """Connect (BrokerUnreachable, naming the URL, when the broker cannot be reached).
        Calls nest: each ``open`` is matched by one ``close``."""
        ...

    async def close(self) -> None:
        """Let go of the connection once the last opener closes; messages published and
        not yet sent are given a moment to go."""
        ...

    def publish(self, topic: str, message: str = "") -> None:
        """Send a hint; never blocks and never fails the caller."""
        ...

    def subscribe(self, topic: str, *, group: str | None = None) -> Subscription:
        """Messages on ``topic`` published after the subscription is entered; with
        ``group``, shared among the group's members (and kept for the group while none
        listens, where the broker can)."""
        ...

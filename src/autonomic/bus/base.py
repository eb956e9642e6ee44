"""The Bus protocol: publish a hint on a topic; subscribers wait for the next one."""

from __future__ import annotations

from types import TracebackType
from typing import Protocol, Self

__all__ = ["READY_TOPIC", "Bus", "Subscription", "run_topic"]

READY_TOPIC = "ready"
"""A run became ready to drive (its wait ended, or it was submitted)."""


def run_topic(run_id: str) -> str:
    """A run committed new events or changed status."""
    return f"run:{run_id}"


class Subscription(Protocol):
    async def next(self, wait_s: float | None) -> str | None:
        """The next message, or None when ``wait_s`` seconds pass first."""
        ...

    async def __aenter__(self) -> Self: ...

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None: ...


class Bus(Protocol):
    def publish(self, topic: str, message: str = "") -> None:
        """Send a hint; never blocks and never fails the caller."""
        ...

    def subscribe(self, topic: str) -> Subscription: ...

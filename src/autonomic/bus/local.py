"""An in-process bus: subscribers of one event loop, woken by publishers on that loop."""

from __future__ import annotations

import asyncio
from collections import deque
from types import TracebackType
from typing import Self

__all__ = ["LocalBus"]


class _Subscription:
    __slots__ = ("_bus", "_messages", "_signal", "_topic")

    def __init__(self, bus: LocalBus, topic: str) -> None:
        self._bus, self._topic = bus, topic
        self._messages: deque[str] = deque(maxlen=1000)
        self._signal = asyncio.Event()

    def _push(self, message: str) -> None:
        self._messages.append(message)
        self._signal.set()

    async def next(self, wait_s: float | None) -> str | None:
        if not self._messages:
            self._signal.clear()
            try:
                async with asyncio.timeout(wait_s):  # not wait_for: in 3.11 it can eat a cancel
                    await self._signal.wait()
            except TimeoutError:
                return None
        return self._messages.popleft()

    async def __aenter__(self) -> Self:
        self._bus._subscribers.setdefault(self._topic, set()).add(self)
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        subscribers = self._bus._subscribers.get(self._topic)
        if subscribers is not None:
            subscribers.discard(self)
            if not subscribers:
                del self._bus._subscribers[self._topic]


class LocalBus:
    """Delivers to subscribers in this process; the default bus."""

    def __init__(self) -> None:
        self._subscribers: dict[str, set[_Subscription]] = {}

    def publish(self, topic: str, message: str = "") -> None:
        for subscription in self._subscribers.get(topic, ()):
            subscription._push(message)

    def subscribe(self, topic: str) -> _Subscription:
        return _Subscription(self, topic)

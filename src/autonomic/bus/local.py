"""An in-process bus: subscribers of one event loop, woken by publishers on that loop."""

from __future__ import annotations

import asyncio
import itertools
from collections import deque
from types import TracebackType
from typing import Self

__all__ = ["LocalBus"]


class _Subscription:
    __slots__ = ("_bus", "_group", "_messages", "_signal", "_topic")

    def __init__(self, bus: LocalBus, topic: str, group: str | None) -> None:
        self._bus, self._topic, self._group = bus, topic, group
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
        if self._group is None:
            self._bus._subscribers.setdefault(self._topic, set()).add(self)
        else:
            groups = self._bus._groups.setdefault(self._topic, {})
            groups.setdefault(self._group, []).append(self)
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._group is None:
            subscribers = self._bus._subscribers.get(self._topic)
            if subscribers is not None:
                subscribers.discard(self)
                if not subscribers:
                    del self._bus._subscribers[self._topic]
            return
        groups = self._bus._groups.get(self._topic, {})
        members = groups.get(self._group, [])
        if self in members:
            members.remove(self)
        if not members:
            groups.pop(self._group, None)
            if not groups:
                self._bus._groups.pop(self._topic, None)
            return
        for message in self._messages:  # what this member never read goes to the others
            self._bus._to_group(members, message)
        self._messages.clear()


class LocalBus:
    """Delivers to subscribers in this process; the default bus. A group's messages go
    round-robin to its members; with no member listening they are dropped (nothing here
    outlives the process anyway)."""

    def __init__(self) -> None:
        self._subscribers: dict[str, set[_Subscription]] = {}
        self._groups: dict[str, dict[str, list[_Subscription]]] = {}  # topic -> group
        self._turn = itertools.count()

    async def open(self) -> None:
        """Nothing to connect to."""

    async def close(self) -> None:
        """Nothing to let go of."""

    def publish(self, topic: str, message: str = "") -> None:
        for subscription in self._subscribers.get(topic, ()):
            subscription._push(message)
        for members in self._groups.get(topic, {}).values():
            self._to_group(members, message)

    def _to_group(self, members: list[_Subscription], message: str) -> None:
        members[next(self._turn) % len(members)]._push(message)

    def subscribe(self, topic: str, *, group: str | None = None) -> _Subscription:
        return _Subscription(self, topic, group)

"""One HTTP client per event loop, for models shared across loops and threads.

A connection pool belongs to the loop that opened it. A model is built once (often at
import time) and may serve several loops: ``asyncio.run`` called again by a sync
wrapper, or worker threads each running their own loop. Each loop gets its own client.
"""

from __future__ import annotations

import asyncio
import threading
import weakref
from collections.abc import Callable
from typing import Generic, TypeVar

__all__ = ["PerLoop"]

T = TypeVar("T")


class PerLoop(Generic[T]):
    """Lazily makes one ``T`` per running event loop; forgotten when the loop is."""

    def __init__(self, factory: Callable[[], T]) -> None:
        self._factory = factory
        self._items: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, T] = (
            weakref.WeakKeyDictionary()
        )
        self._lock = threading.Lock()

    def get(self) -> T:
        loop = asyncio.get_running_loop()
        item = self._items.get(loop)
        if item is None:
            item = self._factory()
            with self._lock:
                self._items[loop] = item
        return item

    def pop(self) -> T | None:
        """Forget the running loop's item and return it (for the caller to close)."""
        with self._lock:
            return self._items.pop(asyncio.get_running_loop(), None)

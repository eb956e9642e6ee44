"""Bases for things opened and closed around use: ``async with thing:`` calls open/close."""

from __future__ import annotations

from types import TracebackType
from typing import Self

__all__ = ["AsyncResource", "SharedResource"]


class AsyncResource:
    async def open(self) -> None:
        return None

    async def close(self) -> None:
        return None

    async def __aenter__(self) -> Self:
        await self.open()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()


class SharedResource(AsyncResource):
    """A resource several users open and close (a store shared by runtimes, tests and
    scripts): it is really opened by the first ``open`` and closed by the last ``close``.
    Subclasses implement ``_open`` and ``_close``."""

    _users = 0

    async def open(self) -> None:
        if self._users == 0:
            await self._open()
        self._users += 1

    async def close(self) -> None:
        if self._users == 0:
            return
        self._users -= 1
        if self._users == 0:
            await self._close()

    async def _open(self) -> None:
        return None

    async def _close(self) -> None:
        return None

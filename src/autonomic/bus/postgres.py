"""A bus over PostgreSQL LISTEN/NOTIFY: hints reach every process using the same database.

Published hints are delivered to this process's subscribers at once, and sent to the
others through ``pg_notify`` on a connection of the bus's own (batched: what is published
in one turn of the event loop goes in one statement, packed many to a notification, since
the server and every listener pay per notification). A listening connection hands the
other processes' hints to local subscribers. When that connection breaks (the server
restarted) it reconnects, and wakes every local subscriber once, since hints sent
meanwhile are lost: a lost hint costs latency, never data, as the store is the truth.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
from typing import Any

import msgspec

from autonomic._resource import SharedResource
from autonomic.bus.local import LocalBus, _Subscription

__all__ = ["PostgresBus"]

log = logging.getLogger("autonomic.bus")

_SEP = "\x1f"
_MAX_PAYLOAD = 7000
"""Bytes of a notification's payload at most (the server refuses 8000 and more): the
sender, ``_SEP``, and a JSON list of ``[topic, message]`` pairs."""
_MAX_QUEUED = 10_000
_RECONNECT_S = (0.05, 0.1, 0.2, 0.5, 1.0)


class PostgresBus(SharedResource):
    """Hints on the channel ``autonomic:<schema>`` of the database at ``conninfo``."""

    def __init__(self, conninfo: str, schema: str = "public") -> None:
        self.conninfo = conninfo
        self.channel = f"autonomic:{schema}"
        self.sender = secrets.token_hex(6)
        self._local = LocalBus()
        self._outbox: list[bytes] = []  # [topic, message] as JSON
        self._wake_sender = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        self._listening = asyncio.Event()
        self._sent = asyncio.Event()

    @classmethod
    def from_url(cls, url: str) -> PostgresBus:
        """The bus of ``postgresql://host/db?schema=name`` (the schema only names the
        channel: the bus creates nothing in the database)."""
        from autonomic.store.postgres import PostgresStore

        store = PostgresStore(url)
        return cls(store.conninfo, store.schema)

    async def _open(self) -> None:
        from autonomic.store.postgres import import_psycopg

        import_psycopg()
        self._listening = asyncio.Event()
        self._wake_sender = asyncio.Event()
        self._sent = asyncio.Event()
        self._tasks = [
            asyncio.create_task(self._listen(), name="autonomic-bus-listen"),
            asyncio.create_task(self._send(), name="autonomic-bus-send"),
        ]
        with contextlib.suppress(TimeoutError):  # down now: it keeps trying in the background
            async with asyncio.timeout(10):
                await self._listening.wait()

    async def _close(self) -> None:
        if self._outbox:  # give what was published a moment to leave
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(1):
                    await self._sent.wait()
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks = []

    def publish(self, topic: str, message: str = "") -> None:
        self._local.publish(topic, message)
        if not self._tasks:
            return
        hint = msgspec.json.encode((topic, message))
        if len(hint) > _MAX_PAYLOAD - len(self.sender) - 3:  # too long: sent without it
            hint = msgspec.json.encode((topic, ""))
        if len(self._outbox) >= _MAX_QUEUED:  # the server is away: old hints go first
            del self._outbox[0]
        self._outbox.append(hint)
        self._sent.clear()
        self._wake_sender.set()

    def subscribe(self, topic: str, *, group: str | None = None) -> _Subscription:
        """Every process hears every hint; the members of a ``group`` in this process
        share what this process hears (hints are at least once either way)."""
        return self._local.subscribe(topic, group=group)

    async def _connect(self) -> Any:
        import psycopg

        return await psycopg.AsyncConnection.connect(
            self.conninfo, autocommit=True, connect_timeout=5
        )

    async def _send(self) -> None:
        conn: Any = None
        tries = 0
        try:
            while True:
                await self._wake_sender.wait()
                self._wake_sender.clear()
                taken = len(self._outbox)
                payloads = _pack(self.sender, list(dict.fromkeys(self._outbox[:taken])))
                try:
                    if conn is None:
                        conn = await self._connect()
                    await conn.execute(
                        "SELECT pg_notify(%s, payload) FROM unnest(%b::text[]) AS payload",
                        (self.channel, payloads),
                    )
                except Exception as e:
                    log.warning(
                        "bus: could not send hints (%s); retrying", " ".join(str(e).split())
                    )
                    conn, old = None, conn
                    await _close(old)
                    await asyncio.sleep(_RECONNECT_S[min(tries, len(_RECONNECT_S) - 1)])
                    tries += 1
                    self._wake_sender.set()
                    continue
                del self._outbox[:taken]
                if not self._outbox:
                    self._sent.set()
                tries = 0
        finally:
            await _close(conn)

    async def _listen(self) -> None:
        tries = 0
        while True:
            conn: Any = None
            try:
                conn = await self._connect()
                await conn.execute(f'LISTEN "{self.channel}"')
                if tries:  # hints sent while we were away are lost: wake everyone once
                    for topic in [*self._local._subscribers, *self._local._groups]:
                        self._local.publish(topic, "")
                tries = 0
                self._listening.set()
                async for note in conn.notifies():
                    sender, _, hints = note.payload.partition(_SEP)
                    if sender != self.sender:
                        for topic, message in _unpack(hints):
                            self._local.publish(topic, message)
            except Exception as e:
                log.warning(
                    "bus: lost the listening connection (%s); reconnecting",
                    " ".join(str(e).split()),
                )
                await _close(conn)
                await asyncio.sleep(_RECONNECT_S[min(tries, len(_RECONNECT_S) - 1)])
                tries += 1
            finally:
                await _close(conn)


def _pack(sender: str, hints: list[bytes]) -> list[str]:
    """``hints`` in as few payloads as fit, in order."""
    payloads: list[str] = []
    room = _MAX_PAYLOAD - len(sender) - 3
    start, size = 0, 0
    for end, hint in enumerate(hints):
        if size + len(hint) > room and end > start:
            payloads.append(f"{sender}{_SEP}[{b','.join(hints[start:end]).decode()}]")
            start, size = end, 0
        size += len(hint) + 1
    if start < len(hints):
        payloads.append(f"{sender}{_SEP}[{b','.join(hints[start:]).decode()}]")
    return payloads


def _unpack(hints: str) -> list[tuple[str, str]]:
    """The ``[topic, message]`` pairs of a payload; none from one this bus did not send."""
    try:
        return msgspec.json.decode(hints, type=list[tuple[str, str]])
    except msgspec.DecodeError:
        return []


async def _close(conn: Any) -> None:
    if conn is not None:
        with contextlib.suppress(Exception):
            await conn.close()

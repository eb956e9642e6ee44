"""A bus on NATS JetStream (``nats://host:4222?prefix=app``; ``pip install "autonomic[nats]"``).

One stream (named ``prefix``) holds the subjects ``prefix.<topic>``, ``keep`` messages a
subject for ``ttl_s``. Publishing waits for the stream's acknowledgement, with a message
id per message so that a publish retried after an outage is stored once. A plain
subscriber is a core subscription (every message, in order, resubscribed after a
reconnect, and woken once then: what was published meanwhile never reaches it); a
group is a durable pull consumer whose members fetch one message at a time,
acknowledge it when they ask for the next, and receive again what a member left
unacknowledged for ``claim_idle_s`` (its AckWait). A server that restarted empty (no
persistence) has lost the stream and the consumers: the bus makes them again.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import hashlib
import logging
import os
import time
from types import TracebackType
from typing import Any, Self
from urllib.parse import urlsplit

from autonomic.bus._outbox import Outbox
from autonomic.bus._url import redacted, split_bus_url
from autonomic.bus.base import BrokerUnreachable
from autonomic.errors import ConfigError

try:
    import nats
    import nats.errors
    import nats.js.errors
    from nats.aio.client import Client
    from nats.aio.msg import Msg
    from nats.js.api import ConsumerConfig, DeliverPolicy, Header, StreamConfig
except ImportError as e:  # pragma: no cover - depends on the extras installed
    raise ConfigError('the NATS bus needs nats-py: pip install "autonomic[nats]"') from e

__all__ = ["NatsBus", "subject_token"]

log = logging.getLogger("autonomic.bus")

_CONNECT_S = 3.0
_RETRY_S = 0.5
_GRACE_S = 0.5
"""How long a wait for the server may go on past what the caller asked to wait."""
_ESCAPES = {c: f"%{ord(c):02X}" for c in "%.*> \t\r\n"}


class _Client(Client):
    """nats-py (2.16) starts a reconnect attempt over the transport of the attempt before
    it without closing it, so each attempt that a starting server accepted and dropped
    leaks a socket: this client closes it first."""

    async def _connect_to_server(self, s: Any) -> None:
        if self._transport:
            self._transport.close()  # type: ignore[no-untyped-call]
        await super()._connect_to_server(s)


def subject_token(topic: str) -> str:
    """A topic as one subject token: the characters NATS gives a meaning are escaped."""
    return "".join(_ESCAPES.get(c, c) for c in topic)


class NatsBus:
    def __init__(self, url: str) -> None:
        self.url = redacted(url)
        self._client_url, self.options = split_bus_url(url)
        self.stream = self.options.prefix
        self._nc: Client | None = None
        self._opened = 0
        self._outbox = Outbox(self._send, name=f"nats bus {self.url}")
        self._origin = os.urandom(6).hex()  # message ids: unique to this bus object
        self._last_error: BaseException | None = None
        self._subscriptions: set[_Subscription | _Member] = set()
        self._acks: asyncio.Timeout | None = None  # the wait for a batch's acknowledgements

    def subject(self, topic: str) -> str:
        return f"{self.stream}.{subject_token(topic)}"

    @property
    def client(self) -> Client:
        if self._nc is None:
            raise ConfigError("the NATS bus is not open: open the runtime (or bus) first")
        return self._nc

    async def _error(self, e: Exception) -> None:
        self._last_error = e
        log.debug("nats bus %s: %s", self.url, e)

    async def _reconnected(self) -> None:
        for subscription in list(self._subscriptions):
            subscription.reconnected()
        acks = self._acks
        if acks is not None:
            # those of what the lost connection carried never come: stop waiting for them
            # (the wait may have ended just now; raising here would end nats-py's task)
            with contextlib.suppress(RuntimeError):
                acks.reschedule(asyncio.get_running_loop().time())

    async def _reachable(self) -> OSError | None:
        """None when some server of the URL accepts a connection, else why not (a refused
        connection is said at once, not after the client's retries)."""
        error: OSError | None = None
        for server in self._client_url.split(","):
            parts = urlsplit(server.strip())
            try:
                async with asyncio.timeout(2.0):
                    _, writer = await asyncio.open_connection(
                        parts.hostname or "127.0.0.1", parts.port or 4222
                    )
            except (OSError, TimeoutError) as e:
                error = e if isinstance(e, OSError) else OSError(f"timed out: {e}")
                continue
            writer.close()
            with contextlib.suppress(OSError):
                await writer.wait_closed()
            return None
        return error

    async def open(self) -> None:
        self._opened += 1
        if self._opened > 1:
            return
        unreachable = await self._reachable()
        if unreachable is not None:
            self._opened -= 1
            raise BrokerUnreachable(
                f"cannot reach the NATS bus at {self.url}: {unreachable}; "
                "start nats-server with JetStream (-js) or fix the bus URL"
            )
        try:
            async with asyncio.timeout(_CONNECT_S):
                nc = _Client()
                await nc.connect(
                    self._client_url,
                    connect_timeout=2,
                    max_reconnect_attempts=-1,
                    reconnect_time_wait=0.5,  # type: ignore[arg-type]  # (seconds, any number)
                    error_cb=self._error,
                    reconnected_cb=self._reconnected,
                )
        except (TimeoutError, OSError, nats.errors.Error) as e:
            self._opened -= 1
            raise BrokerUnreachable(
                f"cannot reach the NATS bus at {self.url}: {self._last_error or e}; "
                "start nats-server with JetStream (-js) or fix the bus URL"
            ) from None
        try:
            await self._ensure_stream(nc)
        except (TimeoutError, nats.errors.Error) as e:
            self._opened -= 1
            await nc.close()
            raise ConfigError(
                f"the NATS server at {self.url} refused the stream {self.stream!r}: {e}; "
                "is JetStream enabled (nats-server -js)?"
            ) from None
        self._nc = nc
        self._outbox.start()

    async def _ensure_stream(self, nc: Client) -> None:
        js = nc.jetstream()
        try:
            await js.stream_info(self.stream)
        except nats.js.errors.NotFoundError:
            await js.add_stream(
                StreamConfig(
                    name=self.stream,
                    subjects=[f"{self.stream}.>"],
                    max_msgs_per_subject=self.options.keep,
                    max_age=self.options.ttl_s,
                )
            )

    async def close(self) -> None:
        if self._opened == 0:
            return
        self._opened -= 1
        if self._opened > 0:
            return
        await self._outbox.stop(grace_s=2.0)
        nc, self._nc = self._nc, None
        if nc is None:
            return
        with contextlib.suppress(nats.errors.Error, OSError, TimeoutError):
            await nc.drain()  # refused while the broker is away: it is reconnecting
        if not nc.is_closed:  # else it would go on reconnecting forever
            with contextlib.suppress(nats.errors.Error, OSError):
                await nc.close()

    def publish(self, topic: str, message: str = "") -> None:
        self._outbox.put(topic, message)

    async def _send(self, batch: list[tuple[str, str, int]]) -> None:
        js = self.client.jetstream()
        acks = [
            await js.publish_async(
                self.subject(topic),
                message.encode(),
                headers={Header.MSG_ID: f"{self._origin}-{number}"},
            )
            for topic, message, number in batch
        ]
        try:
            async with asyncio.timeout(5.0) as self._acks:
                await asyncio.gather(*acks)
        except (TimeoutError, nats.js.errors.NoStreamResponseError):
            # no stream answered: a server restarted empty has none (the outbox retries)
            with contextlib.suppress(TimeoutError, nats.errors.Error):
                await self._ensure_stream(self.client)
            raise
        finally:
            self._acks = None

    def subscribe(self, topic: str, *, group: str | None = None) -> _Subscription | _Member:
        if group is None:
            return _Subscription(self, topic)
        return _Member(self, topic, group)


class _Subscription:
    """Every message on the subject, through a core subscription."""

    def __init__(self, bus: NatsBus, topic: str) -> None:
        self._bus, self._subject = bus, bus.subject(topic)
        self._messages: collections.deque[str] = collections.deque(maxlen=10_000)
        self._signal = asyncio.Event()
        self._sub: Any = None

    async def _heard(self, msg: Msg) -> None:
        self._messages.append(msg.data.decode())
        self._signal.set()

    def reconnected(self) -> None:
        """An empty message: something may have been missed (hints are not replayed)."""
        self._messages.append("")
        self._signal.set()

    async def __aenter__(self) -> Self:
        self._sub = await self._bus.client.subscribe(self._subject, cb=self._heard)
        if self._bus.client.is_connected:  # else the client subscribes when it is back
            with contextlib.suppress(nats.errors.Error, TimeoutError):
                await self._bus.client.flush(timeout=5)
        self._bus._subscriptions.add(self)
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._bus._subscriptions.discard(self)
        with contextlib.suppress(nats.errors.Error):
            await self._sub.unsubscribe()

    async def next(self, wait_s: float | None) -> str | None:
        if not self._messages:
            self._signal.clear()
            try:
                async with asyncio.timeout(wait_s):
                    await self._signal.wait()
            except TimeoutError:
                return None
        return self._messages.popleft()


class _Member:
    """One member of a group: a durable pull consumer shared by the group's members."""

    def __init__(self, bus: NatsBus, topic: str, group: str) -> None:
        self._bus, self._subject = bus, bus.subject(topic)
        digest = hashlib.sha256(f"{group}\0{topic}".encode()).hexdigest()[:16]
        name = "".join(c if c.isalnum() or c in "_-" else "_" for c in group)
        self._durable = f"{name}-{digest}"
        self._sub: Any = None
        self._stale = False
        self._unacked: Msg | None = None

    async def __aenter__(self) -> Self:
        if self._bus.client.is_connected:  # else next() binds once the server is back
            try:
                await self._bind()
            except (nats.errors.Error, OSError) as e:
                log.debug("nats bus: %s; binding when it is back", e)
        self._bus._subscriptions.add(self)
        return self

    def reconnected(self) -> None:
        """Bind again: a server that restarted empty has lost the consumer, and a fetch
        from a lost consumer only ever times out."""
        self._stale = True

    async def _bind(self) -> None:
        claim_idle_s = self._bus.options.claim_idle_s
        config = ConsumerConfig(
            deliver_policy=DeliverPolicy.NEW,
            ack_wait=claim_idle_s,
            inactive_threshold=self._bus.options.ttl_s,
        )
        js = self._bus.client.jetstream()
        for last_try in (False, True):
            try:
                self._sub = await js.pull_subscribe(
                    self._subject, durable=self._durable, stream=self._bus.stream, config=config
                )
                return
            except nats.js.errors.NotFoundError:  # the stream is gone (restarted empty)
                if last_try:
                    raise
                await self._bus._ensure_stream(self._bus.client)

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._bus._subscriptions.discard(self)
        with contextlib.suppress(nats.errors.Error, OSError):
            await self._ack()
            if self._sub is not None:
                await self._sub.unsubscribe()

    async def _ack(self) -> None:
        if self._unacked is not None:
            msg, self._unacked = self._unacked, None
            await msg.ack()

    async def next(self, wait_s: float | None) -> str | None:
        deadline = None if wait_s is None else time.monotonic() + wait_s
        while True:
            left = 5.0 if deadline is None else deadline - time.monotonic()
            if left <= 0:
                return None
            try:  # (bounded: binding while the server is away must not outlast the wait)
                async with asyncio.timeout(left + _GRACE_S):
                    await self._ack()
                    if self._stale:
                        self._stale, old, self._sub = False, self._sub, None
                        if old is not None:
                            with contextlib.suppress(nats.errors.Error):
                                await old.unsubscribe()
                    if self._sub is None:
                        await self._bind()
                    msgs = await self._sub.fetch(1, timeout=max(0.01, min(left, 5.0)))
            except nats.errors.TimeoutError:
                continue
            except (nats.errors.Error, OSError) as e:  # (the wait's TimeoutError is an OSError)
                log.debug("nats bus: %s; retrying", e)
                if isinstance(e, nats.js.errors.NotFoundError):
                    self._sub = None  # the server lost the consumer (restarted empty)
                pause = 5.0 if deadline is None else deadline - time.monotonic()
                await asyncio.sleep(max(0.0, min(_RETRY_S, pause)))
                continue
            self._unacked = msgs[0]
            return str(msgs[0].data.decode())

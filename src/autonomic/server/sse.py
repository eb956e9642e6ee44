"""A run's events as Server-Sent Events, resumable from the log.

Each event's SSE ``id`` is its seq in the run's log, so a client that reconnects with
``Last-Event-ID: n`` (or ``?after=n``) gets event n+1 next: nothing lost, nothing twice,
whichever process answers. The stream reads the log, then follows the run live (woken
by the bus) and ends after the terminal event; a comment line every ``heartbeat_s``
keeps proxies from closing a quiet stream. When the server shuts down, streams end at
an event boundary, and the client resumes elsewhere from the last id it saw.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any

import msgspec

from autonomic.events import event_to_dict
from autonomic.loader import StoredEvent
from autonomic.runtime import Runtime

__all__ = ["event_json", "sse_stream"]

_encoder = msgspec.json.Encoder()


def event_json(stored: StoredEvent) -> dict[str, Any]:
    """An event as the API shows it: its seq, its time, its type and its fields."""
    return {"seq": stored.seq, "ts": stored.ts, **event_to_dict(stored.event)}


def _frame(stored: StoredEvent) -> bytes:
    data = _encoder.encode(event_json(stored))
    kind = type(stored.event).__name__
    return b"id: %d\nevent: %s\ndata: %s\n\n" % (stored.seq, kind.encode(), data)


async def sse_stream(
    runtime: Runtime,
    run_id: str,
    after: int,
    *,
    follow: bool,
    heartbeat_s: float,
    draining: asyncio.Event,
) -> AsyncIterator[bytes]:
    """The SSE frames of ``run_id``'s events after ``after``."""
    yield b"retry: 1000\n\n"
    events = runtime.events(run_id, after, follow=follow)
    pending: asyncio.Future[StoredEvent] | None = None
    stop: asyncio.Future[Any] = asyncio.ensure_future(draining.wait())
    try:
        while True:
            if pending is None:
                pending = asyncio.ensure_future(anext(events))
            waits: set[asyncio.Future[Any]] = {pending, stop}
            done, _ = await asyncio.wait(
                waits, timeout=heartbeat_s, return_when=asyncio.FIRST_COMPLETED
            )
            if pending in done:
                try:
                    stored = pending.result()
                except StopAsyncIteration:
                    return
                pending = None
                yield _frame(stored)
            elif stop in done:
                return
            else:
                yield b": keep-alive\n\n"
    finally:
        stop.cancel()
        if pending is not None:
            pending.cancel()
            with contextlib.suppress(asyncio.CancelledError, StopAsyncIteration):
                await pending
        await events.aclose()  # type: ignore[attr-defined]

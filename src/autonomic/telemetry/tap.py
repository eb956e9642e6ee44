"""Watch every event a runtime commits, live, without slowing the runs down.

``tap_store`` wraps the runtime's store's writes: each successful one hands
its new events (still encoded) to a bounded queue with one ``put_nowait`` and returns.
One background task decodes them and feeds the observers (metrics, live span export).
When observers fall behind and the queue is full, batches are dropped and counted,
never waited for: telemetry must not become back-pressure on the agents. Anything
dropped is still in the log, and ``autonomic runs export-otel`` re-creates its spans.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Sequence
from typing import Any

from autonomic.errors import ConfigError
from autonomic.events import EventRecord, NewEvent, decode_event
from autonomic.loader import StoredEvent
from autonomic.store.base import Commit, Committed, NewRun, RunInfo, Store

__all__ = ["CommitTap", "Observer", "tap_store"]

log = logging.getLogger("autonomic.telemetry")

Observer = Callable[[str, Sequence[StoredEvent]], object]
"""Called with a run id and its newly committed events, in order; may be async."""


class CommitTap:
    """A bounded queue of committed batches and the task that hands them to observers."""

    def __init__(self, maxsize: int = 10_000) -> None:
        self.observers: list[Observer] = []
        self.queue: asyncio.Queue[tuple[str, int, Sequence[NewEvent]]] = asyncio.Queue(maxsize)
        self.dropped = 0
        """Batches left out because the queue was full."""
        self.seen = 0
        """Batches handed to the observers."""
        self._task: asyncio.Task[None] | None = None

    def offer(self, run_id: str, first_seq: int, events: Sequence[NewEvent]) -> None:
        """Called on the committing task: never blocks, never raises."""
        if not events:
            return
        try:
            self.queue.put_nowait((run_id, first_seq, events))
        except asyncio.QueueFull:
            self.dropped += 1
            return
        if self._task is None:
            self.start()

    def start(self) -> None:
        if self._task is None or self._task.done():
            self._task = asyncio.get_running_loop().create_task(
                self._consume(), name="autonomic-tap"
            )

    async def drain(self) -> None:
        """Wait until every batch offered so far has been handed to the observers."""
        await self.queue.join()

    async def stop(self) -> None:
        """Hand over what is queued, then stop the task."""
        if self._task is None:
            return
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.queue.join(), 5.0)
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task
        self._task = None

    async def _consume(self) -> None:
        while True:
            batches = [await self.queue.get()]
            while len(batches) < 256:  # one wake-up for all that is queued
                try:
                    batches.append(self.queue.get_nowait())
                except asyncio.QueueEmpty:
                    break
            for run_id, first_seq, events in batches:
                try:
                    stored = [_decoded(seq, e) for seq, e in enumerate(events, first_seq)]
                    for observer in self.observers:
                        result = observer(run_id, stored)
                        if asyncio.iscoroutine(result):
                            await result
                    self.seen += 1
                except Exception as e:  # an observer's bug must not stop the others, or the runs
                    log.warning("telemetry observer failed on run %s: %s", run_id, e)
                finally:
                    self.queue.task_done()


def _decoded(seq: int, new: NewEvent) -> StoredEvent:
    record = EventRecord(seq, new.type, new.version, new.ts, new.body)
    return StoredEvent(seq, new.ts, decode_event(record, new.blobs))


def tap_store(store: Store, tap: CommitTap) -> None:
    """Offer every event ``store`` writes to ``tap`` from now on.

    The store's writes (``create_run``, ``fork_run``, ``commit``) are wrapped in place,
    not behind a proxy: the store keeps its type, so checks for what it can do
    (``isinstance(store, Boards)``, which Python 3.12 makes without ``__getattr__``)
    still see it. Its ``close`` first hands the observers what is queued.
    """
    if getattr(store, "_autonomic_tap", None) is not None:
        raise ConfigError("this store is already tapped: instrument a runtime once")
    create_run, fork_run, commit, close = (
        store.create_run,
        store.fork_run,
        store.commit,
        store.close,
    )

    async def tapped_create_run(run: NewRun, events: Sequence[NewEvent], **kwargs: Any) -> RunInfo:
        info = await create_run(run, events, **kwargs)
        tap.offer(run.run_id, 1, events)
        return info

    async def tapped_fork_run(
        source_id: str, run: NewRun, at_seq: int, events: Sequence[NewEvent], **kwargs: Any
    ) -> RunInfo:
        info = await fork_run(source_id, run, at_seq, events, **kwargs)
        tap.offer(run.run_id, at_seq + 1, events)
        return info

    async def tapped_commit(c: Commit) -> Committed:
        committed = await commit(c)
        tap.offer(c.run_id, c.expected_seq + 1, c.events)
        for child, events in c.children:
            tap.offer(child.run_id, 1, events)
        return committed

    async def tapped_close() -> None:
        try:
            await tap.stop()
        finally:
            await close()

    for name, method in (
        ("create_run", tapped_create_run),
        ("fork_run", tapped_fork_run),
        ("commit", tapped_commit),
        ("close", tapped_close),
        ("_autonomic_tap", tap),
    ):
        setattr(store, name, method)

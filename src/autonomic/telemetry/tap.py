"""Watch every event a runtime commits, live, without slowing the runs down.

A ``TappedStore`` stands in front of the runtime's store: each successful write hands
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

from autonomic.events import EventRecord, NewEvent, decode_event
from autonomic.loader import StoredEvent
from autonomic.store.base import Commit, Committed, NewRun, RunInfo, Store

__all__ = ["CommitTap", "Observer", "TappedStore"]

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


class TappedStore:
    """A store that offers every committed event to a ``CommitTap``; everything else
    is the wrapped store's, unchanged."""

    def __init__(self, store: Store, tap: CommitTap) -> None:
        self.inner = store
        self.tap = tap

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    async def __aenter__(self) -> TappedStore:
        await self.inner.open()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def close(self) -> None:
        """Hand the observers what is queued, then close the store."""
        try:
            await self.tap.stop()
        finally:
            await self.inner.close()

    async def create_run(self, run: NewRun, events: Sequence[NewEvent], **kwargs: Any) -> RunInfo:
        info = await self.inner.create_run(run, events, **kwargs)
        self.tap.offer(run.run_id, 1, events)
        return info

    async def fork_run(
        self, run_id: str, run: NewRun, at_seq: int, events: Sequence[NewEvent], **kwargs: Any
    ) -> RunInfo:
        info = await self.inner.fork_run(run_id, run, at_seq, events, **kwargs)
        self.tap.offer(run.run_id, at_seq + 1, events)
        return info

    async def commit(self, commit: Commit) -> Committed:
        committed = await self.inner.commit(commit)
        self.tap.offer(commit.run_id, commit.expected_seq + 1, commit.events)
        for child, events in commit.children:
            self.tap.offer(child.run_id, 1, events)
        return committed

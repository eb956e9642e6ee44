"""Group commit: the writes queued in one turn of the event loop share one transaction.

Under load this turns a thousand small commits into a handful. A commit that does not
fsync costs tens of microseconds, less than a hop to a thread and back, so a batch is
written on the event loop when the write lock is free at once; when another process
holds it (or commits fsync), the batch waits for the lock in a writer thread instead,
never blocking the loop.

What a write op may do:
- return its result, or raise an ``AutonomicError`` *before writing anything* (a refusal:
  the other ops of its batch are written all the same);
- fail in any other way (``Abort`` to choose what its caller sees): the transaction is
  rolled back, the ops of the batch are written again one transaction each, and only the
  failing one fails;
- be a ``BatchedOp``: consecutive ops of one such class are written by one ``write_many``.
"""

from __future__ import annotations

import asyncio
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from concurrent.futures import Executor
from typing import Any, Protocol, TypeVar

from autonomic.errors import AutonomicError, StoreError

__all__ = ["Abort", "BatchedOp", "GroupCommit", "LockBusy", "Transactions"]

T = TypeVar("T")
WriteOp = Callable[[], Any]
_Queued = tuple[WriteOp, "asyncio.Future[Any]"]


class LockBusy(Exception):
    """Another connection holds the write lock right now."""


class Abort(Exception):
    """A write op failed after it wrote: roll its batch back; its caller gets ``error``."""

    def __init__(self, error: AutonomicError) -> None:
        super().__init__(str(error))
        self.error = error


class BatchedOp(ABC):
    """A write op that is written together with the consecutive ops of its class."""

    @abstractmethod
    def __call__(self) -> Any: ...

    @abstractmethod
    def write_many(self, ops: Sequence[Any]) -> list[Any]:
        """Write ``ops`` (this one first); a result or an AutonomicError for each."""


class Transactions(Protocol):
    def begin(self, wait: bool) -> None:
        """Start a write transaction; without ``wait``, raise LockBusy if the lock is taken."""
        ...

    def commit(self) -> None: ...

    def rollback(self) -> None:
        """Roll back whatever is open; never raises."""
        ...

    def failure(self, error: Exception) -> AutonomicError:
        """What the caller of an op that failed with ``error`` is told."""
        ...


class GroupCommit:
    """Queues write ops and writes each batch in one transaction (see the module doc)."""

    def __init__(
        self,
        tx: Transactions,
        writer: Executor,
        *,
        inline: bool,
        after_batch: Callable[[], None] = lambda: None,
    ) -> None:
        self._tx, self._writer, self._inline, self._after_batch = tx, writer, inline, after_batch
        self._queue: list[_Queued] = []
        self._flusher: asyncio.Task[None] | None = None
        self._scheduled = False

    async def write(self, op: Callable[[], T]) -> T:
        loop = asyncio.get_running_loop()
        future: asyncio.Future[T] = loop.create_future()
        self._queue.append((op, future))
        if self._flusher is None and not self._scheduled:
            # a callback, not a task: everything queued in this loop turn joins the batch
            self._scheduled = True
            loop.call_soon(self._flush_inline)
        return await future

    async def drain(self) -> None:
        """Write everything queued so far."""
        while self._flusher is not None or self._queue:
            if self._flusher is not None:
                await asyncio.wait([self._flusher])
            else:
                self._flush_inline()

    def _take(self) -> list[_Queued]:
        """The queued ops whose callers still wait (a cancelled caller's op is dropped)."""
        batch, self._queue = self._queue, []
        return [(op, future) for op, future in batch if not future.done()]

    def _flush_inline(self) -> None:
        self._scheduled = False
        if self._flusher is not None or not self._queue:
            return
        if not self._inline:
            self._flusher = asyncio.create_task(self._flush_in_thread())
            return
        batch = self._take()
        try:
            self._tx.begin(wait=False)
        except LockBusy:
            return self._to_thread(batch)
        except Exception as e:
            return self._settle(batch, [self._tx.failure(e) for _ in batch])
        try:
            results = self._write([op for op, _ in batch])
        except Exception as e:
            if len(batch) > 1:  # one op spoilt the batch: the thread writes them one by one
                return self._to_thread(batch)
            results = [self._tx.failure(e)]
        except BaseException as e:
            _settle(batch, e)
            raise
        self._settle(batch, results)

    def _to_thread(self, batch: list[_Queued]) -> None:
        self._queue[:0] = batch
        self._flusher = asyncio.create_task(self._flush_in_thread())

    def _settle(self, batch: list[_Queued], results: list[Any]) -> None:
        _settle(batch, results)
        self._after_batch()

    async def _flush_in_thread(self) -> None:
        loop = asyncio.get_running_loop()
        try:
            while batch := self._take():
                try:
                    results = await loop.run_in_executor(
                        self._writer, self._write_waiting, [op for op, _ in batch]
                    )
                except asyncio.CancelledError:
                    for _, future in batch:
                        future.cancel()
                    raise
                except BaseException as e:
                    _settle(batch, e)
                    raise
                self._settle(batch, results)
        finally:
            self._flusher = None

    def _write_waiting(self, ops: list[WriteOp]) -> list[Any]:
        """Write ``ops``, waiting for the lock; if one spoils the batch, one at a time."""
        try:
            self._tx.begin(wait=True)
        except Exception as e:  # the lock never came, or the file cannot be written at all
            return [self._tx.failure(e) for _ in ops]
        try:
            return self._write(ops)
        except Exception as e:
            if len(ops) == 1:
                return [self._tx.failure(e)]
        return [result for op in ops for result in self._write_waiting([op])]

    def _write(self, ops: list[WriteOp]) -> list[Any]:
        """Run ``ops`` in the transaction just begun, and commit it (or roll it back)."""
        try:
            results = _apply(ops)
            self._tx.commit()
        except BaseException:
            self._tx.rollback()
            raise
        return results


def _apply(ops: list[WriteOp]) -> list[Any]:
    results: list[Any] = []
    start = 0
    while start < len(ops):
        op, end = ops[start], start + 1
        if isinstance(op, BatchedOp):
            while end < len(ops) and type(ops[end]) is type(op):
                end += 1
            if end - start > 1:
                results.extend(op.write_many(ops[start:end]))
                start = end
                continue
        try:
            results.append(op())
        except AutonomicError as e:
            results.append(e)
        start = end
    return results


def _settle(batch: list[_Queued], results: list[Any] | BaseException) -> None:
    """Hand each caller its result, or tell them all that an interrupt stopped the write."""
    for i, (_, future) in enumerate(batch):
        if future.done():
            continue
        result = (
            StoreError(f"the write was interrupted ({type(results).__name__}): nothing was written")
            if isinstance(results, BaseException)
            else results[i]
        )
        if isinstance(result, BaseException):
            future.set_exception(result)
        else:
            future.set_result(result)

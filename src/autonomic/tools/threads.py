"""Daemon threads for sync tools: a hung tool must neither starve later tools nor block exit.

``asyncio.to_thread`` uses the loop's default executor: a few threads, joined when the
interpreter exits. A sync tool stuck past its timeout would hold one of them for good, and
the process could not exit. Here every job runs on a daemon thread of one elastic pool:
when all its threads are busy (hung ones included) it starts another, and a thread idle
for ``idle_s`` leaves.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import logging
import queue
import threading
from collections.abc import Callable
from typing import Any, TypeVar

__all__ = ["POOL", "DaemonThreads", "run_in_thread"]

T = TypeVar("T")
_log = logging.getLogger(__name__)


class DaemonThreads:
    """An elastic pool of daemon threads; ``submit`` never waits for a free one."""

    def __init__(self, *, idle_s: float = 30.0, name: str = "autonomic-tool") -> None:
        self.idle_s = idle_s
        self.name = name
        self._jobs: queue.SimpleQueue[Callable[[], object]] = queue.SimpleQueue()
        self._idle = threading.Semaphore(0)  # one permit per thread waiting for a job
        self._lock = threading.Lock()
        self._threads = 0
        self._started = 0

    @property
    def threads(self) -> int:
        """How many threads the pool has now (busy or idle)."""
        return self._threads

    def submit(self, job: Callable[[], object]) -> None:
        """Run ``job`` on a pool thread; it must not raise (exceptions are only logged)."""
        self._jobs.put(job)
        if not self._idle.acquire(blocking=False):
            self._start_thread()

    def _start_thread(self) -> None:
        with self._lock:
            self._threads += 1
            self._started += 1
            number = self._started
        threading.Thread(target=self._work, name=f"{self.name}-{number}", daemon=True).start()

    def _work(self) -> None:
        try:
            while True:
                try:
                    job = self._jobs.get(timeout=self.idle_s)
                except queue.Empty:
                    if self._idle.acquire(blocking=False):
                        return  # gave up its idle permit: no submitter counts on it
                    continue  # a submitter took its permit: a job is on its way
                try:
                    job()
                except BaseException:
                    _log.exception("a job on a tool thread raised")
                self._idle.release()
        finally:
            with self._lock:
                self._threads -= 1


POOL = DaemonThreads()
"""The pool every sync tool runs on."""


async def run_in_thread(fn: Callable[..., T], /, *args: Any, **kwargs: Any) -> T:
    """``fn(*args, **kwargs)`` on a daemon thread of the pool, with the caller's contextvars.

    If the caller stops waiting (a timeout, a cancellation), the thread runs on and its
    result is dropped; whatever ``fn`` raises, ``BaseException`` included, is raised here.
    """
    loop = asyncio.get_running_loop()
    done: asyncio.Future[tuple[bool, Any]] = loop.create_future()
    context = contextvars.copy_context()

    def settle(outcome: tuple[bool, Any]) -> None:
        if not done.done():
            done.set_result(outcome)

    def job() -> None:
        try:
            outcome: tuple[bool, Any] = (True, context.run(fn, *args, **kwargs))
        except BaseException as e:
            outcome = (False, e)
        with contextlib.suppress(RuntimeError):  # the loop closed meanwhile: nobody waits
            loop.call_soon_threadsafe(settle, outcome)

    POOL.submit(job)
    ok, value = await done
    if not ok:
        raise value
    result: T = value
    return result

"""One CPU-time budget for an execution's whole process tree, watched from the host.

RLIMIT_CPU counts each process on its own, so code that forks N busy children gets N
budgets. The host measures the tree instead: exactly from the cgroup's cpuacct counter
where there is one, else by summing ``/proc`` over the tree (each process's own time
and that of the children it reaped). The watcher samples only as often as the budget
could run out (the rest of it spread over every CPU), and kills the tree once it is
spent.

Without a cgroup the sum misses children reaped automatically (a parent that ignores
SIGCHLD) that lived between two samples; each of those is still bounded by its own
RLIMIT_CPU, and the tree by the wall-clock timeout.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import Callable

__all__ = ["CpuWatch", "tree_cpu_seconds", "tree_pids"]

MIN_INTERVAL = 0.02
"""Seconds between samples near the end of a budget: the most a tree can overrun it by,
times the number of CPUs."""
_CPUS = os.cpu_count() or 1
_TICK = os.sysconf("SC_CLK_TCK")

Meter = Callable[[], float | None]
"""CPU seconds the tree has used so far, or None once it is gone."""


def _read(path: str) -> str | None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return None
    try:
        return os.read(fd, 4096).decode("ascii", "replace")
    except OSError:
        return None
    finally:
        os.close(fd)


def _ticks(pid: int) -> int | None:
    """utime + stime + cutime + cstime of ``pid``, in clock ticks; None when it is gone.

    The command name, which the code sets, comes before the numbers in parentheses and
    may hold spaces or parentheses itself: the numbers are read after the last one.
    """
    stat = _read(f"/proc/{pid}/stat")
    if stat is None or ")" not in stat:
        return None
    fields = stat[stat.rindex(")") + 2 :].split()
    try:
        return sum(int(value) for value in fields[11:15])  # fields 14 to 17 of proc(5)
    except ValueError:
        return None


def _children(pid: int) -> list[int]:
    """The children of every thread of ``pid`` (a child belongs to the thread that made it)."""
    found: list[int] = []
    with contextlib.suppress(OSError):
        for tid in os.listdir(f"/proc/{pid}/task"):
            text = _read(f"/proc/{pid}/task/{tid}/children") or ""
            found += [int(child) for child in text.split() if child.isdigit()]
    return found


def tree_pids(root: int) -> list[int]:
    """``root`` and its descendants now, parents before their children."""
    found: list[int] = []
    stack = [root]
    while stack:
        pid = stack.pop()
        found.append(pid)
        stack += _children(pid)
    return found


def tree_cpu_seconds(root: int) -> float | None:
    """CPU seconds used by ``root`` and its descendants, living or reaped; None once
    ``root`` is gone.

    Each process is read before its children: a child reaped in between is then missed
    by this sample (and counted in its parent's by the next one), never counted twice.
    """
    total = 0
    stack = [root]
    while stack:
        pid = stack.pop()
        ticks = _ticks(pid)
        if ticks is None:
            if pid == root:
                return None
            continue
        total += ticks
        stack += _children(pid)
    return total / _TICK


class CpuWatch:
    """Samples a tree's CPU time with ``meter`` and calls ``kill`` once it reaches ``budget``.

    ``seen`` is the most it was measured at, which outlasts a tree that is gone.
    """

    def __init__(self, meter: Meter, budget: float, kill: Callable[[], None]) -> None:
        self._meter = meter
        self._budget = budget
        self._kill = kill
        self.seen = 0.0
        self.exceeded = False

    def sample(self) -> float | None:
        """Measure now; None once the tree is gone."""
        used = self._meter()
        if used is not None:
            self.seen = max(self.seen, used)
        return used

    async def run(self) -> None:
        """Watch until the budget is spent (then kill) or the tree is gone; cancel to stop."""
        while (used := self.sample()) is not None:
            if used >= self._budget:
                self.exceeded = True
                self._kill()
                return
            await asyncio.sleep(max(MIN_INTERVAL, (self._budget - used) / _CPUS))

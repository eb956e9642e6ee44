"""A cgroup (v1) per execution: a memory ceiling, a process count and a CPU-time counter
that the whole tree shares.

Rlimits are per process, so a fork bomb or many mid-sized processes slip past them; a
cgroup bounds the tree, and its counters tell afterwards which limit was hit. Only root
can create one (the usual case in containers and CI); elsewhere the sandbox falls back to
rlimits alone. The files are tiny kernel objects, so they are read and written inline.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import os
import secrets
import signal
from dataclasses import dataclass
from pathlib import Path

from autonomic.sandbox.base import SandboxLimits

__all__ = ["CONTROLLERS", "Cgroup", "CgroupStats"]

ROOT = Path("/sys/fs/cgroup")
CONTROLLERS = ("memory", "pids", "cpuacct")
"""cpuacct is optional: it measures the CPU time of the whole tree (see ``cputime``)."""
_REQUIRED = CONTROLLERS[:2]


@dataclass(frozen=True, slots=True)
class CgroupStats:
    oom_kills: int
    process_limit_hits: int
    peak_memory_bytes: int


def _read(path: Path) -> str:
    """A small kernel file, in one syscall: these are read on every execution."""
    fd = os.open(path, os.O_RDONLY)
    try:
        return os.read(fd, 4096).decode()
    finally:
        os.close(fd)


def _write(path: Path, value: str) -> None:
    fd = os.open(path, os.O_WRONLY)
    try:
        os.write(fd, value.encode())
    finally:
        os.close(fd)


def _counter(text: str, key: str) -> int:
    """The value of ``key`` in a ``key value`` per line file such as memory.oom_control."""
    for line in text.splitlines():
        name, _, value = line.partition(" ")
        if name == key and value.strip().isdigit():
            return int(value)
    return 0


@functools.cache
def _sweep_stale() -> None:
    """Remove the cgroups of processes that died without removing theirs (once a process).

    Their sandboxes died with them (``--die-with-parent``), so the directories are empty.
    """
    for controller in CONTROLLERS:
        parent = ROOT / controller / "autonomic"
        with contextlib.suppress(OSError):
            for path in parent.iterdir():
                owner = path.name.partition("-")[0]
                if owner.isdigit() and not Path(f"/proc/{owner}").exists():
                    with contextlib.suppress(OSError):
                        path.rmdir()


class Cgroup:
    """One execution's directories under the memory, pids (and cpuacct) hierarchies."""

    def __init__(self, dirs: dict[str, Path], extra_memory: int, extra_processes: int) -> None:
        self._dirs = dirs
        self._extra = (extra_memory, extra_processes)
        self._configured: SandboxLimits | None = None

    @classmethod
    def create(
        cls, limits: SandboxLimits, *, extra_memory: int = 0, extra_processes: int = 0
    ) -> Cgroup | None:
        """A fresh cgroup sized for ``limits``, or None where cgroup v1 is not writable.

        ``extra_memory`` and ``extra_processes`` are allowed on top of the limits, for
        what the sandbox itself uses (tmpfs pages are charged here, helper processes).
        """
        if os.geteuid() != 0 or not all(os.access(ROOT / c, os.W_OK) for c in _REQUIRED):
            return None
        _sweep_stale()
        name = f"{os.getpid()}-{secrets.token_hex(6)}"
        found = [c for c in CONTROLLERS if os.access(ROOT / c, os.W_OK)]
        dirs = {c: ROOT / c / "autonomic" / name for c in found}
        group = cls(dirs, extra_memory, extra_processes)
        try:
            for path in dirs.values():
                path.mkdir(parents=True)
            group.configure(limits)
        except OSError:
            group.remove_now()
            return None
        return group

    def configure(self, limits: SandboxLimits) -> None:
        """Set the ceilings for ``limits`` (before each execution too: they may differ)."""
        if limits == self._configured:
            return
        extra_memory, extra_processes = self._extra
        memory = str(limits.memory_bytes + extra_memory)
        folder = self._dirs["memory"]
        files = [folder / "memory.limit_in_bytes", folder / "memory.memsw.limit_in_bytes"]
        if not files[1].exists():  # no swap accounting on this kernel
            files.pop()
        try:
            for path in files:
                _write(path, memory)
        except OSError:  # memsw may never be below the limit: raise it first
            for path in reversed(files):
                _write(path, memory)
        _write(self._dirs["pids"] / "pids.max", str(limits.processes + extra_processes))
        self._configured = limits

    def adopt(self, pid: int) -> None:
        """Move process ``pid`` into the cgroup; what it forks from then on is in it too.

        Blocking: a cgroup v1 migration waits for an RCU grace period (milliseconds), so
        call it from a thread, while the process is still setting up.
        """
        for path in self._dirs.values():
            _write(path / "cgroup.procs", str(pid))

    @property
    def measures_cpu(self) -> bool:
        return "cpuacct" in self._dirs

    def cpu_seconds(self) -> float | None:
        """CPU time the tree has used since the cgroup was made (None without cpuacct)."""
        cpuacct = self._dirs.get("cpuacct")
        try:
            return int(_read(cpuacct / "cpuacct.usage")) / 1e9 if cpuacct else None
        except (OSError, ValueError):
            return None

    def stats(self) -> CgroupStats:
        memory, pids = self._dirs["memory"], self._dirs["pids"]
        try:
            return CgroupStats(
                oom_kills=_counter(_read(memory / "memory.oom_control"), "oom_kill"),
                process_limit_hits=_counter(_read(pids / "pids.events"), "max"),
                peak_memory_bytes=int(_read(memory / "memory.max_usage_in_bytes")),
            )
        except (OSError, ValueError):
            return CgroupStats(0, 0, 0)

    def kill(self) -> None:
        """SIGKILL every process still in the cgroup."""
        for path in self._dirs.values():
            with contextlib.suppress(OSError):
                for pid in (path / "cgroup.procs").read_text().split():
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(int(pid), signal.SIGKILL)

    def remove_now(self) -> bool:
        """Remove the directories that can be removed; True when none is left."""
        left = False
        for path in self._dirs.values():
            try:
                path.rmdir()
            except FileNotFoundError:
                continue
            except OSError:
                left = True
        return not left

    async def remove(self) -> None:
        """Kill what is left and remove the cgroup, waiting briefly for dying processes."""
        delay = 0.001
        for _ in range(100):
            self.kill()
            if self.remove_now():
                return
            await asyncio.sleep(delay)
            delay = min(delay * 2, 0.05)

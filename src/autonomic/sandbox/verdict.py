"""Turn what was observed about an execution into plain-words violation reasons.

The evidence comes from several places (the host's own timer and output caps, the
cgroup's counters, the exit signal, what the guest saw), and the same limit can show in
more than one of them; each limit is named once.
"""

from __future__ import annotations

import signal
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from autonomic.sandbox.base import SandboxLimits, format_bytes
from autonomic.sandbox.cgroup import CgroupStats

__all__ = ["Evidence", "violations"]

_CPU_KILLED = 128 + signal.SIGXCPU
_FILE_SIZE_KILLED = 128 + signal.SIGXFSZ
_KILLED = 128 + signal.SIGKILL


@dataclass(frozen=True, slots=True)
class Evidence:
    timed_out: bool
    exit_code: int
    cpu_seconds: float
    categories: Sequence[str] = ()
    cgroup: CgroupStats | None = None
    stdout_truncated: bool = False
    stderr_truncated: bool = False
    omitted_files: Mapping[str, int] | None = None


def violations(limits: SandboxLimits, seen: Evidence) -> tuple[str, ...]:
    """Each limit the execution hit, in words, in a stable order."""
    found: list[str] = []
    if seen.timed_out:
        found.append(f"timeout after {limits.timeout:g}s")
    cpu_killed = seen.exit_code == _CPU_KILLED or (
        seen.exit_code == _KILLED and seen.cpu_seconds >= limits.cpu_seconds
    )
    if cpu_killed:
        found.append(f"cpu time limit {limits.cpu_seconds}s exceeded")
    if "memory" in seen.categories or (seen.cgroup and seen.cgroup.oom_kills):
        found.append(f"memory limit {format_bytes(limits.memory_bytes)} exceeded")
    if "file_size" in seen.categories or seen.exit_code == _FILE_SIZE_KILLED:
        found.append(f"file size limit {format_bytes(limits.file_size_bytes)} exceeded")
    if "disk_full" in seen.categories:
        found.append(f"scratch space limit {format_bytes(limits.scratch_bytes)} exceeded")
    if "open_files" in seen.categories:
        found.append(f"open files limit {limits.open_files} reached")
    if seen.cgroup and seen.cgroup.process_limit_hits:
        found.append(f"process limit {limits.processes} reached")
    for stream, truncated in (("stdout", seen.stdout_truncated), ("stderr", seen.stderr_truncated)):
        if truncated:
            found.append(f"{stream} truncated at {format_bytes(limits.output_bytes)}")
    if seen.omitted_files:
        names = sorted(seen.omitted_files)
        shown = ", ".join(names[:5]) + (f" and {len(names) - 5} more" if len(names) > 5 else "")
        found.append(f"produced files truncated at {format_bytes(limits.files_bytes)} ({shown})")
    return tuple(found)

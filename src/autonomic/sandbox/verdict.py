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
from autonomic.sandbox.egress import MAX_REQUESTS
from autonomic.sandbox.wire import REPORT_OVERHEAD

__all__ = ["Evidence", "violations"]

_CPU_KILLED = 128 + signal.SIGXCPU
_FILE_SIZE_KILLED = 128 + signal.SIGXFSZ
_KILLED = 128 + signal.SIGKILL


@dataclass(frozen=True, slots=True)
class Evidence:
    timed_out: bool
    exit_code: int
    cpu_seconds: float
    """Of the whole tree, as the host measured it."""
    categories: Sequence[str] = ()
    cgroup: CgroupStats | None = None
    stdout_truncated: bool = False
    stderr_truncated: bool = False
    omitted_files: Mapping[str, int] | None = None
    cpu_exceeded: bool = False
    """The host killed the tree for passing its CPU budget."""
    refused_files: Mapping[str, str] | None = None
    """Produced files not returned: name (as ``ascii`` shows it) → why."""
    egress_refused: int = 0
    """Connections the egress proxy turned away for being over its limit."""
    egress_requests_refused: int = 0
    """Requests it turned away once an execution had made ``MAX_REQUESTS``."""
    report_refused: bool = False
    """The guest's report was malformed or too large, and was dropped."""


def violations(limits: SandboxLimits, seen: Evidence) -> tuple[str, ...]:
    """Each limit the execution hit, in words, in a stable order."""
    found: list[str] = []
    if seen.timed_out:
        found.append(f"timeout after {limits.timeout:g}s")
    cpu_over = (
        seen.cpu_exceeded
        or seen.exit_code == _CPU_KILLED
        or seen.cpu_seconds > limits.cpu_seconds
        or (seen.exit_code == _KILLED and seen.cpu_seconds >= limits.cpu_seconds)
    )
    if cpu_over:
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
    if seen.egress_refused:
        found.append(f"egress connection limit {limits.egress_connections} reached")
    if seen.egress_requests_refused:
        found.append(f"egress request limit {MAX_REQUESTS} reached")
    if seen.omitted_files:
        shown = _listing(sorted(seen.omitted_files))
        found.append(f"produced files truncated at {format_bytes(limits.files_bytes)} ({shown})")
    if "too_many_files" in seen.categories:
        found.append("too many produced files: the rest were not returned")
    if seen.report_refused:
        found.append(
            "the sandbox's report was malformed or over "
            f"{format_bytes(limits.files_bytes + REPORT_OVERHEAD)}, and was dropped"
        )
    if seen.refused_files:
        refused = seen.refused_files
        shown = _listing([f"{name} ({refused[name]})" for name in sorted(refused)])
        found.append(f"produced files refused: {shown}")
    return tuple(found)


def _listing(items: Sequence[str], shown: int = 5) -> str:
    more = len(items) - shown
    return ", ".join(items[:shown]) + (f" and {more} more" if more > 0 else "")

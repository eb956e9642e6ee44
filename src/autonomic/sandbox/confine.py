"""How a guest is confined from outside: which uid it runs as, and the rlimits it sets
on itself before it runs anything it was sent.

No Python runs between fork and exec (a ``preexec_fn`` forces a full ``fork`` of the
host process, which costs milliseconds in a large one): the uid is dropped by
``setpriv``, exec'd in front of bwrap, so the spawn can use ``vfork``. The rlimits travel
in the request and the guest applies them to itself, hard and soft, before the code
runs; nothing in the sandbox can raise them back.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil

from autonomic.sandbox.base import SandboxLimits

__all__ = ["SANDBOX_UID", "count_tasks", "host_uid", "prefix_argv", "rlimits"]

SANDBOX_UID = 65534
"""``nobody``: the uid sandboxed code has, inside the sandbox and, when we are root, outside."""


def host_uid() -> int | None:
    """The uid to switch to before exec: ``nobody`` when we are root, else keep ours."""
    return SANDBOX_UID if os.geteuid() == 0 else None


def prefix_argv(uid: int | None) -> tuple[list[str], int | None]:
    """What to run in front of the guest's command, and the uid Popen must switch to itself.

    The second value is set only when ``setpriv`` is missing: then Popen drops the uid,
    at the price of a full fork.
    """
    if uid is None:
        return [], None
    setpriv = shutil.which("setpriv")
    if setpriv is None:
        return [], uid
    return [setpriv, f"--reuid={uid}", f"--regid={uid}", "--clear-groups", "--"], None


def rlimits(limits: SandboxLimits, other_tasks: int | None) -> list[tuple[str, int, int]]:
    """The (resource name, soft, hard) limits the guest sets on itself.

    CPU gets a second of grace between SIGXCPU, which names the cause, and SIGKILL. No
    core dumps: the host's core handler would write them outside the sandbox. Without a
    pids cgroup, RLIMIT_NPROC bounds the processes; it counts every task of the uid on
    the host, so it allows ``other_tasks`` (those counted at launch) on top.
    """
    found = [
        ("RLIMIT_CPU", limits.cpu_seconds, limits.cpu_seconds + 1),
        ("RLIMIT_AS", limits.memory_bytes, limits.memory_bytes),
        ("RLIMIT_FSIZE", limits.file_size_bytes, limits.file_size_bytes),
        ("RLIMIT_NOFILE", limits.open_files, limits.open_files),
        ("RLIMIT_CORE", 0, 0),
    ]
    if other_tasks is not None:
        ceiling = other_tasks + limits.processes
        found.append(("RLIMIT_NPROC", ceiling, ceiling))
    return found


def _count_tasks(uid: int) -> int:
    count = 0
    for entry in os.scandir("/proc"):
        if entry.name.isdigit():
            with contextlib.suppress(OSError):
                if entry.stat().st_uid == uid:
                    count += len(os.listdir(f"/proc/{entry.name}/task"))
    return count


async def count_tasks(uid: int) -> int:
    """How many tasks (threads included) ``uid`` has on the host now."""
    return await asyncio.to_thread(_count_tasks, uid)

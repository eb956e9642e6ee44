"""Who drives a run: an owner id per Runtime, and telling when a local owner is dead.

An owner id names the host, the PID namespace and the process. A lease held by a process
on this host, in this PID namespace, that no longer exists can be broken at once instead
of waiting for it to expire: that is how ``autonomic runs resume`` continues a run right
after a ``kill -9``. Anything less certain (another host, a live or reused pid) waits.
"""

from __future__ import annotations

import os
import socket
import uuid

__all__ = ["new_owner_id", "owner_is_dead_here"]


def _pid_namespace() -> str:
    try:
        return str(os.stat("/proc/self/ns/pid").st_ino)
    except OSError:
        return "-"


def new_owner_id() -> str:
    return f"{socket.gethostname()}:{_pid_namespace()}:{os.getpid()}:{uuid.uuid4().hex[:6]}"


def owner_is_dead_here(owner: str) -> bool:
    """True only when ``owner`` was a process on this host and namespace that has exited."""
    host, _, rest = owner.partition(":")
    namespace, _, rest = rest.partition(":")
    pid_text, _, _ = rest.partition(":")
    if host != socket.gethostname() or namespace != _pid_namespace() or not pid_text.isdigit():
        return False
    pid = int(pid_text)
    if pid == os.getpid():
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False
    return False

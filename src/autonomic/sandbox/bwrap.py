"""The default sandbox: bubblewrap namespaces, a seccomp filter, rlimits and a cgroup.

Deny-all: a new network namespace (loopback only), no host files but read-only system
directories and the interpreter, a fresh size-limited tmpfs as scratch (and /tmp) per
execution, new PID/IPC/UTS namespaces, no capabilities, no new privileges, no nested
user namespaces. When we are root the code also runs as ``nobody`` on the host and in a
cgroup of its own.
"""

from __future__ import annotations

import os
import shutil
import socket
from collections.abc import Sequence

from autonomic.errors import SandboxError
from autonomic.sandbox.base import MiB, SandboxLimits
from autonomic.sandbox.cgroup import Cgroup
from autonomic.sandbox.confine import SANDBOX_UID, count_tasks, host_uid, prefix_argv
from autonomic.sandbox.guest import Launch, guest_argv
from autonomic.sandbox.interpreter import Interpreter, find_interpreter
from autonomic.sandbox.runner import GuestSandbox
from autonomic.sandbox.seccomp import seccomp_filter

__all__ = ["BwrapSandbox", "bwrap_argv"]

SCRATCH = "/scratch"
ROOT_DIRS = ("bin", "sbin", "lib", "lib32", "lib64", "libx32")
"""Top-level system directories, mirrored as the host has them (symlinks into /usr or not)."""
ETC_FILES = ("/etc/alternatives", "/etc/ld.so.cache")
"""The only parts of /etc shown: what commands need to resolve themselves and libraries."""
CGROUP_SLACK = 16 * MiB
"""Memory for bwrap's own processes, on top of what the code and its tmpfs may use."""
BWRAP_PROCESSES = 2
"""bwrap's monitor and PID 1 live in the cgroup too."""


def _root_dirs() -> list[str]:
    args: list[str] = []
    for name in ROOT_DIRS:
        path = f"/{name}"
        if os.path.islink(path):
            args += ["--symlink", os.readlink(path), path]
        elif os.path.isdir(path):
            args += ["--ro-bind", path, path]
    return args


def bwrap_argv(
    *,
    bwrap: str,
    python: Interpreter,
    limits: SandboxLimits,
    control_fd: int,
    seccomp_fd: int | None = None,
    binds: Sequence[str] = (),
) -> list[str]:
    """The bwrap command line that starts one guest. Order matters: see the comments."""
    size = str(limits.scratch_bytes)
    uid = str(SANDBOX_UID)
    path = "/usr/local/bin:/usr/bin:/bin"
    if python.home is not None:
        path = f"{os.path.dirname(python.path)}:{path}"
    argv = [
        bwrap,
        # --unshare-all only tries a user namespace; --disable-userns needs a sure one.
        "--unshare-all",
        "--unshare-user",
        "--disable-userns",
        "--die-with-parent",
        "--new-session",
        "--uid", uid,
        "--gid", uid,
        "--hostname", "sandbox",
        "--cap-drop", "ALL",
        "--ro-bind", "/usr", "/usr",
        *_root_dirs(),
    ]  # fmt: skip
    for entry in ETC_FILES:
        argv += ["--ro-bind-try", entry, entry]
    interpreter = [python.home] if python.home is not None else []
    for entry in (*interpreter, *binds):
        argv += ["--ro-bind", entry, entry]
    argv += [
        "--proc", "/proc",
        # --dev's tmpfs has no size limit: make it read-only and give /dev/shm its own.
        "--dev", "/dev",
        "--remount-ro", "/dev",
        "--size", size, "--tmpfs", "/dev/shm",  # --size applies to the next --tmpfs
        "--size", size, "--tmpfs", "/tmp",
        "--size", size, "--tmpfs", SCRATCH,
        "--chdir", SCRATCH,
        "--clearenv",
        "--setenv", "PATH", path,
        "--setenv", "HOME", SCRATCH,
        "--setenv", "TMPDIR", "/tmp",
        "--setenv", "LANG", "C.UTF-8",
        "--setenv", "PYTHONDONTWRITEBYTECODE", "1",
    ]  # fmt: skip
    if seccomp_fd is not None:
        argv += ["--seccomp", str(seccomp_fd)]
    # Last among the mounts: the root can take no new mount points once read-only.
    argv += ["--remount-ro", "/", "--", *guest_argv(python.path, control_fd)]
    return argv


class BwrapSandbox(GuestSandbox):
    """Bubblewrap-isolated executions (the default backend).

    ``python`` picks the interpreter (default: the system Python); ``binds`` are extra
    host paths shown read-only at the same place (a virtualenv, a data set).
    ``seccomp=False`` runs without the seccomp filter, for hosts without libseccomp.
    """

    def __init__(
        self,
        *,
        limits: SandboxLimits | None = None,
        warm: int = 2,
        python: str | None = None,
        binds: Sequence[str] = (),
        seccomp: bool = True,
        bwrap: str | None = None,
    ) -> None:
        found = bwrap or shutil.which("bwrap")
        if found is None:
            raise SandboxError(
                "bubblewrap is not installed, and the default sandbox needs it: install it "
                "with `apt-get install bubblewrap` (or your distribution's bubblewrap "
                "package), or opt into the much weaker process backend, "
                'open_sandbox("process")'
            )
        self._bwrap = found
        self._uid = host_uid()
        self._python = find_interpreter(python, self._uid)
        self._binds = tuple(os.path.realpath(path) for path in binds)
        self._seccomp = seccomp
        super().__init__("bwrap", limits, warm)

    async def _launch(self, limits: SandboxLimits) -> Launch:
        bpf = await seccomp_filter() if self._seccomp else None
        cgroup = Cgroup.create(
            limits,
            extra_memory=3 * limits.scratch_bytes + CGROUP_SLACK,
            extra_processes=BWRAP_PROCESSES,
        )
        other_tasks = None
        if cgroup is None:
            other_tasks = await count_tasks(self._uid or os.getuid())
        prefix, user = prefix_argv(self._uid, cgroup.procs_files if cgroup else ())
        host, child = socket.socketpair()
        child_fds = [child.detach()]
        seccomp_fd = None
        if bpf is not None:
            seccomp_fd, writer = os.pipe()
            child_fds.append(seccomp_fd)
            try:  # a few hundred bytes, written at once: an empty pipe holds 64 KiB
                os.write(writer, bpf)
            finally:
                os.close(writer)
        argv = bwrap_argv(
            bwrap=self._bwrap,
            python=self._python,
            limits=limits,
            control_fd=child_fds[0],
            seccomp_fd=seccomp_fd,
            binds=self._binds,
        )
        return Launch(
            argv=(*prefix, *argv),
            env={"PATH": os.defpath},
            control=host,
            child_fds=tuple(child_fds),
            user=user,
            cgroup=cgroup,
            other_tasks=other_tasks,
        )

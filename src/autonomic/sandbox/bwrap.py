"""The default sandbox: bubblewrap namespaces, a seccomp filter, rlimits and a cgroup.

Deny-all: a new network namespace (loopback only), no host files but read-only system
directories and the interpreter, a fresh size-limited tmpfs as scratch (and /tmp) per
execution, new PID/IPC/UTS namespaces, no capabilities, no new privileges, no nested
user namespaces. When we are root the code also runs as ``nobody`` on the host and in a
cgroup of its own.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import socket
from collections.abc import Awaitable, Callable, Mapping, Sequence

from autonomic.errors import SandboxError
from autonomic.sandbox.base import MiB, SandboxLimits
from autonomic.sandbox.cgroup import Cgroup
from autonomic.sandbox.confine import SANDBOX_UID, count_tasks, host_uid, prefix_argv
from autonomic.sandbox.egress import EgressPolicy, EgressProxy, EgressRequest
from autonomic.sandbox.guest import Launch, guest_command
from autonomic.sandbox.interpreter import Interpreter, check_reachable, find_interpreter
from autonomic.sandbox.runner import GuestSandbox
from autonomic.sandbox.seccomp import seccomp_filter

__all__ = ["BwrapSandbox", "bwrap_argv"]

SCRATCH = "/scratch"
ROOT_DIRS = ("bin", "sbin", "lib", "lib32", "lib64", "libx32")
"""Top-level system directories, mirrored as the host has them (symlinks into /usr or not)."""
ETC_FILES = ("/etc/alternatives", "/etc/ld.so.cache")
"""The only parts of /etc shown: what commands need to resolve themselves and libraries."""
EGRESS_SOCKET = "/run/egress.sock"
EGRESS_PORT = 3128
"""Where, inside, the egress proxy's socket is bound and relayed to (on loopback)."""
CGROUP_SLACK = 16 * MiB
"""Memory for bwrap's PID 1, on top of what the code and its tmpfs may use."""
BWRAP_PROCESSES = 1
"""bwrap's PID 1 lives in the cgroup too (its monitor process stays outside)."""


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
    command: Sequence[str],
    seccomp_fd: int | None = None,
    admission_fds: tuple[int, int] | None = None,
    binds: Sequence[str] = (),
    egress_socket: str | None = None,
) -> list[str]:
    """The bwrap command line that runs ``command``. Order matters: see the comments.

    ``admission_fds`` (info, block) make bwrap report its PID 1 and wait, mounts done,
    before it starts the guest: see ``Admission``. ``egress_socket`` is the host end of
    an egress proxy, bound in and named in the proxy variables.
    """
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
    argv += [
        "--proc", "/proc",
        # --dev's tmpfs has no size limit: make it read-only and give /dev/shm its own.
        "--dev", "/dev",
        "--remount-ro", "/dev",
        "--size", size, "--tmpfs", "/dev/shm",  # --size applies to the next --tmpfs
        "--size", size, "--tmpfs", "/tmp",
        "--size", size, "--tmpfs", SCRATCH,
    ]  # fmt: skip
    # After the tmpfs mounts, so that a bind under /tmp is not hidden by them.
    interpreter = [python.home] if python.home is not None else []
    for entry in (*interpreter, *binds):
        argv += ["--ro-bind", entry, entry]
    if egress_socket is not None:
        argv += ["--ro-bind", egress_socket, EGRESS_SOCKET]  # connect() needs no write access
    argv += [
        "--chdir", SCRATCH,
        "--clearenv",
        "--setenv", "PATH", path,
        "--setenv", "HOME", SCRATCH,
        "--setenv", "TMPDIR", "/tmp",
        "--setenv", "LANG", "C.UTF-8",
        "--setenv", "PYTHONDONTWRITEBYTECODE", "1",
    ]  # fmt: skip
    if egress_socket is not None:  # after --clearenv, which bwrap applies where it stands
        for name in ("http_proxy", "https_proxy", "HTTP_PROXY", "HTTPS_PROXY"):
            argv += ["--setenv", name, f"http://127.0.0.1:{EGRESS_PORT}"]
    if seccomp_fd is not None:
        argv += ["--seccomp", str(seccomp_fd)]
    if admission_fds is not None:
        argv += ["--info-fd", str(admission_fds[0]), "--block-fd", str(admission_fds[1])]
    # Last among the mounts: the root can take no new mount points once read-only.
    argv += ["--remount-ro", "/", "--", *command]
    return argv


class Admission:
    """Puts a starting sandbox into its cgroup while bwrap is still setting up its mounts.

    Joining a cgroup v1 waits for an RCU grace period (about 5 ms here), so instead of
    joining before exec, bwrap reports its PID 1 (``--info-fd``), the host moves that
    process into the cgroup from a thread, and only then lets it go on (``--block-fd``)
    to fork the guest, which is born inside the cgroup.
    """

    def __init__(self, cgroup: Cgroup) -> None:
        self._cgroup = cgroup
        self._info, info_child = socket.socketpair()
        self._block, block_child = socket.socketpair()
        self.child_fds = (info_child.detach(), block_child.detach())
        for sock in (self._info, self._block):
            sock.setblocking(False)

    async def __call__(self) -> None:
        loop = asyncio.get_running_loop()
        report = b""
        while b"}" not in report:
            chunk = await loop.sock_recv(self._info, 4096)
            if not chunk:
                return  # bwrap failed: the guest never gets ready, and stderr says why
            report += chunk
        try:
            pid = int(json.loads(report[: report.index(b"}") + 1])["child-pid"])
            await asyncio.to_thread(self._cgroup.adopt, pid)
        except (OSError, ValueError, KeyError, TypeError) as e:
            raise SandboxError(f"could not put the sandbox in its cgroup: {e!r}") from e
        await loop.sock_sendall(self._block, b"go")

    async def close(self) -> None:
        self._info.close()
        self._block.close()


class BwrapSandbox(GuestSandbox):
    """Bubblewrap-isolated executions (the default backend).

    ``python`` picks the interpreter (default: the system Python); ``binds`` are extra
    host paths shown read-only at the same place (a virtualenv, a data set).
    ``egress`` lists the hosts (``"host"`` for ports 80 and 443, or ``"host:port"``) the
    code may reach through an HTTP proxy, ``egress_resolve`` maps host names to the
    addresses the proxy connects to, and ``on_egress`` hears of every request, allowed
    or not. ``seccomp=False`` runs without the seccomp filter, for hosts without
    libseccomp.
    """

    def __init__(
        self,
        *,
        limits: SandboxLimits | None = None,
        warm: int = 2,
        python: str | None = None,
        binds: Sequence[str] = (),
        egress: Sequence[str] = (),
        egress_resolve: Mapping[str, str] | None = None,
        on_egress: Callable[[EgressRequest], None] | None = None,
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
        for path in self._binds:
            check_reachable(path, self._uid, "the bind")
        self._egress = EgressPolicy.of(egress, egress_resolve) if egress else None
        self._on_egress = on_egress
        self._seccomp = seccomp
        super().__init__("bwrap", limits, warm)

    @property
    def reaches_network(self) -> bool:
        return self._egress is not None

    async def _launch(self, limits: SandboxLimits) -> Launch:
        command = await guest_command(self._python.path)
        bpf = await seccomp_filter(inet=self.reaches_network) if self._seccomp else None
        cgroup = Cgroup.create(
            limits,
            extra_memory=3 * limits.scratch_bytes + CGROUP_SLACK,
            extra_processes=BWRAP_PROCESSES,
        )
        other_tasks = None if cgroup is not None else await count_tasks(self._uid or os.getuid())
        host, child = socket.socketpair()
        child_fds = [child.detach()]
        closers: list[Callable[[], Awaitable[None]]] = []
        admission = proxy = None
        try:
            if cgroup is not None:
                admission = Admission(cgroup)
                closers.append(admission.close)
                child_fds += admission.child_fds
            if self._egress is not None:
                proxy = EgressProxy(self._egress, self._on_egress, owner=self._uid)
                closers.append(proxy.close)
                check_reachable(os.path.dirname(await proxy.start()), self._uid, "the proxy")
            seccomp_fd = _pipe_holding(bpf) if bpf is not None else None
        except BaseException:
            host.close()
            for fd in child_fds:
                os.close(fd)
            for close in closers:
                await close()
            if cgroup is not None:
                await cgroup.remove()
            raise
        if seccomp_fd is not None:
            child_fds.append(seccomp_fd)
        argv = bwrap_argv(
            bwrap=self._bwrap,
            python=self._python,
            limits=limits,
            command=[*command, str(child_fds[0])],
            seccomp_fd=seccomp_fd,
            admission_fds=admission.child_fds if admission else None,
            binds=self._binds,
            egress_socket=proxy.path if proxy else None,
        )
        prefix, user = prefix_argv(self._uid)

        async def cleanup() -> None:
            for close in closers:
                await close()

        return Launch(
            argv=(*prefix, *argv),
            env={"PATH": os.defpath},
            control=host,
            child_fds=tuple(child_fds),
            user=user,
            cgroup=cgroup,
            admit=admission,
            other_tasks=other_tasks,
            relay=(EGRESS_SOCKET, EGRESS_PORT) if proxy else None,
            proxy=proxy,
            cleanup=cleanup,
        )


def _pipe_holding(data: bytes) -> int:
    """The read end of a pipe that holds ``data`` (a few hundred bytes: it fits at once)."""
    reader, writer = os.pipe()
    try:
        os.write(writer, data)
    finally:
        os.close(writer)
    return reader

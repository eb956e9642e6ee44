"""The seccomp filter bwrap installs before the code runs: kernel attack surface, denied.

Namespaces hide the host; seccomp shrinks what the code can ask the kernel for, which is
where container escapes usually live (new namespaces, mounts, bpf, io_uring, keyrings).
The BPF is compiled by libseccomp, which is packaged for the system Python only
(``python3-seccomp``), so it is built once per process by running that interpreter.
"""

from __future__ import annotations

import asyncio

from autonomic.errors import SandboxError

__all__ = ["SYSTEM_PYTHON", "seccomp_filter"]

SYSTEM_PYTHON = "/usr/bin/python3"

DENIED = (
    "ptrace", "process_vm_readv", "process_vm_writev",
    "mount", "umount2", "pivot_root", "unshare", "setns",
    "bpf", "perf_event_open", "userfaultfd",
    "keyctl", "add_key", "request_key",
    "io_uring_setup", "io_uring_enter", "io_uring_register",
    "open_by_handle_at", "name_to_handle_at",
    "kexec_load", "init_module", "finit_module", "delete_module",
    "reboot", "swapon", "swapoff", "syslog", "acct",
)  # fmt: skip
"""Syscalls that fail with EPERM. Each must be known to libseccomp."""

DENIED_IF_KNOWN = (
    "fsopen", "fsconfig", "fsmount", "fspick", "move_mount", "open_tree",
    "mount_setattr", "kexec_file_load", "quotactl_fd",
)  # fmt: skip
"""Newer syscalls, denied where the installed libseccomp knows them."""

NAMESPACE_FLAGS = (
    0x00020000, 0x02000000, 0x04000000, 0x08000000,
    0x10000000, 0x20000000, 0x40000000, 0x00000080,
)  # fmt: skip
"""CLONE_NEWNS, NEWCGROUP, NEWUTS, NEWIPC, NEWUSER, NEWPID, NEWNET, NEWTIME."""

_SCRIPT = """
import errno, sys
try:
    import seccomp
except ImportError:
    sys.exit(3)
f = seccomp.SyscallFilter(defaction=seccomp.ALLOW)
deny = seccomp.ERRNO(errno.EPERM)
for name in DENIED:
    f.add_rule(deny, name)
for name in DENIED_IF_KNOWN:
    try:
        f.add_rule(deny, name)
    except (RuntimeError, ValueError):
        pass
if FAMILIES == (AF_UNIX,):
    f.add_rule(deny, "socket", seccomp.Arg(0, seccomp.NE, AF_UNIX))
else:
    for family in range(AF_MAX):
        if family not in FAMILIES:
            f.add_rule(deny, "socket", seccomp.Arg(0, seccomp.EQ, family))
    f.add_rule(deny, "socket", seccomp.Arg(0, seccomp.GE, AF_MAX))
for flag in NAMESPACE_FLAGS:
    f.add_rule(deny, "clone", seccomp.Arg(0, seccomp.MASKED_EQ, flag, flag))
# clone3 takes its flags in memory a filter cannot read: make libc fall back to clone.
f.add_rule(seccomp.ERRNO(errno.ENOSYS), "clone3")
f.export_bpf(sys.stdout)
"""

AF_UNIX, AF_INET, AF_INET6 = 1, 2, 10
AF_MAX = 64
"""Above every address family Linux has (46 in 6.x): denied as a range."""

_compiled: dict[tuple[str, bool], bytes] = {}


async def seccomp_filter(python: str = SYSTEM_PYTHON, *, inet: bool = False) -> bytes:
    """The BPF program (compiled once per variant), or SandboxError saying how to get it.

    It denies the syscalls in ``DENIED`` (and ``DENIED_IF_KNOWN``), ``socket`` for any
    family but AF_UNIX (and AF_INET/AF_INET6 with ``inet``, for a sandbox whose only
    way out is its egress proxy), ``clone`` with namespace flags, and ``clone3``. Other
    architectures' syscall numbers are killed by libseccomp's default bad-arch action.
    """
    key = (python, inet)
    if key in _compiled:
        return _compiled[key]
    families = (AF_UNIX, AF_INET, AF_INET6) if inet else (AF_UNIX,)
    script = (
        f"DENIED = {DENIED!r}\nDENIED_IF_KNOWN = {DENIED_IF_KNOWN!r}\n"
        f"NAMESPACE_FLAGS = {NAMESPACE_FLAGS!r}\nAF_UNIX = {AF_UNIX}\nAF_MAX = {AF_MAX}\n"
        f"FAMILIES = {families!r}\n{_SCRIPT}"
    )
    try:
        process = await asyncio.create_subprocess_exec(
            python,
            "-I",
            "-c",
            script,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
    except OSError as e:
        raise _unavailable(f"{python} cannot run ({e.strerror})") from None
    bpf, error = await process.communicate()
    if process.returncode == 3:
        raise _unavailable(f"{python} has no seccomp module")
    if process.returncode != 0 or not bpf:
        raise _unavailable(f"libseccomp failed: {error.decode(errors='replace').strip()}")
    _compiled[key] = bpf
    return bpf


def _unavailable(why: str) -> SandboxError:
    return SandboxError(
        f"the sandbox's seccomp filter is unavailable: {why}. Install it with "
        "`apt-get install python3-seccomp`, or open the sandbox with seccomp=False "
        "to run without it (namespaces and limits still apply)"
    )

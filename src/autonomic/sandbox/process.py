"""The weak fallback: the guest as a plain child process, under rlimits and nothing else.

It shares the host's filesystem view, network and process table; only the limits, a
private working directory and (when we are root) the ``nobody`` uid stand between the
code and the machine. It exists for hosts where bubblewrap cannot be installed, and
says so loudly every time one is opened.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import socket
import tempfile
import warnings
from collections.abc import Awaitable, Callable

from autonomic.sandbox.base import SandboxLimits
from autonomic.sandbox.confine import count_tasks, host_uid, prefix_argv
from autonomic.sandbox.guest import Launch, guest_command
from autonomic.sandbox.interpreter import find_interpreter
from autonomic.sandbox.runner import GuestSandbox

__all__ = ["ProcessSandbox", "UnsafeSandboxWarning"]


class UnsafeSandboxWarning(UserWarning):
    """Code is about to run with no isolation beyond resource limits."""


def _make_dirs(uid: int | None) -> tuple[str, str, str]:
    base = tempfile.mkdtemp(prefix="autonomic-sandbox-")
    scratch, tmp = os.path.join(base, "scratch"), os.path.join(base, "tmp")
    for path in (scratch, tmp):
        os.mkdir(path, 0o700)
    if uid is not None:
        for path in (base, scratch, tmp):
            os.chown(path, uid, uid)
    return base, scratch, tmp


def _remover(path: str) -> Callable[[], Awaitable[None]]:
    async def remove() -> None:
        await asyncio.to_thread(shutil.rmtree, path, True)

    return remove


class ProcessSandbox(GuestSandbox):
    """Executions as plain child processes with rlimits: no namespaces, no seccomp.

    Opening one warns with ``UnsafeSandboxWarning``. Use it only for trusted code, or
    where nothing else is possible; ``open_sandbox("bwrap")`` is the real sandbox.
    """

    def __init__(
        self, *, limits: SandboxLimits | None = None, warm: int = 2, python: str | None = None
    ) -> None:
        warnings.warn(
            UnsafeSandboxWarning(
                "the process sandbox does NOT isolate code: it can read your files, reach "
                "the network and see your processes; only resource limits apply. Install "
                "bubblewrap (apt-get install bubblewrap) and use the bwrap backend"
            ),
            stacklevel=2,
        )
        self._uid = host_uid()
        self._python = find_interpreter(python, self._uid)
        super().__init__("process", limits, warm)

    @property
    def reaches_network(self) -> bool:
        return True

    async def _launch(self, limits: SandboxLimits) -> Launch:
        command = await guest_command(self._python.path)
        other_tasks = await count_tasks(self._uid or os.getuid())
        base, scratch, tmp = await asyncio.to_thread(_make_dirs, self._uid)
        prefix, user = prefix_argv(self._uid)
        host, child = socket.socketpair()
        fd = child.detach()
        env = {
            "PATH": f"{os.path.dirname(self._python.path)}:/usr/local/bin:/usr/bin:/bin",
            "HOME": scratch,
            "TMPDIR": tmp,
            "LANG": "C.UTF-8",
            "PYTHONDONTWRITEBYTECODE": "1",
        }
        return Launch(
            argv=(*prefix, *command, str(fd)),
            env=env,
            control=host,
            child_fds=(fd,),
            cwd=scratch,
            user=user,
            other_tasks=other_tasks,
            cleanup=_remover(base),
        )

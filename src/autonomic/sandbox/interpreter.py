"""Which Python runs sandboxed code, and what of the host it needs to see.

The default is the system Python, which lives in ``/usr`` and so needs no extra mount;
another interpreter's installation directory is bound read-only at its own path, so its
shared libraries and standard library resolve as they do on the host.
"""

from __future__ import annotations

import os
import stat
import sys
from dataclasses import dataclass

from autonomic.errors import ConfigError, SandboxError
from autonomic.sandbox.seccomp import SYSTEM_PYTHON

__all__ = ["Interpreter", "check_reachable", "find_interpreter"]

SYSTEM_DIR = "/usr/"


@dataclass(frozen=True, slots=True)
class Interpreter:
    """``path`` is the executable (the same inside the sandbox); ``home`` is what to bind."""

    path: str
    home: str | None


def _world_reachable(path: str) -> bool:
    """Whether a user who owns nothing can reach ``path`` (every directory on the way x)."""
    current = path
    while True:
        try:
            mode = os.stat(current).st_mode
        except OSError:
            return False
        if stat.S_ISDIR(mode) and not mode & stat.S_IXOTH:
            return False
        parent = os.path.dirname(current)
        if parent == current:
            return True
        current = parent


def check_reachable(path: str, uid: int | None, what: str) -> None:
    """ConfigError if ``path`` is missing; SandboxError if ``uid`` (when the sandbox
    switches to it) cannot reach it.

    bwrap resolves what it mounts as that uid: a path under ``/root`` or a 0700 home
    directory is out of its reach.
    """
    if not os.path.exists(path):
        raise ConfigError(f"{what} {path} does not exist")
    if uid is not None and not _world_reachable(path):
        raise SandboxError(
            f"the sandbox runs as uid {uid}, which cannot reach {what} {path}: a directory "
            "on its way is private. Use a path outside private directories, or run as a "
            "non-root user"
        )


def find_interpreter(python: str | None, uid: int | None) -> Interpreter:
    """Resolve ``python`` (default: the system Python, else this one) for a sandbox.

    ``uid`` is the host uid the code will have; when given, the interpreter must be
    reachable by it, which a Python under ``/root`` (pyenv, say) is not: pass the
    system Python (``/usr/bin/python3``) or one installed elsewhere.
    """
    if python is None:
        python = SYSTEM_PYTHON if os.access(SYSTEM_PYTHON, os.X_OK) else sys.executable
    path = os.path.realpath(python)
    if not os.access(path, os.X_OK):
        raise ConfigError(f"sandbox interpreter {python!r} is not an executable file")
    home = None if path.startswith(SYSTEM_DIR) else os.path.dirname(os.path.dirname(path))
    check_reachable(home or path, uid, "the interpreter")
    return Interpreter(path=path, home=home)

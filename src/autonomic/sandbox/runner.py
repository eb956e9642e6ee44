"""The engine the guest-based backends share: build the request, find a guest, run it.

A backend only says how to launch a guest (``_launch``); this class turns calls into
jobs, takes a warm guest from the pool when one is ready, and starts a cold one
otherwise.
"""

from __future__ import annotations

import abc
import asyncio
import os
from collections.abc import Sequence
from types import TracebackType
from typing import Self

from autonomic.errors import ConfigError, SandboxError
from autonomic.sandbox.base import FileInputs, SandboxLimits, SandboxResult
from autonomic.sandbox.guest import Guest, Launch
from autonomic.sandbox.pool import WarmPool
from autonomic.sandbox.wire import Job

__all__ = ["SHELL", "GuestSandbox"]

SHELL = "/bin/sh"


def _check_platform() -> None:
    """Guests are reaped through pidfds: Linux 5.3 or later."""
    try:
        os.close(os.pidfd_open(os.getpid()))
    except (AttributeError, OSError) as e:
        raise SandboxError("the sandbox needs Linux 5.3 or later (pidfd_open)") from e


class GuestSandbox(abc.ABC):
    """A sandbox that runs each execution in a fresh guest process.

    ``warm`` guests are kept started while the sandbox is open (``async with``); an
    execution takes one unless it asks for another ``scratch_bytes``.
    """

    def __init__(self, name: str, limits: SandboxLimits | None, warm: int) -> None:
        _check_platform()
        if warm < 0:
            raise ConfigError(f"warm must be >= 0, got {warm}")
        self._name = name
        self._limits = limits or SandboxLimits()
        self._pool = WarmPool(lambda: self._start(self._limits), warm) if warm else None
        self._open = False
        self._discarding: set[asyncio.Task[None]] = set()

    @property
    def name(self) -> str:
        return self._name

    @property
    def limits(self) -> SandboxLimits:
        return self._limits

    @property
    @abc.abstractmethod
    def reaches_network(self) -> bool:
        """Whether code in it can reach anything outside (see ``Sandbox``)."""

    @abc.abstractmethod
    async def _launch(self, limits: SandboxLimits) -> Launch:
        """Prepare one guest's confinement and command line."""

    async def _start(self, limits: SandboxLimits) -> Guest:
        return await Guest.start(await self._launch(limits))

    async def run_python(
        self,
        code: str,
        *,
        files: FileInputs | None = None,
        stdin: bytes | str = b"",
        limits: SandboxLimits | None = None,
    ) -> SandboxResult:
        """Run Python source as ``python -c`` would, in the scratch directory."""
        return await self._execute(Job.create(code=code, files=files, stdin=stdin), limits)

    async def run_command(
        self,
        command: str | Sequence[str],
        *,
        files: FileInputs | None = None,
        stdin: bytes | str = b"",
        limits: SandboxLimits | None = None,
    ) -> SandboxResult:
        """Run a shell command line (a ``str``) or an argv (a sequence) in the scratch dir."""
        argv = [SHELL, "-c", command] if isinstance(command, str) else list(command)
        return await self._execute(Job.create(argv=argv, files=files, stdin=stdin), limits)

    async def _execute(self, job: Job, limits: SandboxLimits | None) -> SandboxResult:
        limits = limits or self._limits
        guest = None
        # A warm guest takes any limits but the size of its tmpfs, fixed when it started.
        if self._pool is not None and limits.scratch_bytes == self._limits.scratch_bytes:
            guest = await self._pool.take()
        if guest is None:
            guest = await self._start(limits)
        try:
            return await guest.run(job, limits)
        finally:
            await self._dispose(guest)
            if self._pool is not None and self._open:
                self._pool.fill()

    async def _dispose(self, guest: Guest) -> None:
        """Reap a used guest: in the background while open (``aclose`` waits for it),
        so that the result does not wait for the teardown; else right away."""
        if self._open:
            task = asyncio.create_task(guest.discard())
            self._discarding.add(task)
            task.add_done_callback(self._discarding.discard)
        else:
            await asyncio.shield(guest.discard())

    async def warm_up(self) -> None:
        """Wait until the warm guests are started (raising why, if they cannot be).

        Call it once the sandbox is open, to take the start-up off the first executions.
        """
        if self._pool is not None and self._open:
            await self._pool.wait_full()

    async def aclose(self) -> None:
        """Destroy the warm guests and reap used ones. Later executions still run, cold."""
        self._open = False
        if self._pool is not None:
            await self._pool.aclose()
            self._pool = None
        await asyncio.gather(*self._discarding)

    async def __aenter__(self) -> Self:
        self._open = True
        if self._pool is not None:
            self._pool.fill()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self._name} {self._limits}>"

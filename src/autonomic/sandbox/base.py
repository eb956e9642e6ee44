"""The Sandbox protocol and the plain data that crosses it.

A sandbox runs untrusted code or a command under limits, in a fresh scratch directory,
and reports what happened: output, exit status, produced files, resource usage, and a
plain-words reason whenever a limit was hit. Backends live beside this file.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from types import TracebackType
from typing import Protocol, Self, runtime_checkable

from autonomic.errors import ConfigError, SandboxViolation
from autonomic.sandbox.egress import EgressRequest

__all__ = [
    "FileInputs",
    "KiB",
    "MiB",
    "ResourceUsage",
    "Sandbox",
    "SandboxLimits",
    "SandboxResult",
    "format_bytes",
]

FileInputs = Mapping[str, bytes | str]
"""Files to place in the scratch directory before the run: relative path → content."""

KiB = 1024
MiB = 1024 * KiB


def format_bytes(size: int) -> str:
    """``1048576`` → ``"1 MiB"``: how sizes read in violation messages."""
    for unit, scale in (("GiB", 1024 * MiB), ("MiB", MiB), ("KiB", KiB)):
        if size >= scale:
            return f"{size / scale:g} {unit}"
    return f"{size} bytes"


@dataclass(frozen=True, slots=True)
class SandboxLimits:
    """What one execution may use. Sizes are in bytes, times in seconds.

    ``timeout`` is wall-clock time, enforced by the host; ``cpu_seconds`` catches busy
    loops even when the host is slow, and counts every process of the execution
    together. ``processes`` counts threads too. ``output_bytes`` caps stdout and stderr
    each; ``files_bytes`` caps the produced files sent back. ``scratch_bytes`` bounds
    each writable place (``/scratch`` and ``/tmp``). ``egress_connections`` caps the
    connections open at once through the egress proxy (each holds host descriptors).
    """

    timeout: float = 30.0
    cpu_seconds: int = 30
    memory_bytes: int = 512 * MiB
    file_size_bytes: int = 64 * MiB
    scratch_bytes: int = 64 * MiB
    open_files: int = 256
    processes: int = 64
    output_bytes: int = 1 * MiB
    files_bytes: int = 16 * MiB
    egress_connections: int = 16

    def __post_init__(self) -> None:
        if not self.timeout > 0:
            raise ConfigError(f"sandbox timeout must be positive, got {self.timeout}")
        for name in (
            "cpu_seconds",
            "memory_bytes",
            "file_size_bytes",
            "scratch_bytes",
            "open_files",
            "processes",
            "output_bytes",
            "files_bytes",
            "egress_connections",
        ):
            value = getattr(self, name)
            if not isinstance(value, int) or value <= 0:
                raise ConfigError(f"sandbox limit {name} must be a positive int, got {value!r}")


@dataclass(frozen=True, slots=True)
class ResourceUsage:
    """What the execution used. ``peak_memory_bytes`` is 0 when it could not be measured."""

    wall_seconds: float
    cpu_seconds: float
    peak_memory_bytes: int


@dataclass(frozen=True, slots=True)
class SandboxResult:
    """The outcome of one execution.

    ``exit_code`` reads like a shell's: 128 + N when the code was killed by signal N.
    ``violations`` says, in words, each limit that was hit ("timeout after 2s",
    "memory limit 256 MiB exceeded", "stdout truncated at 1 MiB"...).
    """

    exit_code: int
    stdout: str
    stderr: str
    usage: ResourceUsage
    files: Mapping[str, bytes] = field(default_factory=dict)
    violations: tuple[str, ...] = ()
    egress: tuple[EgressRequest, ...] = ()
    """Requests the code made through the egress proxy, allowed or refused."""

    @property
    def ok(self) -> bool:
        return self.exit_code == 0 and not self.violations

    @property
    def violation(self) -> str | None:
        """All violations in one line, or ``None`` when no limit was hit."""
        return "; ".join(self.violations) or None

    def check(self) -> SandboxResult:
        """Return self, or raise ``SandboxViolation`` when a limit was hit."""
        if self.violations:
            raise SandboxViolation(self.violation or "")
        return self


@runtime_checkable
class Sandbox(Protocol):
    """Runs code in isolation. Each execution is fresh: nothing survives into the next.

    ``limits`` overrides the sandbox's default limits for one execution. Use it as an
    async context manager so that pre-started (warm) executions are cleaned up.
    """

    @property
    def name(self) -> str: ...

    @property
    def limits(self) -> SandboxLimits: ...

    @property
    def reaches_network(self) -> bool:
        """Whether code in it can reach anything outside (egress allowed, or no isolation):
        then running it again is not free of effects."""
        ...

    async def run_python(
        self,
        code: str,
        *,
        files: FileInputs | None = None,
        stdin: bytes | str = b"",
        limits: SandboxLimits | None = None,
    ) -> SandboxResult:
        """Run Python source as ``python -c`` would, in the scratch directory."""
        ...

    async def run_command(
        self,
        command: str | Sequence[str],
        *,
        files: FileInputs | None = None,
        stdin: bytes | str = b"",
        limits: SandboxLimits | None = None,
    ) -> SandboxResult:
        """Run a shell command line (a ``str``) or an argv (a sequence) in the scratch dir."""
        ...

    async def aclose(self) -> None: ...

    async def __aenter__(self) -> Self: ...

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None: ...

"""What host and guest say to each other over the control socket.

The request goes in as one ``marshal`` blob after its size (8 bytes): the host writes
it, so the guest may trust it. The report comes back as flat records that the host
parses with bounds checks and never executes, because the code in the sandbox can write
anything there:

    tag (1 byte) | name length (u32) | data length (u32) | name | data

``F`` a produced file; ``O`` a file omitted for size (data: its size); ``V`` a limit the
guest saw hit (name: its category); ``E``, last, the exit status (name) and the CPU
seconds and peak memory bytes the guest measured (data: two numbers). The end record
lets the host answer as soon as the code is done, before the process tree is torn down.
"""

from __future__ import annotations

import marshal
import posixpath
from collections.abc import Sequence
from dataclasses import dataclass, field

from autonomic.errors import ConfigError
from autonomic.sandbox.base import FileInputs

__all__ = ["GuestReport", "Job", "ReportReader", "encode_request"]

_HEADER = 9


@dataclass(slots=True)
class GuestReport:
    """What the guest said after running. ``status`` is None until the end record."""

    files: dict[str, bytes] = field(default_factory=dict)
    omitted: dict[str, int] = field(default_factory=dict)
    categories: list[str] = field(default_factory=list)
    status: int | None = None
    cpu_seconds: float = 0.0
    peak_memory_bytes: int = 0


def _clean_name(name: str) -> str:
    """A relative path inside the scratch directory, or ConfigError."""
    normal = posixpath.normpath(name)
    if (
        not name
        or "\0" in name
        or posixpath.isabs(normal)
        or normal == "."
        or normal.split("/", 1)[0] == ".."
    ):
        raise ConfigError(f"input file {name!r} must be a relative path inside the scratch dir")
    return normal


def _as_bytes(value: bytes | str) -> bytes:
    return value.encode() if isinstance(value, str) else bytes(value)


@dataclass(frozen=True, slots=True)
class Job:
    """What to run: Python source (``code``) or a command (``argv``), and its inputs."""

    code: str | None = None
    argv: tuple[str, ...] = ()
    files: dict[str, bytes] = field(default_factory=dict)
    stdin: bytes = b""

    @classmethod
    def create(
        cls,
        *,
        code: str | None = None,
        argv: Sequence[str] = (),
        files: FileInputs | None = None,
        stdin: bytes | str = b"",
    ) -> Job:
        """Validate and normalise: file names must stay inside the scratch directory."""
        if code is None and not argv:
            raise ConfigError("a sandbox command needs at least one argument")
        return cls(
            code=code,
            argv=tuple(str(arg) for arg in argv),
            files={_clean_name(name): _as_bytes(data) for name, data in (files or {}).items()},
            stdin=_as_bytes(stdin),
        )


def encode_request(
    job: Job,
    files_bytes: int,
    rlimits: Sequence[tuple[str, int, int]],
    relay: tuple[str, int] | None = None,
) -> bytes:
    """The request for one execution, with the rlimits the guest must set on itself, and
    where to relay proxy connections (socket path, loopback port) when it has egress."""
    request: dict[str, object] = {
        "files": job.files,
        "stdin": job.stdin,
        "files_bytes": files_bytes,
        "rlimits": list(rlimits),
    }
    if relay is not None:
        request["relay"] = relay
    if job.code is not None:
        request["code"] = job.code
    else:
        request["argv"] = list(job.argv)
    blob = marshal.dumps(request)
    return len(blob).to_bytes(8, "big") + blob


class ReportReader:
    """Parses records as they arrive; stops at the end record or past ``limit`` bytes."""

    def __init__(self, limit: int) -> None:
        self.report = GuestReport()
        self._limit = limit
        self._buffer = bytearray()
        self._received = 0
        self.rejected = False
        """Too much came, or a malformed end record: the rest is not to be trusted."""

    @property
    def complete(self) -> bool:
        return self.report.status is not None

    @property
    def finished(self) -> bool:
        """Nothing more will be read: the end record came, or the report was rejected."""
        return self.complete or self.rejected

    def feed(self, data: bytes) -> None:
        if self.finished:
            return
        self._received += len(data)
        if self._received > self._limit:
            self.rejected = True
            return
        self._buffer += data
        while not self.complete and len(self._buffer) >= _HEADER:
            name_end = _HEADER + int.from_bytes(self._buffer[1:5], "big")
            end = name_end + int.from_bytes(self._buffer[5:9], "big")
            if end > len(self._buffer):
                return
            tag = bytes(self._buffer[:1])
            name = self._buffer[_HEADER:name_end].decode("utf-8", "replace")
            self._take(tag, name, bytes(self._buffer[name_end:end]))
            del self._buffer[:end]

    def _take(self, tag: bytes, name: str, body: bytes) -> None:
        report = self.report
        if tag == b"F":
            report.files[name] = body
        elif tag == b"O" and body.isdigit():
            report.omitted[name] = int(body)
        elif tag == b"V":
            report.categories.append(name)
        elif tag == b"E":
            cpu, _, peak = body.decode("ascii", "replace").partition(" ")
            try:
                status, cpu_seconds, peak_bytes = int(name), float(cpu), int(peak)
            except ValueError:
                status = -1
            if not 0 <= status <= 255:
                self.rejected = True
                return
            report.status, report.cpu_seconds, report.peak_memory_bytes = (
                status,
                cpu_seconds,
                peak_bytes,
            )

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

A file's name is returned only if it is a plain relative path inside the scratch
directory that prints as one line (see ``name_problem``); the host keeps to the files
budget itself, whatever the guest claims.
"""

from __future__ import annotations

import marshal
import math
import posixpath
import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass, field

from autonomic.errors import ConfigError
from autonomic.sandbox.base import FileInputs

__all__ = ["GuestReport", "Job", "ReportReader", "encode_request", "name_problem"]

_HEADER = 9
REPORT_OVERHEAD = 1 << 20
"""Bytes allowed in a report beyond the produced files (record headers, names)."""
MAX_NAME = 4096
MAX_PART = 255
"""Longest path and path component, in bytes, as Linux allows them."""
_INVISIBLE = frozenset("\u061c\u200e\u200f\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069")
"""Direction marks and overrides: they make a name print as another."""


@dataclass(slots=True)
class GuestReport:
    """What the guest said after running. ``status`` is None until the end record."""

    files: dict[str, bytes] = field(default_factory=dict)
    omitted: dict[str, int] = field(default_factory=dict)
    refused: dict[str, str] = field(default_factory=dict)
    """Files not returned for their names: the name as ``ascii`` shows it → why."""
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


def name_problem(name: str) -> str | None:
    """Why ``name`` may not be returned as a produced file, or None when it is a clean
    relative path: no absolute path, no ``..``, ``.`` or empty part, nothing that prints
    as a line break or reorders the text, within Linux's lengths."""
    if not name:
        return "an empty name"
    if any(unicodedata.category(c) in ("Cc", "Zl", "Zp") for c in name):
        return "a control character"
    if not _INVISIBLE.isdisjoint(name):
        return "a text direction character"
    if name.startswith("/"):
        return "an absolute path"
    parts = name.split("/")
    if ".." in parts:
        return "a '..' part"
    if "" in parts or "." in parts:
        return "an empty or '.' part"
    if len(name.encode()) > MAX_NAME or any(len(part.encode()) > MAX_PART for part in parts):
        return "too long"
    return None


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
    """Parses records as they arrive; stops at the end record, or past ``files_bytes``
    of produced files and ``REPORT_OVERHEAD`` bytes more."""

    def __init__(self, files_bytes: int) -> None:
        self.report = GuestReport()
        self._files_left = files_bytes
        self._limit = files_bytes + REPORT_OVERHEAD
        self._dirs: set[str] = set()
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
                # a record that could never arrive within the limit is refused at once
                self.rejected = self._received + end - len(self._buffer) > self._limit
                return
            tag = bytes(self._buffer[:1])
            name = self._buffer[_HEADER:name_end].decode("utf-8", "surrogateescape")
            self._take(tag, name, bytes(self._buffer[name_end:end]))
            del self._buffer[:end]

    def _take(self, tag: bytes, name: str, body: bytes) -> None:
        report = self.report
        if tag == b"F":
            if self._accept_name(name):
                if len(body) > self._files_left:
                    report.omitted[name] = len(body)
                else:
                    self._files_left -= len(body)
                    report.files[name] = body
        elif tag == b"O" and body.isdigit():
            if self._accept_name(name):
                report.omitted[name] = int(body)
        elif tag == b"V":
            report.categories.append(name)
        elif tag == b"E":
            self._end(name, body)

    def _accept_name(self, name: str) -> bool:
        """Whether a produced file may be returned under ``name``; if not, why goes to
        ``refused``. A name comes once, and is never also a directory of another."""
        try:
            name.encode()
        except UnicodeEncodeError:
            problem: str | None = "not valid UTF-8"
        else:
            problem = name_problem(name)
        report = self.report
        if problem is None:
            parents = []
            parent = posixpath.dirname(name)
            while parent:
                parents.append(parent)
                parent = posixpath.dirname(parent)
            if name in report.files or name in report.omitted or name in self._dirs:
                problem = "reported twice, or also as a directory"
            elif any(p in report.files or p in report.omitted for p in parents):
                problem = "under a name reported as a file"
            else:
                self._dirs.update(parents)
        if problem is not None:
            report.refused[ascii(name)] = problem
        return problem is None

    def _end(self, name: str, body: bytes) -> None:
        """The end record: exit status, and the guest's own CPU seconds and peak bytes."""
        report = self.report
        cpu, _, peak = body.decode("ascii", "replace").partition(" ")
        try:
            status, cpu_seconds, peak_bytes = int(name), float(cpu), int(peak)
        except ValueError:
            status = -1
        else:
            if not (math.isfinite(cpu_seconds) and cpu_seconds >= 0 and peak_bytes >= 0):
                status = -1
        if not 0 <= status <= 255:
            self.rejected = True
            return
        report.status, report.cpu_seconds, report.peak_memory_bytes = (
            status,
            cpu_seconds,
            peak_bytes,
        )

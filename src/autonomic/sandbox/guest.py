"""The host's handle on one guest process: start it idle, give it one request, reap it.

An execution ends when the guest sends its end record (the usual case: the result is
returned at once, before the process tree is torn down) or when the guest dies without
one (killed by a limit, or by its own hand). A timeout, or the tree's CPU time passing
its budget, kills its process group, and bwrap's ``--die-with-parent`` and the PID
namespace take the rest down. The guest is reaped through a pidfd, so no thread or
signal handler is involved. Every guest is used once; ``discard`` kills whatever it left
running and frees what it held.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import resource
import signal
import socket
import subprocess
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from importlib import resources
from typing import Any

from autonomic.errors import SandboxError
from autonomic.sandbox.base import ResourceUsage, SandboxLimits, SandboxResult
from autonomic.sandbox.cgroup import Cgroup, CgroupStats
from autonomic.sandbox.confine import rlimits
from autonomic.sandbox.cputime import CpuWatch, tree_cpu_seconds, tree_pids
from autonomic.sandbox.egress import EgressProxy
from autonomic.sandbox.verdict import Evidence, violations
from autonomic.sandbox.wire import Job, ReportReader, encode_request

__all__ = ["GUEST_BOOT", "Guest", "Launch", "guest_command"]

GUEST_SOURCE = resources.files("autonomic.sandbox").joinpath("_inside.py").read_text()
GUEST_BOOT = "import marshal,sys;exec(marshal.loads(bytes.fromhex(sys.argv[1])))"
"""How a guest starts: from bytecode its own interpreter compiled, passed as hex."""
_COMPILE = (
    "import marshal,sys;sys.stdout.buffer.write(marshal.dumps("
    "compile(sys.stdin.buffer.read(),'<sandbox guest>','exec')))"
)
READY = b"R"
START_TIMEOUT = 30.0
"""Seconds a guest may take to start (bwrap set-up and the interpreter's start-up)."""
DRAIN_GRACE = 2.0
"""Seconds to wait for output after a guest died, for writers it left behind."""
_CHUNK = 1 << 16

Exit = tuple[int, resource.struct_rusage | None]


_bytecode: dict[str, str] = {}


async def guest_command(python: str) -> list[str]:
    """The command line that starts the guest program under ``python``, but for its last
    argument, the fd of its control socket.

    It carries the program as bytecode, compiled once per interpreter by that
    interpreter: parsing the source would cost every cold start a few milliseconds.
    """
    if python not in _bytecode:
        try:
            process = await asyncio.create_subprocess_exec(
                python,
                "-I",
                "-c",
                _COMPILE,
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
            )
        except OSError as e:
            raise SandboxError(f"the sandbox's interpreter {python} cannot run: {e}") from e
        code, error = await process.communicate(GUEST_SOURCE.encode())
        if process.returncode != 0 or not code:
            message = error.decode(errors="replace").strip() or f"exit {process.returncode}"
            raise SandboxError(f"the sandbox's interpreter {python} cannot run: {message}")
        _bytecode[python] = code.hex()
    return [python, "-I", "-c", GUEST_BOOT, _bytecode[python]]


@dataclass(frozen=True, slots=True)
class Launch:
    """Everything needed to start one guest; a backend builds it, ``Guest.start`` uses it.

    ``child_fds`` are inherited by the guest (its end of ``control``, a seccomp filter)
    and closed here once it is started. ``user`` is a uid for Popen to switch to (only
    when no ``setpriv`` could do it in ``argv``). ``admit`` is awaited once the process
    is spawned, before it may become ready (bwrap's cgroup admission). ``other_tasks``
    is set when no cgroup bounds the processes (see ``confine.rlimits``). ``relay`` is
    where the guest relays connections to its egress ``proxy``. ``cleanup`` runs on
    release.
    """

    argv: tuple[str, ...]
    env: dict[str, str]
    control: socket.socket
    child_fds: tuple[int, ...]
    cwd: str | None = None
    user: int | None = None
    cgroup: Cgroup | None = None
    admit: Callable[[], Awaitable[None]] | None = None
    other_tasks: int | None = None
    relay: tuple[str, int] | None = None
    proxy: EgressProxy | None = None
    cleanup: Callable[[], Awaitable[None]] | None = None

    async def release(self) -> None:
        self.control.close()
        if self.cgroup is not None:
            await self.cgroup.remove()
        if self.cleanup is not None:
            await self.cleanup()


class _Capture:
    """Keeps the first ``limit`` bytes written to a pipe, and reads (and drops) the rest."""

    def __init__(self, fd: int, limit: int) -> None:
        self._fd = fd
        self._limit = limit
        self._chunks: list[bytes] = []
        self._size = 0
        self.truncated = False
        self._loop = asyncio.get_running_loop()
        self.done: asyncio.Future[None] = self._loop.create_future()
        os.set_blocking(fd, False)
        self._loop.add_reader(fd, self._read)

    def _read(self) -> bool:
        """One read; False when the pipe is empty for now or closed."""
        if self.done.done():
            return False
        try:
            data = os.read(self._fd, _CHUNK)
        except BlockingIOError:
            return False
        except OSError:
            data = b""
        if not data:
            self._finish()
            return False
        room = self._limit - self._size
        if len(data) > room:
            self.truncated = True
            data = data[: max(room, 0)]
        self._chunks.append(data)
        self._size += len(data)
        return True

    def drain(self) -> None:
        """Read what the pipe holds now (bounded: a writer may still be running)."""
        for _ in range(64):
            if not self._read():
                return

    def _finish(self) -> None:
        if not self.done.done():
            self._loop.remove_reader(self._fd)
            self.done.set_result(None)

    def close(self) -> None:
        self._finish()
        os.close(self._fd)

    def text(self) -> str:
        return b"".join(self._chunks).decode("utf-8", "replace")


def _popen(launch: Launch, stdout: int, stderr: int) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        launch.argv,
        stdin=subprocess.DEVNULL,
        stdout=stdout,
        stderr=stderr,
        env=launch.env,
        cwd=launch.cwd,
        pass_fds=launch.child_fds,
        start_new_session=True,
        user=launch.user,
        group=launch.user,
        extra_groups=() if launch.user is not None else None,
    )


async def _spawn(launch: Launch, stdout: int, stderr: int) -> subprocess.Popen[bytes]:
    """Spawn in a worker thread, so that the event loop never waits on the exec."""
    loop = asyncio.get_running_loop()
    spawning = loop.run_in_executor(None, _popen, launch, stdout, stderr)
    try:
        return await asyncio.shield(spawning)
    except asyncio.CancelledError:
        with contextlib.suppress(OSError, subprocess.SubprocessError):
            process = await spawning
            os.killpg(process.pid, signal.SIGKILL)
            await loop.run_in_executor(None, process.wait)
        raise
    except (OSError, subprocess.SubprocessError) as e:
        raise SandboxError(f"could not start the sandbox: {e}") from e


class Guest:
    """One started, single-use guest. ``start`` returns it idle and ready for ``run``."""

    def __init__(
        self, launch: Launch, process: subprocess.Popen[bytes], stdout: int, stderr: int
    ) -> None:
        self._launch = launch
        self._process = process
        self._pipes: tuple[int, int] | None = (stdout, stderr)
        self._released = False
        loop = asyncio.get_running_loop()
        self._exit: asyncio.Future[Exit] = loop.create_future()
        self._pidfd = os.pidfd_open(process.pid)
        loop.add_reader(self._pidfd, self._reap)

    @classmethod
    async def start(cls, launch: Launch) -> Guest:
        """Start a guest and wait until it is ready; SandboxError if it cannot start."""
        launch.control.setblocking(False)
        out_r, out_w = os.pipe()
        err_r, err_w = os.pipe()
        try:
            process = await _spawn(launch, out_w, err_w)
        except BaseException:
            os.close(out_r)
            os.close(err_r)
            await asyncio.shield(launch.release())
            raise
        finally:
            for fd in (out_w, err_w, *launch.child_fds):
                os.close(fd)
        guest = cls(launch, process, out_r, err_r)
        try:
            async with asyncio.timeout(START_TIMEOUT):
                if launch.admit is not None:
                    await launch.admit()
                ready = await asyncio.get_running_loop().sock_recv(launch.control, 1)
        except TimeoutError:
            await guest.discard()
            raise SandboxError(f"the sandbox did not start within {START_TIMEOUT:g}s") from None
        except BaseException:
            await asyncio.shield(guest.discard())
            raise
        if ready != READY:
            raise SandboxError(f"the sandbox failed to start: {await guest._failure()}")
        return guest

    @property
    def alive(self) -> bool:
        return not self._exit.done()

    def _reap(self) -> None:
        asyncio.get_running_loop().remove_reader(self._pidfd)
        os.close(self._pidfd)
        try:
            _, status, usage = os.wait4(self._process.pid, 0)
        except ChildProcessError:  # reaped by someone else: the status is lost
            code, usage = 255, None
        else:
            code = os.waitstatus_to_exitcode(status)
        self._process.returncode = code
        self._exit.set_result((code if code >= 0 else 128 - code, usage))

    def _kill(self) -> None:
        """SIGKILL the guest's process group, and its cgroup or else every descendant it
        has (what it left behind, too, unless it was orphaned)."""
        tree = tree_pids(self._process.pid) if self._launch.cgroup is None and self.alive else []
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self._process.pid, signal.SIGKILL)
        for pid in tree[1:]:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, signal.SIGKILL)
        if self._launch.cgroup is not None:
            self._launch.cgroup.kill()

    async def discard(self) -> None:
        """Kill the guest if it runs, reap it, and free what it held. Idempotent."""
        if self._released:
            return
        self._released = True
        self._kill()
        await self._exit
        for fd in self._pipes or ():
            os.close(fd)
        self._pipes = None
        await self._launch.release()

    async def _failure(self) -> str:
        """Why the guest died before it was ready: what it (or bwrap) wrote to stderr."""
        self._kill()
        await self._exit
        message = ""
        if self._pipes is not None:
            os.set_blocking(self._pipes[1], False)
            with contextlib.suppress(OSError):
                message = os.read(self._pipes[1], _CHUNK).decode(errors="replace").strip()
        await self.discard()
        return message or f"exit status {self._exit.result()[0]}"

    async def run(self, job: Job, limits: SandboxLimits) -> SandboxResult:
        """Run the job, wait (at most ``limits.timeout``) and describe the outcome.

        ``discard`` the guest afterwards: that kills whatever the code left running.
        """
        if self._released or self._pipes is None:
            raise SandboxError("this sandbox guest was already used")
        if self._launch.cgroup is not None:
            try:
                self._launch.cgroup.configure(limits)
            except OSError as e:
                raise SandboxError(f"could not set the sandbox's cgroup limits: {e}") from e
        proxy = self._launch.proxy
        if proxy is not None:
            proxy.max_connections = limits.egress_connections
        request = encode_request(
            job,
            limits.files_bytes,
            rlimits(limits, self._launch.other_tasks),
            self._launch.relay,
        )
        pipes, self._pipes = self._pipes, None
        stdout = _Capture(pipes[0], limits.output_bytes)
        stderr = _Capture(pipes[1], limits.output_bytes)
        reader = ReportReader(limits.files_bytes)
        reading = asyncio.ensure_future(self._read_report(reader))
        cpu_watch = CpuWatch(self._cpu_meter(), limits.cpu_seconds, self._kill)
        try:
            started = time.monotonic()
            timed_out = await self._wait(request, limits, reader, reading, cpu_watch)
            wall = time.monotonic() - started
            cpu_watch.sample()
            stats = self._launch.cgroup.stats() if self._launch.cgroup is not None else None
            if not reader.complete:
                self._kill()
                endings: list[asyncio.Future[Any]] = [stdout.done, stderr.done, reading]
                await asyncio.wait(endings, timeout=DRAIN_GRACE)
            stdout.drain()
            stderr.drain()
            exit_code, cpu, peak = await self._outcome(reader, stats, cpu_watch.seen)
        finally:
            stdout.close()
            stderr.close()
            reading.cancel()
            await asyncio.wait([reading])
        report = reader.report
        evidence = Evidence(
            timed_out=timed_out,
            exit_code=exit_code,
            cpu_seconds=cpu,
            cpu_exceeded=cpu_watch.exceeded,
            categories=report.categories,
            cgroup=stats,
            stdout_truncated=stdout.truncated,
            stderr_truncated=stderr.truncated,
            omitted_files=report.omitted,
            refused_files=report.refused,
            egress_refused=proxy.refused_connections if proxy is not None else 0,
            egress_requests_refused=proxy.refused_requests if proxy is not None else 0,
            report_refused=reader.rejected,
        )
        return SandboxResult(
            exit_code=exit_code,
            stdout=stdout.text(),
            stderr=stderr.text(),
            usage=ResourceUsage(wall_seconds=wall, cpu_seconds=cpu, peak_memory_bytes=peak),
            files=report.files,
            violations=violations(limits, evidence),
            egress=tuple(proxy.requests) if proxy is not None else (),
        )

    def _cpu_meter(self) -> Callable[[], float | None]:
        """How to measure the tree's CPU time: the cgroup's counter, else ``/proc``."""
        cgroup = self._launch.cgroup
        if cgroup is not None and cgroup.measures_cpu:
            return cgroup.cpu_seconds
        pid = self._process.pid
        return lambda: tree_cpu_seconds(pid)

    async def _wait(
        self,
        request: bytes,
        limits: SandboxLimits,
        reader: ReportReader,
        reading: asyncio.Future[None],
        cpu_watch: CpuWatch,
    ) -> bool:
        """Send the request; wait for the end record or the exit, while ``cpu_watch``
        guards the CPU budget. True when it timed out."""
        watching = asyncio.ensure_future(cpu_watch.run())
        try:
            async with asyncio.timeout(limits.timeout):
                await self._send(request)
                either: list[asyncio.Future[Any]] = [reading, self._exit]
                await asyncio.wait(either, return_when=asyncio.FIRST_COMPLETED)
                if reader.rejected:
                    self._kill()  # nothing it says from now on counts: do not wait for it
                if not reader.complete:
                    await asyncio.shield(self._exit)
        except TimeoutError:
            return True
        finally:
            watching.cancel()
            await asyncio.wait([watching])
        return False

    async def _outcome(
        self, reader: ReportReader, stats: CgroupStats | None, tree_cpu: float
    ) -> tuple[int, float, int]:
        """Exit status, CPU seconds and peak memory: from the end record if one came, else
        from ``wait4``; the CPU time of the whole tree as the host measured it
        (``tree_cpu``), and its peak memory from the cgroup, where there is one."""
        report = reader.report
        if report.status is not None:
            code, cpu, peak = report.status, report.cpu_seconds, report.peak_memory_bytes
        else:
            code, usage = await self._exit
            cpu = usage.ru_utime + usage.ru_stime if usage is not None else 0.0
            peak = usage.ru_maxrss * 1024 if usage is not None else 0
        if stats is not None:
            peak = stats.peak_memory_bytes or peak
        return code, max(cpu, tree_cpu), peak

    async def _send(self, request: bytes) -> None:
        loop = asyncio.get_running_loop()
        try:
            await loop.sock_sendall(self._launch.control, request)
        except OSError:
            return  # the guest is gone before reading it all; its exit status says why

    async def _read_report(self, reader: ReportReader) -> None:
        loop = asyncio.get_running_loop()
        while not reader.finished:
            chunk = await loop.sock_recv(self._launch.control, _CHUNK)
            if not chunk:
                return
            reader.feed(chunk)

"""Fixtures for the sandbox tests: sandboxes, and a check that nothing outlives a test."""

from __future__ import annotations

import asyncio
import os
import shutil
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from autonomic.sandbox import BwrapSandbox, MiB, SandboxLimits
from autonomic.sandbox.cgroup import CONTROLLERS
from autonomic.sandbox.cgroup import ROOT as CGROUP_ROOT
from autonomic.sandbox.confine import SANDBOX_UID
from autonomic.sandbox.guest import GUEST_BOOT

requires_bwrap = pytest.mark.skipif(
    shutil.which("bwrap") is None, reason="bubblewrap is not installed (apt-get install bubblewrap)"
)
requires_root = pytest.mark.skipif(
    os.geteuid() != 0, reason="needs root: cgroups and the nobody uid on the host"
)

LIMITS = SandboxLimits(timeout=20, cpu_seconds=10, memory_bytes=256 * MiB, scratch_bytes=16 * MiB)


def _sandbox_cmdline(pid: str) -> str | None:
    """The command line of ``pid`` if it is a sandbox's process (bwrap's, or the guest's
    and what it forked), else None."""
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
        uid = Path(f"/proc/{pid}").stat().st_uid
    except OSError:
        return None
    if GUEST_BOOT in cmdline and (uid == SANDBOX_UID or os.geteuid() != 0):
        return cmdline
    return None


def _parent(pid: str) -> str:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return "0"
    return stat[stat.rindex(")") + 2 :].split()[1]


def _ours(pid: str) -> bool:
    """Whether a sandbox process was started by this test process, or was orphaned (a
    leak, whoever left it): other test processes on the machine run sandboxes too."""
    while True:
        pid = _parent(pid)
        if _sandbox_cmdline(pid) is None:
            return pid in (str(os.getpid()), "1", "0")


def _sandbox_processes() -> list[str]:
    """Processes on the host that belong to a sandbox started by this test process."""
    found = []
    for entry in Path("/proc").iterdir():
        cmdline = _sandbox_cmdline(entry.name) if entry.name.isdigit() else None
        if cmdline is not None and _ours(entry.name):
            found.append(f"{entry.name}: {cmdline[:80]}")
    return found


def _our_cgroups() -> list[Path]:
    prefix = f"{os.getpid()}-"
    return [
        path
        for controller in CONTROLLERS
        if (CGROUP_ROOT / controller / "autonomic").is_dir()
        for path in (CGROUP_ROOT / controller / "autonomic").iterdir()
        if path.name.startswith(prefix)
    ]


@pytest.fixture
async def no_leaks() -> AsyncIterator[None]:
    """After the test: no sandbox process it started is left, no cgroup left behind."""
    before = set(_sandbox_processes())
    yield
    for _ in range(50):
        left = set(_sandbox_processes()) - before
        if not left and not _our_cgroups():
            return
        await asyncio.sleep(0.05)
    assert not left, f"sandbox processes outlived the test: {left}"
    assert not _our_cgroups(), "cgroups outlived the test"


@pytest.fixture
async def sandbox(no_leaks: None) -> AsyncIterator[BwrapSandbox]:
    """The default backend, cold: every execution starts its own guest."""
    async with BwrapSandbox(limits=LIMITS, warm=0) as box:
        yield box


@pytest.fixture
async def pooled(no_leaks: None) -> AsyncIterator[BwrapSandbox]:
    """The default backend with a warm pool of two, already filled."""
    async with BwrapSandbox(limits=LIMITS, warm=2) as box:
        await box.warm_up()
        yield box

"""What a sandbox execution gives back: output, status, files, usage, and its settings."""

from __future__ import annotations

import asyncio
import os
import shutil
import stat
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from autonomic.errors import ConfigError, SandboxError, SandboxViolation
from autonomic.sandbox import (
    BACKENDS,
    BwrapSandbox,
    MiB,
    ProcessSandbox,
    Sandbox,
    SandboxLimits,
    SandboxResult,
    UnsafeSandboxWarning,
    cgroup,
    open_sandbox,
)
from autonomic.sandbox.base import ResourceUsage, format_bytes
from autonomic.sandbox.cgroup import ROOT as CGROUP_ROOT
from autonomic.sandbox.interpreter import find_interpreter
from autonomic.sandbox.seccomp import seccomp_filter

from .conftest import LIMITS, requires_bwrap, requires_root

AGE = "import os\nprint(float(open('/proc/uptime').read().split()[0]) - int(open('/proc/self/stat').read().split(')')[1].split()[19]) / os.sysconf('SC_CLK_TCK'))"  # noqa: E501
"""Python that prints how many seconds ago its own process started."""


@requires_bwrap
async def test_output_and_status(sandbox: BwrapSandbox) -> None:
    result = await sandbox.run_python("import sys\nprint('out')\nprint('err', file=sys.stderr)")
    assert (result.exit_code, result.stdout, result.stderr) == (0, "out\n", "err\n")
    assert result.ok and result.violation is None and result.check() is result
    assert result.usage.wall_seconds > 0 and result.usage.cpu_seconds > 0
    assert result.usage.peak_memory_bytes > 1 * MiB


@requires_bwrap
async def test_exit_codes_and_tracebacks(sandbox: BwrapSandbox) -> None:
    exited = await sandbox.run_python("import sys; sys.exit(3)")
    assert exited.exit_code == 3 and not exited.ok and exited.violations == ()
    raised = await sandbox.run_python("def f():\n    1 / 0\nf()")
    assert raised.exit_code == 1
    assert raised.stderr.splitlines()[-1] == "ZeroDivisionError: division by zero"
    assert 'File "<string>", line 2, in f' in raised.stderr
    assert "_run_python" not in raised.stderr  # the guest's own frames are hidden
    message = await sandbox.run_python("raise SystemExit('bye')")
    assert (message.exit_code, message.stderr) == (1, "bye\n")
    syntax = await sandbox.run_python("def (")
    assert syntax.exit_code == 1 and "SyntaxError" in syntax.stderr


@requires_bwrap
async def test_code_sees_a_normal_main_module(sandbox: BwrapSandbox) -> None:
    result = await sandbox.run_python(
        "import sys, os, threading, time, atexit\n"
        "atexit.register(lambda: print('atexit ran'))\n"
        "print(__name__, sys.argv, os.getcwd(), os.environ['HOME'])\n"
        "threading.Thread(target=lambda: (time.sleep(0.2), print('thread ran'))).start()\n"
    )
    assert result.stdout.splitlines() == [
        "__main__ ['-c'] /scratch /scratch",
        "thread ran",
        "atexit ran",
    ]


@requires_bwrap
async def test_stdin(sandbox: BwrapSandbox) -> None:
    result = await sandbox.run_python("import sys; print(sys.stdin.read().upper())", stdin="hi")
    assert result.stdout == "HI\n"
    piped = await sandbox.run_command("wc -c", stdin=b"x" * 200_000)
    assert piped.stdout.strip() == "200000"


@requires_bwrap
async def test_files_in_and_out(sandbox: BwrapSandbox) -> None:
    result = await sandbox.run_python(
        "import helper\n"
        "data = open('data/in.txt').read()\n"
        "open('data/out.txt', 'w').write(data.upper())\n"
        "open('changed.txt', 'a').write('!')\n"
        "open('blob.bin', 'wb').write(bytes(range(256)))\n"
        "import os; os.makedirs('empty/dir')\n",
        files={
            "data/in.txt": "abc",
            "changed.txt": b"was",
            "helper.py": "print('imported')",
        },
    )
    assert result.stdout == "imported\n"
    assert dict(result.files) == {
        "blob.bin": bytes(range(256)),
        "changed.txt": b"was!",
        "data/out.txt": b"ABC",
    }


@requires_bwrap
async def test_produced_files_are_capped(sandbox: BwrapSandbox) -> None:
    result = await sandbox.run_python(
        "open('a.txt', 'w').write('a' * 1000)\nopen('b.txt', 'w').write('b' * 3000)",
        limits=SandboxLimits(files_bytes=2000),
    )
    assert dict(result.files) == {"a.txt": b"a" * 1000}
    assert result.violations == ("produced files truncated at 1.95312 KiB (b.txt)",)
    with pytest.raises(SandboxViolation, match="produced files truncated"):
        result.check()


@requires_bwrap
async def test_commands(sandbox: BwrapSandbox) -> None:
    shell = await sandbox.run_command("echo $((6 * 7)) > answer; cat answer; ls /")
    assert shell.stdout.splitlines()[0] == "42"
    assert set(shell.stdout.splitlines()[1:]) >= {"bin", "scratch", "tmp", "usr"}
    assert shell.files == {"answer": b"42\n"}
    argv = await sandbox.run_command(["python3", "-c", "import sys; print(sys.argv[1:])", "a b"])
    assert argv.stdout == "['a b']\n"
    missing = await sandbox.run_command(["no-such-command"])
    assert missing.exit_code == 127 and "no-such-command" in missing.stderr
    failing = await sandbox.run_command("exit 4")
    assert failing.exit_code == 4
    killed = await sandbox.run_command("kill -9 $$")
    assert killed.exit_code == 128 + 9
    tools = await sandbox.run_command("awk 'BEGIN { print 1 + 1 }' && sed --version | head -1")
    assert tools.ok and tools.stdout.startswith("2\n")
    with pytest.raises(ConfigError, match="at least one argument"):
        await sandbox.run_command([])


@requires_bwrap
async def test_per_execution_limits_override_the_defaults(pooled: BwrapSandbox) -> None:
    """A warm guest, started under the defaults, takes the limits of the execution."""
    small = SandboxLimits(memory_bytes=64 * MiB, scratch_bytes=LIMITS.scratch_bytes)
    result = await pooled.run_python("x = bytearray(100 * 2**20)", limits=small)
    assert result.violations == ("memory limit 64 MiB exceeded",)
    default = await pooled.run_python("x = bytearray(100 * 2**20)")
    assert default.ok


@requires_bwrap
async def test_warm_pool_serves_prestarted_guests(pooled: BwrapSandbox) -> None:
    await asyncio.sleep(1.0)
    warm = await pooled.run_python(AGE)
    assert float(warm.stdout) >= 0.9  # this process was started before it was asked for
    results = await asyncio.gather(*(pooled.run_python(f"print({i})") for i in range(5)))
    assert [r.stdout for r in results] == [f"{i}\n" for i in range(5)]


@requires_bwrap
async def test_cold_executions_start_their_own_guest(sandbox: BwrapSandbox) -> None:
    await asyncio.sleep(1.0)
    cold = await sandbox.run_python(AGE)
    assert float(cold.stdout) < 0.9


@requires_bwrap
async def test_a_closed_sandbox_still_runs_cold(no_leaks: None) -> None:
    box = BwrapSandbox(limits=LIMITS, warm=2)
    async with box:
        await box.warm_up()
    await box.aclose()
    assert (await box.run_python("print(1)")).stdout == "1\n"


@requires_bwrap
async def test_start_failures_are_sandbox_errors(no_leaks: None) -> None:
    with pytest.raises(ConfigError, match=r"the bind /nonexistent does not exist"):
        BwrapSandbox(binds=["/nonexistent"], warm=0)
    with pytest.raises(SandboxError, match="interpreter /usr/bin/false cannot run: exit 1"):
        await BwrapSandbox(python="/bin/false", warm=0).run_python("1")
    async with BwrapSandbox(python="/bin/false", warm=1) as box:
        with pytest.raises(SandboxError, match="cannot run"):
            await box.warm_up()


@pytest.fixture
def shared_data() -> Iterator[Path]:
    """A directory anyone may read (pytest's tmp_path is private to root)."""
    with tempfile.TemporaryDirectory(dir="/tmp") as folder:
        data = Path(folder)
        data.chmod(0o755)
        (data / "table.csv").write_text("a,b\n")
        yield data


@requires_bwrap
async def test_extra_read_only_binds(no_leaks: None, shared_data: Path) -> None:
    async with BwrapSandbox(limits=LIMITS, warm=0, binds=[str(shared_data)]) as box:
        result = await box.run_python(
            f"print(open('{shared_data}/table.csv').read().strip())\nopen('{shared_data}/new', 'w')"
        )
    assert result.stdout == "a,b\n" and "Read-only file system" in result.stderr


@requires_bwrap
@requires_root
def test_private_binds_are_refused(tmp_path: Path) -> None:
    with pytest.raises(SandboxError, match=r"uid 65534, which cannot reach the bind"):
        BwrapSandbox(binds=[str(tmp_path)], warm=0)


def test_limits_are_validated() -> None:
    assert SandboxLimits().timeout == 30.0
    with pytest.raises(ConfigError, match="timeout must be positive"):
        SandboxLimits(timeout=0)
    with pytest.raises(ConfigError, match="memory_bytes must be a positive int"):
        SandboxLimits(memory_bytes=-1)
    with pytest.raises(ConfigError, match="processes must be a positive int"):
        SandboxLimits(processes=1.5)  # type: ignore[arg-type]


def test_sizes_read_as_words() -> None:
    assert [format_bytes(n) for n in (512, 2048, 3 * MiB, 1536 * MiB)] == [
        "512 bytes",
        "2 KiB",
        "3 MiB",
        "1.5 GiB",
    ]


def test_result_check() -> None:
    usage = ResourceUsage(wall_seconds=1, cpu_seconds=1, peak_memory_bytes=1)
    hit = SandboxResult(0, "", "", usage, violations=("timeout after 1s", "stdout truncated"))
    assert hit.violation == "timeout after 1s; stdout truncated"
    with pytest.raises(SandboxViolation, match="timeout after 1s; stdout truncated"):
        hit.check()


@requires_bwrap
def test_open_sandbox_by_name() -> None:
    assert sorted(BACKENDS) == ["bwrap", "process"]
    for name in ("bwrap", "bwrap://"):
        box = open_sandbox(name, warm=0)
        assert isinstance(box, BwrapSandbox) and isinstance(box, Sandbox)
        assert box.name == "bwrap"
    with pytest.raises(
        ConfigError, match=r"unknown sandbox backend 'gvisor'; known backends: bwrap, process"
    ):
        open_sandbox("gvisor")
    with pytest.raises(ConfigError, match="warm must be >= 0"):
        open_sandbox("bwrap", warm=-1)


def test_missing_bubblewrap_says_how_to_install_it(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", "/nonexistent")
    with pytest.raises(
        SandboxError, match=r"apt-get install bubblewrap.*open_sandbox\(\"process\"\)"
    ):
        open_sandbox("bwrap")


async def test_process_backend_warns_and_runs(tmp_path: Path, no_leaks: None) -> None:
    with pytest.warns(UnsafeSandboxWarning, match="does NOT isolate"):
        box = open_sandbox("process", limits=LIMITS, warm=1)
    assert isinstance(box, ProcessSandbox)
    async with box:
        result = await box.run_python(
            "import os\nopen('out.txt', 'w').write(open('in.txt').read() * 2)\nprint(os.getuid())",
            files={"in.txt": "ab"},
        )
        assert result.files == {"out.txt": b"abab"}
        assert int(result.stdout) == (65534 if os.geteuid() == 0 else os.getuid())
        timed = await box.run_python("import time; time.sleep(60)", limits=SandboxLimits(timeout=1))
        assert timed.violations == ("timeout after 1s",)
        memory = await box.run_python(
            "x = bytearray(200 * 2**20)", limits=SandboxLimits(memory_bytes=64 * MiB)
        )
        assert memory.violations == ("memory limit 64 MiB exceeded",)


async def test_seccomp_unavailable_says_how_to_get_it() -> None:
    with pytest.raises(SandboxError, match=r"apt-get install python3-seccomp.*seccomp=False"):
        await seccomp_filter("/nonexistent/python3")
    with pytest.raises(SandboxError, match="has no seccomp module"):
        await seccomp_filter(sys.executable)


def test_private_interpreters_are_refused_for_nobody(tmp_path: Path) -> None:
    private = tmp_path / "home" / "bin"
    private.mkdir(parents=True)
    python = private / "python3"
    shutil.copy("/bin/true", python)
    (tmp_path / "home").chmod(0o700)
    with pytest.raises(SandboxError, match=r"cannot reach the interpreter .*home: a dir"):
        find_interpreter(str(python), 65534)
    assert find_interpreter(str(python), None).home == str(tmp_path / "home")
    with pytest.raises(ConfigError, match="not an executable"):
        find_interpreter(str(tmp_path / "missing"), None)
    assert stat.S_IMODE((tmp_path / "home").stat().st_mode) == 0o700


@requires_root
async def test_cgroups_left_by_dead_processes_are_swept() -> None:
    stale = CGROUP_ROOT / "pids" / "autonomic" / "999999999-gone"  # above any pid_max
    stale.mkdir(parents=True)
    cgroup._sweep_stale.cache_clear()
    made = cgroup.Cgroup.create(LIMITS)
    assert made is not None
    await made.remove()
    assert not stale.exists()

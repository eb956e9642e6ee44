"""The escape suite: code that tries to get out of the default sandbox, and must not.

Each isolation attempt prints ``ESCAPED: ...`` if it gets anywhere and ends with
``contained``; the test also checks the host side (listeners that must stay untouched,
a process that must stay alive). Each limit attempt must be stopped with its reason in
words. Network attempts only ever target loopback.
"""

from __future__ import annotations

import asyncio
import os
import secrets
import socket
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from autonomic.errors import ConfigError
from autonomic.sandbox import BwrapSandbox, KiB, MiB, SandboxLimits
from autonomic.sandbox.confine import SANDBOX_UID
from autonomic.sandbox.guest import GUEST_BOOT

from .conftest import LIMITS, requires_bwrap, requires_root

pytestmark = requires_bwrap

PRELUDE = r'''
import ctypes, errno, os, platform, socket, subprocess, sys

def denied(what, action, *errnos):
    """The action must fail with an OSError (with one of ``errnos``, if given)."""
    try:
        action()
    except OSError as e:
        if errnos and e.errno not in errnos:
            print(f"ESCAPED? {what} failed oddly: {e!r}")
        return
    print(f"ESCAPED: {what} worked")

libc = ctypes.CDLL(None, use_errno=True)
libc.syscall.restype = ctypes.c_long

NUMBERS = {
    "x86_64": dict(ptrace=101, mount=165, umount2=166, unshare=272, setns=308, bpf=321,
        perf_event_open=298, keyctl=250, add_key=248, userfaultfd=323, io_uring_setup=425,
        open_by_handle_at=304, process_vm_readv=310, pivot_root=155, fsopen=430,
        clone=56, clone3=435),
    "aarch64": dict(ptrace=117, mount=40, umount2=39, unshare=97, setns=268, bpf=280,
        perf_event_open=241, keyctl=219, add_key=217, userfaultfd=282, io_uring_setup=425,
        open_by_handle_at=265, process_vm_readv=270, pivot_root=41, fsopen=430,
        clone=220, clone3=435),
}[platform.machine()]

def command_fails(what, argv):
    if subprocess.run(argv, capture_output=True).returncode == 0:
        print(f"ESCAPED: {what} worked")

def syscall_denied(name, *args, expect=errno.EPERM):
    ctypes.set_errno(0)
    result = libc.syscall(NUMBERS[name], *[ctypes.c_long(a) for a in args])
    if result == 0 and name == "clone":
        os._exit(0)  # a child was created: the filter failed
    if result != -1 or ctypes.get_errno() != expect:
        print(f"ESCAPED: {name} returned {result}, errno {ctypes.get_errno()}")
'''

ATTEMPTS = {
    "read /etc/shadow": "denied('read /etc/shadow', lambda: open('/etc/shadow').read())",
    "list /root": "denied('list /root', lambda: os.listdir('/root'))",
    "list /home": "denied('list /home', lambda: os.listdir('/home'))",
    "read the host working dir": """
denied('list the host cwd', lambda: os.listdir('@CWD@'))
denied('read pyproject', lambda: open('@CWD@/pyproject.toml').read())
""",
    "read the store file": "denied('read the store', lambda: open('@STORE@', 'rb').read())",
    "host environment and secrets": """
import glob
for path in glob.glob('/proc/*/environ'):
    try:
        data = open(path, 'rb').read()
    except OSError:
        continue
    if b'@SECRET@' in data:
        print('ESCAPED: the secret is in', path)
if '@SECRET@' in str(os.environ):
    print('ESCAPED: the secret is in os.environ')
""",
    "inherited file descriptors": """
for fd in os.listdir('/proc/self/fd'):
    try:
        target = os.readlink(f'/proc/self/fd/{fd}')
    except OSError:
        continue
    if not target.startswith(('pipe:', 'socket:', 'anon_inode:', '/dev/null', '/proc/')):
        print('ESCAPED: inherited', fd, target)
""",
    "/proc/1/root and /sys": """
for path in ('/proc/1/root/etc/shadow', '/proc/1/root@CWD@', '/sys/fs/cgroup', '/sys'):
    if os.path.exists(path):
        print('ESCAPED: visible', path)
""",
    "write /usr": "denied('write /usr', lambda: open('/usr/evil', 'w'), errno.EROFS)",
    "write /": "denied('write /', lambda: open('/evil', 'w'), errno.EROFS)",
    "write /etc": "denied('write /etc', lambda: open('/etc/evil', 'w'))",
    "write /dev": "denied('write /dev', lambda: open('/dev/evil', 'w'), errno.EROFS)",
    "write /proc/sys": """
denied('write hostname', lambda: open('/proc/sys/kernel/hostname', 'w').write('x'))
denied('sysrq', lambda: open('/proc/sysrq-trigger', 'w').write('h'))
""",
    "hard link a system file": """
denied('hard link', lambda: os.link('/usr/bin/env', 'env-link'), errno.EXDEV, errno.EPERM)
""",
    "connect to a host loopback listener": """
denied('tcp to host', lambda: socket.create_connection(('127.0.0.1', @PORT@), timeout=2))
""",
    "only loopback, no route": """
interfaces = [line.split(':')[0].strip() for line in open('/proc/net/dev').readlines()[2:]]
if interfaces != ['lo']:
    print('ESCAPED: interfaces', interfaces)
routes = open('/proc/net/route').read().splitlines()[1:]
if routes:
    print('ESCAPED: routes', routes)
if os.path.exists('/proc/net/ipv6_route'):
    devices = {line.split()[-1] for line in open('/proc/net/ipv6_route') if line.strip()}
    if devices - {'lo'}:
        print('ESCAPED: ipv6 routes through', devices)
""",
    "no resolver configuration": """
for path in ('/etc/resolv.conf', '/etc/hosts', '/etc/nsswitch.conf', '/run', '/var'):
    if os.path.exists(path):
        print('ESCAPED: visible', path)
""",
    "raw, packet and netlink sockets": """
for family, kind in ((socket.AF_INET, socket.SOCK_RAW), (socket.AF_PACKET, socket.SOCK_RAW),
                     (socket.AF_NETLINK, socket.SOCK_RAW), (socket.AF_INET6, socket.SOCK_DGRAM)):
    denied(f'socket {family}', lambda: socket.socket(family, kind), errno.EPERM)
""",
    "host abstract unix socket": """
def connect():
    s = socket.socket(socket.AF_UNIX)
    s.connect('\\0@ABSTRACT@')
denied('abstract unix socket', connect, errno.ECONNREFUSED)
""",
    "host unix socket path": """
def connect():
    s = socket.socket(socket.AF_UNIX)
    s.connect('@UNIX@')
denied('unix socket path', connect, errno.ENOENT)
""",
    "ptrace": """
syscall_denied('ptrace', 0, 0, 0, 0)
syscall_denied('process_vm_readv', 1, 0, 0, 0, 0, 0)
""",
    "mount": """
syscall_denied('mount', 0, 0, 0, 0, 0)
syscall_denied('umount2', 0, 0)
syscall_denied('pivot_root', 0, 0)
syscall_denied('fsopen', 0, 0)
command_fails('mount command', ['mount', '-t', 'tmpfs', 'x', '/tmp'])
""",
    "new namespaces": """
for flag in (0x10000000, 0x40000000, 0x00020000, 0x20000000):
    syscall_denied('unshare', flag)
    syscall_denied('clone', flag | 17, 0, 0, 0, 0)
syscall_denied('clone3', 0, 0, expect=errno.ENOSYS)
syscall_denied('setns', os.open('/proc/self/ns/net', os.O_RDONLY), 0)
command_fails('unshare -U', ['unshare', '-U', 'true'])
command_fails('unshare -n', ['unshare', '-n', 'true'])
""",
    "kernel interfaces": """
syscall_denied('bpf', 0, 0, 0)
syscall_denied('perf_event_open', 0, 0, -1, -1, 0)
syscall_denied('userfaultfd', 0)
syscall_denied('io_uring_setup', 1, 0)
syscall_denied('keyctl', 0, 0, 0, 0, 0)
syscall_denied('add_key', 0, 0, 0, 0, 0)
syscall_denied('open_by_handle_at', 0, 0, 0)
""",
    "privileges": """
status = dict(line.split(':', 1) for line in open('/proc/self/status').read().splitlines())
for key, value in (('CapEff', '0000000000000000'), ('CapPrm', '0000000000000000'),
                   ('CapBnd', '0000000000000000'), ('NoNewPrivs', '1'), ('Seccomp', '2')):
    if status[key].strip() != value:
        print('ESCAPED:', key, status[key].strip())
if os.getuid() != 65534 or os.geteuid() != 65534:
    print('ESCAPED: uid', os.getuid())
denied('chroot', lambda: os.chroot('/tmp'))
denied('setuid 0', lambda: os.setuid(0))
""",
    "setuid binaries": """
import stat
for name in ('su', 'mount', 'passwd', 'newgrp', 'chfn', 'gpasswd'):
    path = '/usr/bin/' + name
    if os.path.exists(path) and os.stat(path).st_mode & stat.S_ISUID:
        run = subprocess.run([path, '--help'], capture_output=True)
mounts = [line.split() for line in open('/proc/self/mountinfo')]
usr = [m for m in mounts if m[4] == '/usr']
if not usr or 'nosuid' not in usr[0][5]:
    print('ESCAPED: /usr is not nosuid', usr)
out = subprocess.run(['su', '-c', 'id -u'], capture_output=True, text=True, input='')
if out.stdout.strip() == '0':
    print('ESCAPED: su gave root')
""",
    "signals to host processes": """
denied('signal the host', lambda: os.kill(@SLEEPER@, 9), errno.ESRCH)
subprocess.run(['kill', '-9', '-1'], capture_output=True)
""",
    "see host processes": """
pids = [p for p in os.listdir('/proc') if p.isdigit()]
if len(pids) > 10:
    print('ESCAPED: sees', len(pids), 'processes')
for pid in pids:
    try:
        if b'pytest' in open(f'/proc/{pid}/cmdline', 'rb').read():
            print('ESCAPED: sees pytest as', pid)
    except OSError:
        pass
if socket.gethostname() != 'sandbox':
    print('ESCAPED: hostname', socket.gethostname())
""",
    "devices": """
for name in ('mem', 'kmem', 'port', 'kmsg', 'sda', 'vda', 'nvme0', 'fuse', 'net/tun'):
    if os.path.exists('/dev/' + name):
        print('ESCAPED: /dev/' + name)
""",
}


@dataclass
class Host:
    """What the host exposes that the sandbox must not reach."""

    port: int
    listener: socket.socket
    abstract: str
    abstract_listener: socket.socket
    unix: str
    unix_listener: socket.socket
    store: Path
    secret: str
    sleeper: subprocess.Popen[bytes]

    def fill(self, code: str) -> str:
        for key, value in (
            ("@PORT@", self.port),
            ("@ABSTRACT@", self.abstract),
            ("@UNIX@", self.unix),
            ("@STORE@", self.store),
            ("@SECRET@", self.secret),
            ("@SLEEPER@", self.sleeper.pid),
            ("@CWD@", os.getcwd()),
        ):
            code = code.replace(key, str(value))
        return code

    def untouched(self) -> None:
        for listener in (self.listener, self.abstract_listener, self.unix_listener):
            with pytest.raises(BlockingIOError):
                listener.accept()
        assert self.sleeper.poll() is None, "a host process was killed from the sandbox"


@pytest.fixture
def host(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Host]:
    secret = secrets.token_hex(16)
    monkeypatch.setenv("AUTONOMIC_TEST_SECRET", secret)
    store = tmp_path / "runs.db"
    store.write_bytes(f"the store {secret}".encode())
    listener = socket.create_server(("127.0.0.1", 0))
    abstract = f"autonomic-test-{secret}"
    abstract_listener = socket.socket(socket.AF_UNIX)
    abstract_listener.bind(f"\0{abstract}")
    unix_listener = socket.socket(socket.AF_UNIX)
    unix_listener.bind(str(tmp_path / "host.sock"))
    for sock in (listener, abstract_listener, unix_listener):
        sock.listen()
        sock.setblocking(False)
    as_nobody = SANDBOX_UID if os.geteuid() == 0 else None  # the sandbox's uid on the host
    sleeper = subprocess.Popen(["sleep", "300"], user=as_nobody)
    with store.open("rb"):  # held open, like a running store: it must not be inherited
        try:
            yield Host(
                port=listener.getsockname()[1],
                listener=listener,
                abstract=abstract,
                abstract_listener=abstract_listener,
                unix=str(tmp_path / "host.sock"),
                unix_listener=unix_listener,
                store=store,
                secret=secret,
                sleeper=sleeper,
            )
        finally:
            sleeper.kill()
            sleeper.wait()
            for sock in (listener, abstract_listener, unix_listener):
                sock.close()


@pytest.mark.parametrize("attempt", list(ATTEMPTS))
async def test_isolation_holds(sandbox: BwrapSandbox, host: Host, attempt: str) -> None:
    result = await sandbox.run_python(
        PRELUDE + host.fill(ATTEMPTS[attempt]) + "\nprint('contained')"
    )
    assert "ESCAPED" not in result.stdout, result.stdout
    if attempt != "signals to host processes":  # kill -1 takes the sandbox itself down
        assert result.stdout.strip().endswith("contained"), (result.stdout, result.stderr)
    host.untouched()


async def test_namespaces_hold_even_without_seccomp(host: Host, no_leaks: None) -> None:
    """With the filter off, the namespaces alone keep the host's loopback away, and
    bwrap's --disable-userns still forbids new user namespaces."""
    code = """
denied('tcp', lambda: socket.create_connection(('127.0.0.1', @PORT@)), errno.ECONNREFUSED)
command_fails('unshare -U', ['unshare', '-U', 'true'])
command_fails('unshare -Ur', ['unshare', '-Ur', 'true'])
print(open('/proc/self/status').read().count('Seccomp:\\t0'))
"""
    async with BwrapSandbox(limits=LIMITS, warm=0, seccomp=False) as box:
        result = await box.run_python(PRELUDE + host.fill(code))
    assert result.stdout.split() == ["1"], result
    host.untouched()


async def test_symlinks_out_of_scratch_are_not_followed(sandbox: BwrapSandbox) -> None:
    result = await sandbox.run_python(
        "import os\n"
        "os.symlink('/etc/shadow', 'shadow')\n"
        "os.symlink('/usr/lib/os-release', 'os-release')\n"
        "os.symlink('/proc/self/root/..', 'up')\n"
        "os.symlink('/usr', 'usr-dir')\n"
        "open('real.txt', 'w').write('mine')\n"
    )
    assert result.ok, result
    assert dict(result.files) == {"real.txt": b"mine"}


@pytest.mark.parametrize("name", ["../escape.txt", "/etc/evil", "a/../../b", "", "."])
async def test_input_files_cannot_point_outside_scratch(sandbox: BwrapSandbox, name: str) -> None:
    with pytest.raises(ConfigError, match="inside the scratch dir"):
        await sandbox.run_python("pass", files={name: "x"})


LEFTOVER = """
import os, subprocess
seen = [p for p in ('/scratch/mark', '/tmp/mark', '/dev/shm/mark') if os.path.exists(p)]
procs = [open(f'/proc/{p}/cmdline', 'rb').read() for p in os.listdir('/proc') if p.isdigit()]
print('SEEN', seen, [c for c in procs if b'sleep' in c])
for path in ('/scratch/mark', '/tmp/mark', '/dev/shm/mark'):
    open(path, 'w').write('left behind')
subprocess.Popen(['sleep', '300'], start_new_session=True)
os.environ['LEFT'] = 'behind'
"""


async def test_nothing_survives_into_the_next_execution(sandbox: BwrapSandbox) -> None:
    for _ in range(2):
        result = await sandbox.run_python(LEFTOVER)
        assert result.stdout.startswith("SEEN [] []"), result


async def test_nothing_survives_through_the_warm_pool(pooled: BwrapSandbox) -> None:
    for _ in range(5):  # more than the pool holds: guests are replaced, never reused
        result = await pooled.run_python(LEFTOVER)
        assert result.stdout.startswith("SEEN [] []"), result


@dataclass(frozen=True)
class LimitAttempt:
    code: str
    limits: SandboxLimits
    reason: str
    needs_root: bool = False


FORK_BOMB = """
import os
while True:
    try:
        os.fork()
    except OSError:
        pass
"""

LIMIT_ATTEMPTS = {
    "fork bomb": LimitAttempt(
        FORK_BOMB, SandboxLimits(timeout=3, processes=16), "process limit 16 reached", True
    ),
    "shell fork bomb": LimitAttempt(
        "import subprocess; subprocess.run(['sh', '-c', 'b() { b | b & }; b; sleep 3'])",
        SandboxLimits(timeout=5, processes=16),
        "process limit 16 reached",
        True,
    ),
    "memory bomb": LimitAttempt(
        "x = []\nwhile True: x.append(bytearray(8 * 2**20))",
        SandboxLimits(memory_bytes=128 * MiB),
        "memory limit 128 MiB exceeded",
    ),
    "memory bomb in many processes": LimitAttempt(
        "import subprocess, sys\n"
        "eat = 'x = bytearray(90 * 2**20); import time; time.sleep(1)'\n"
        "for p in [subprocess.Popen([sys.executable, '-c', eat]) for _ in range(6)]:\n"
        "    p.wait()\n",
        SandboxLimits(memory_bytes=128 * MiB, scratch_bytes=4 * MiB),
        "memory limit 128 MiB exceeded",
        True,
    ),
    "cpu spin": LimitAttempt(
        "while True: pass", SandboxLimits(cpu_seconds=1), "cpu time limit 1s exceeded"
    ),
    "cpu spin ignoring SIGXCPU": LimitAttempt(
        "import signal\nsignal.signal(signal.SIGXCPU, signal.SIG_IGN)\nwhile True: pass",
        SandboxLimits(cpu_seconds=1),
        "cpu time limit 1s exceeded",
    ),
    "sleep forever": LimitAttempt(
        "import time; time.sleep(10**6)", SandboxLimits(timeout=1), "timeout after 1s"
    ),
    "sleep forever in a shell": LimitAttempt(
        "import subprocess; subprocess.run(['sleep', '1000'])",
        SandboxLimits(timeout=1),
        "timeout after 1s",
    ),
    "huge stdout": LimitAttempt(
        "import sys\nfor _ in range(200): sys.stdout.write('x' * 65536)",
        SandboxLimits(output_bytes=64 * KiB),
        "stdout truncated at 64 KiB",
    ),
    "endless stderr": LimitAttempt(
        "import sys\nwhile True: sys.stderr.write('y' * 65536)",
        SandboxLimits(output_bytes=64 * KiB, timeout=2),
        "stderr truncated at 64 KiB",
    ),
    "fill the disk": LimitAttempt(
        "i = 0\nwhile True:\n    open(f'f{i}', 'wb').write(b'z' * 2**20); i += 1",
        SandboxLimits(scratch_bytes=8 * MiB),
        "scratch space limit 8 MiB exceeded",
    ),
    "fill /tmp": LimitAttempt(
        "f = open('/tmp/big', 'wb')\nwhile True: f.write(b'z' * 2**20)",
        SandboxLimits(scratch_bytes=8 * MiB),
        "scratch space limit 8 MiB exceeded",
    ),
    "one huge file": LimitAttempt(
        "open('big', 'wb').write(b'z' * 4 * 2**20)",
        SandboxLimits(file_size_bytes=1 * MiB),
        "file size limit 1 MiB exceeded",
    ),
    "huge file from a shell": LimitAttempt(
        "import subprocess, sys\n"
        "sys.exit(subprocess.run(['sh', '-c', 'head -c 4000000 /dev/zero > big']).returncode)",
        SandboxLimits(file_size_bytes=1 * MiB),
        "file size limit 1 MiB exceeded",
    ),
    "exhaust file descriptors": LimitAttempt(
        "fs = [open('/dev/null') for _ in range(10000)]",
        SandboxLimits(open_files=64),
        "open files limit 64 reached",
    ),
}


@pytest.mark.parametrize("attempt", list(LIMIT_ATTEMPTS))
async def test_limits_stop_it_and_say_why(sandbox: BwrapSandbox, attempt: str) -> None:
    case = LIMIT_ATTEMPTS[attempt]
    if case.needs_root and os.geteuid() != 0:
        pytest.skip("needs root: the cgroup counts the processes and memory of the tree")
    result = await sandbox.run_python(case.code, limits=case.limits)
    assert case.reason in result.violations, (result.violations, result.stderr[-500:])
    assert not result.ok
    assert len(result.stdout) <= case.limits.output_bytes
    assert len(result.stderr) <= case.limits.output_bytes


@requires_root
async def test_fork_bomb_leaves_the_host_usable(sandbox: BwrapSandbox) -> None:
    """While a fork bomb runs, the same uid on the host can still start processes."""
    bomb = asyncio.create_task(
        sandbox.run_python(FORK_BOMB, limits=SandboxLimits(timeout=3, processes=16))
    )
    await asyncio.sleep(1)
    check = await asyncio.create_subprocess_exec("true", user=SANDBOX_UID)
    assert await check.wait() == 0
    assert "process limit 16 reached" in (await bomb).violations


@requires_root
async def test_code_runs_as_nobody_on_the_host(sandbox: BwrapSandbox) -> None:
    """Seen from the host, every process of the sandbox (bwrap's too) is uid 65534."""
    running = asyncio.create_task(sandbox.run_python("import time; time.sleep(3)"))
    uids: set[int] = set()
    for _ in range(100):
        await asyncio.sleep(0.05)
        uids = {int(line.split()[1]) for line in _guest_status_lines("Uid:")}
        if uids:
            break
    assert uids == {SANDBOX_UID}
    assert (await running).ok


def _guest_status_lines(field: str) -> list[str]:
    lines = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            if GUEST_BOOT.encode() not in Path(f"/proc/{pid}/cmdline").read_bytes():
                continue
            status = Path(f"/proc/{pid}/status").read_text().splitlines()
        except OSError:
            continue
        lines += [line for line in status if line.startswith(field)]
    return lines


async def test_a_killed_sandbox_leaves_nothing(no_leaks: None) -> None:
    """Cancelling an execution midway kills its whole tree (``no_leaks`` checks)."""
    async with BwrapSandbox(limits=LIMITS, warm=1) as box:
        await box.warm_up()
        task = asyncio.create_task(
            box.run_command("sleep 300 & sleep 300 & python3 -c 'import time; time.sleep(300)'")
        )
        await asyncio.sleep(0.5)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task


async def test_forged_reports_only_spoil_their_own_result(sandbox: BwrapSandbox) -> None:
    """Code may write garbage to the control socket; the host parses it safely, and
    stops the execution at once instead of waiting for a record that cannot come."""
    result = await sandbox.run_python(
        "import os\n"
        "for fd in range(3, 4096):\n"
        "    try:\n"
        "        os.write(fd, b'F' + (2**31).to_bytes(4, 'big') * 2 + b'garbage' * 1000)\n"
        "    except OSError:\n"
        "        pass\n"
        "open('real.txt', 'w').write('x')\n"
        "os._exit(7)\n"
    )
    assert "the sandbox's report was malformed or over 17 MiB, and was dropped" in (
        result.violations
    ), result
    assert result.files == {}

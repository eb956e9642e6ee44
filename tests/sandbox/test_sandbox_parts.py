"""The sandbox's pure parts: the bwrap command line, the wire format, the verdicts."""

from __future__ import annotations

import marshal

import pytest

from autonomic.errors import ConfigError
from autonomic.sandbox import KiB, MiB, SandboxLimits
from autonomic.sandbox.bwrap import bwrap_argv
from autonomic.sandbox.cgroup import CgroupStats
from autonomic.sandbox.confine import prefix_argv, rlimits
from autonomic.sandbox.httpcheck import Refused, authority, parse_head
from autonomic.sandbox.interpreter import Interpreter
from autonomic.sandbox.verdict import Evidence, violations
from autonomic.sandbox.wire import REPORT_OVERHEAD, Job, ReportReader, encode_request, name_problem


def _argv(**changes: object) -> list[str]:
    options: dict[str, object] = {
        "bwrap": "/usr/bin/bwrap",
        "python": Interpreter("/usr/bin/python3.11", None),
        "limits": SandboxLimits(scratch_bytes=8 * MiB),
        "command": ["/usr/bin/python3.11", "-I", "-c", "guest", "5"],
        "seccomp_fd": 6,
    }
    options.update(changes)
    return bwrap_argv(**options)  # type: ignore[arg-type]


def test_bwrap_denies_by_default() -> None:
    argv = _argv()
    for flag in (
        "--unshare-all",
        "--unshare-user",
        "--disable-userns",
        "--die-with-parent",
        "--new-session",
        "--clearenv",
    ):
        assert flag in argv
    assert argv[argv.index("--cap-drop") + 1] == "ALL"
    assert argv[argv.index("--seccomp") + 1] == "6"
    assert "--share-net" not in argv and "--bind" not in argv and "--dev-bind" not in argv
    binds = {argv[i + 1] for i, arg in enumerate(argv) if arg in ("--ro-bind", "--ro-bind-try")}
    assert binds <= {"/usr", "/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32"} | {
        "/etc/alternatives",
        "/etc/ld.so.cache",
    }
    assert argv[argv.index("--tmpfs") - 1] == str(8 * MiB)  # each tmpfs has a size


def test_bwrap_remounts_root_read_only_after_every_mount() -> None:
    argv = _argv(python=Interpreter("/opt/py/bin/python3", "/opt/py"), binds=["/data"])
    last_mount = max(
        i for i, arg in enumerate(argv) if arg in ("--ro-bind", "--tmpfs", "--symlink")
    )
    assert argv.index("--remount-ro") < argv.index("--tmpfs")  # /dev's, first
    remount_root = len(argv) - 1 - argv[::-1].index("--remount-ro")
    assert argv[remount_root + 1] == "/" and remount_root > last_mount
    assert argv[argv.index("--") + 1 :] == ["/usr/bin/python3.11", "-I", "-c", "guest", "5"]
    path = argv[argv.index("PATH") + 1]
    assert path.startswith("/opt/py/bin:")


def test_without_seccomp_there_is_no_filter_argument() -> None:
    assert "--seccomp" not in _argv(seccomp_fd=None)


def test_confinement_prefix() -> None:
    argv, user = prefix_argv(65534)
    assert argv[0].endswith("setpriv") and user is None
    assert argv[1:] == ["--reuid=65534", "--regid=65534", "--clear-groups", "--"]
    assert prefix_argv(None) == ([], None)


def test_bwrap_reports_and_waits_when_admitted() -> None:
    argv = _argv(admission_fds=(7, 8))
    assert argv[argv.index("--info-fd") + 1] == "7"
    assert argv[argv.index("--block-fd") + 1] == "8"
    assert "--block-fd" not in _argv()


def test_rlimits() -> None:
    limits = SandboxLimits(cpu_seconds=3, memory_bytes=64 * MiB, open_files=32)
    found = {name: (soft, hard) for name, soft, hard in rlimits(limits, None)}
    assert found["RLIMIT_CPU"] == (3, 4)
    assert found["RLIMIT_AS"] == (64 * MiB,) * 2
    assert found["RLIMIT_NOFILE"] == (32, 32)
    assert found["RLIMIT_CORE"] == (0, 0)
    assert "RLIMIT_NPROC" not in found
    with_tasks = {name: soft for name, soft, _ in rlimits(limits, 100)}
    assert with_tasks["RLIMIT_NPROC"] == 100 + limits.processes


def test_request_encoding() -> None:
    job = Job.create(code="print(1)", files={"a/b.txt": "x", "c": b"\0"}, stdin="in")
    blob = encode_request(job, 10, [("RLIMIT_CPU", 1, 2)])
    size = int.from_bytes(blob[:8], "big")
    assert size == len(blob) - 8
    assert marshal.loads(blob[8:]) == {
        "files": {"a/b.txt": b"x", "c": b"\0"},
        "stdin": b"in",
        "files_bytes": 10,
        "rlimits": [("RLIMIT_CPU", 1, 2)],
        "code": "print(1)",
    }
    command = Job.create(argv=["ls", "-l"])
    assert marshal.loads(encode_request(command, 1, [])[8:])["argv"] == ["ls", "-l"]
    assert Job.create(code="", files={"./x//y": ""}).files == {"x/y": b""}
    with pytest.raises(ConfigError, match="inside the scratch dir"):
        Job.create(code="", files={"x/../../y": ""})


def _record(tag: bytes, name: str, data: bytes = b"") -> bytes:
    raw = name.encode()
    return tag + len(raw).to_bytes(4, "big") + len(data).to_bytes(4, "big") + raw + data


def test_report_reader_takes_records_in_any_chunks() -> None:
    stream = (
        _record(b"F", "out.txt", b"hello")
        + _record(b"O", "big.bin", b"99999999")
        + _record(b"V", "memory")
        + _record(b"E", "3", b"0.25 1048576")
        + _record(b"F", "after-the-end", b"ignored")
    )
    reader = ReportReader(1 * MiB)
    for i in range(0, len(stream), 7):
        reader.feed(stream[i : i + 7])
    report = reader.report
    assert reader.complete and not reader.rejected
    assert report.files == {"out.txt": b"hello"}
    assert report.omitted == {"big.bin": 99999999}
    assert report.categories == ["memory"]
    assert (report.status, report.cpu_seconds, report.peak_memory_bytes) == (3, 0.25, MiB)


@pytest.mark.parametrize(
    "stream",
    [
        _record(b"E", "oops", b"1 2"),
        _record(b"E", "300", b"1 2"),
        _record(b"E", "0", b"lots"),
        _record(b"E", "0", b"nan 2"),
        _record(b"E", "0", b"inf 2"),
        _record(b"E", "0", b"-1 2"),
        _record(b"E", "0", b"1 -2"),
        _record(b"F", "x", b"y" * (KiB + REPORT_OVERHEAD)),
        b"F" + (2**31).to_bytes(4, "big") * 2 + b"xx",
    ],
    ids=[
        "status not a number",
        "status out of range",
        "usage garbled",
        "cpu not a number",
        "cpu infinite",
        "cpu negative",
        "memory negative",
        "too large",
        "a header promising more than the limit",
    ],
)
def test_report_reader_rejects_garbage(stream: bytes) -> None:
    reader = ReportReader(1 * KiB)
    reader.feed(stream)
    assert reader.rejected and not reader.complete and reader.finished


def test_report_reader_keeps_to_the_files_budget_itself() -> None:
    """Whatever the guest claims, the host returns at most ``files_bytes`` of files."""
    reader = ReportReader(1 * KiB)
    for name in ("a", "b", "c"):
        reader.feed(_record(b"F", name, b"z" * 400))
    reader.feed(_record(b"E", "0", b"0.1 0"))
    assert reader.complete and sorted(reader.report.files) == ["a", "b"]
    assert reader.report.omitted == {"c": 400}


@pytest.mark.parametrize(
    ("name", "problem"),
    [
        ("../escape", "a '..' part"),
        ("a/../../b", "a '..' part"),
        ("..", "a '..' part"),
        ("/etc/passwd", "an absolute path"),
        ("", "an empty name"),
        ("a//b", "an empty or '.' part"),
        ("./a", "an empty or '.' part"),
        ("a/", "an empty or '.' part"),
        ("line\nbreak", "a control character"),
        ("carriage\rreturn", "a control character"),
        ("nul\0byte", "a control character"),
        ("\x1b[31mred", "a control character"),
        ("next\x85line", "a control character"),
        ("unicode\u2028line", "a control character"),
        ("txt.\u202eexe", "a text direction character"),
        ("x" * 256, "too long"),
        ("a/" * 2100 + "b", "too long"),
    ],
)
def test_reported_names_must_be_plain_relative_paths(name: str, problem: str) -> None:
    assert name_problem(name) == problem
    reader = ReportReader(1 * MiB)
    reader.feed(
        _record(b"F", name, b"data") + _record(b"O", name, b"5") + _record(b"E", "0", b"0 0")
    )
    assert reader.report.files == {} and reader.report.omitted == {}
    assert reader.report.refused == {ascii(name): problem}


def test_reported_names_that_are_fine() -> None:
    for name in ("a.txt", "dir/sub/file", "..hidden", "a..b", "é 日本 emoji 🎉", "x" * 255):
        assert name_problem(name) is None, name


def test_reported_names_that_are_not_utf8_or_collide() -> None:
    raw = b"\xffname"
    reader = ReportReader(1 * MiB)
    reader.feed(b"F" + len(raw).to_bytes(4, "big") + (1).to_bytes(4, "big") + raw + b"x")
    for name in ("dup", "dup", "d/f", "d", "d/f/g", "ok/x"):
        reader.feed(_record(b"F", name, b"1"))
    reader.feed(_record(b"E", "0", b"0 0"))
    report = reader.report
    assert report.files == {"dup": b"1", "d/f": b"1", "ok/x": b"1"}
    assert report.refused == {
        ascii("\udcffname"): "not valid UTF-8",
        "'dup'": "reported twice, or also as a directory",
        "'d'": "reported twice, or also as a directory",
        "'d/f/g'": "under a name reported as a file",
    }


LIMITS = SandboxLimits(
    timeout=2, cpu_seconds=1, memory_bytes=64 * MiB, processes=8, output_bytes=64 * KiB
)


@pytest.mark.parametrize(
    ("evidence", "expected"),
    [
        (Evidence(timed_out=False, exit_code=0, cpu_seconds=0.1), ()),
        (Evidence(timed_out=True, exit_code=137, cpu_seconds=0.1), ("timeout after 2s",)),
        (Evidence(False, 152, 1.0), ("cpu time limit 1s exceeded",)),
        (Evidence(False, 137, 2.0), ("cpu time limit 1s exceeded",)),
        (Evidence(False, 137, 0.1), ()),
        (Evidence(False, 1, 0.1, ["memory"]), ("memory limit 64 MiB exceeded",)),
        (
            Evidence(False, 137, 0.1, cgroup=CgroupStats(1, 0, 0)),
            ("memory limit 64 MiB exceeded",),
        ),
        (Evidence(False, 153, 0.1), ("file size limit 64 MiB exceeded",)),
        (Evidence(False, 1, 0.1, ["disk_full"]), ("scratch space limit 64 MiB exceeded",)),
        (Evidence(False, 1, 0.1, ["open_files"]), ("open files limit 256 reached",)),
        (
            Evidence(False, 0, 0.1, cgroup=CgroupStats(0, 3, 0)),
            ("process limit 8 reached",),
        ),
        (
            Evidence(False, 0, 0.1, stdout_truncated=True, stderr_truncated=True),
            ("stdout truncated at 64 KiB", "stderr truncated at 64 KiB"),
        ),
        (
            Evidence(False, 0, 0.1, omitted_files={f"f{i}": 1 for i in range(7)}),
            ("produced files truncated at 16 MiB (f0, f1, f2, f3, f4 and 2 more)",),
        ),
        (Evidence(False, 137, 0.5, cpu_exceeded=True), ("cpu time limit 1s exceeded",)),
        (Evidence(False, 0, 1.5), ("cpu time limit 1s exceeded",)),
        (Evidence(False, 0, 0.1, egress_refused=3), ("egress connection limit 16 reached",)),
        (
            Evidence(False, 0, 0.1, egress_requests_refused=1),
            ("egress request limit 1000 reached",),
        ),
        (
            Evidence(False, 0, 0.1, refused_files={"'a\\nb'": "a control character"}),
            ("produced files refused: 'a\\nb' (a control character)",),
        ),
        (
            Evidence(False, 0, 0.1, ["too_many_files"]),
            ("too many produced files: the rest were not returned",),
        ),
        (
            Evidence(False, 137, 0.1, report_refused=True),
            ("the sandbox's report was malformed or over 17 MiB, and was dropped",),
        ),
    ],
)
def test_violations_in_words(evidence: Evidence, expected: tuple[str, ...]) -> None:
    assert violations(LIMITS, evidence) == expected


def test_public_names_are_importable() -> None:
    import autonomic.sandbox
    import autonomic.tools.sandboxed

    for module in (autonomic.sandbox, autonomic.tools.sandboxed):
        for name in module.__all__:
            assert getattr(module, name) is not None, name


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("Example.COM:8080", ("example.com", 8080)),
        ("[::1]:80", ("::1", 80)),
        ("host", ("host", None)),
        ("user@host", None),
        ("host:0", None),
        ("host:65536", None),
        ("host:", None),
        ("host name", None),
        ("a" * 254, None),
    ],
)
def test_authorities_are_read_strictly(text: str, expected: tuple[str, int | None] | None) -> None:
    if expected is None:
        with pytest.raises(Refused, match="is not a host with an optional port"):
            authority(text)
    else:
        assert authority(text) == expected


@pytest.mark.parametrize(
    ("head", "problem"),
    [
        (b"GET / HTTP/1.1\r\nHost: a\r\n", "must end with a blank line"),
        (b"GET  / HTTP/1.1\r\n\r\n", "must be: METHOD TARGET HTTP/1.1"),
        (b"G(T / HTTP/1.1\r\n\r\n", "the method is not a token"),
        (b"GET /\x1b HTTP/1.1\r\n\r\n", "has a control character"),
        (b"GET / HTTP/2.0\r\n\r\n", "only HTTP/1.0 and HTTP/1.1"),
        (b"GET / HTTP/1.1\r\n folded: x\r\n\r\n", "malformed header line"),
        (b"GET / HTTP/1.1\r\nX: a\rb\r\n\r\n", "the X header has a control character"),
    ],
)
def test_request_heads_are_read_strictly(head: bytes, problem: str) -> None:
    with pytest.raises(Refused, match=problem) as refused:
        parse_head(head)
    assert refused.value.status == "400 Bad Request"

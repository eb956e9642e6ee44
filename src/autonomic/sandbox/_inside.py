"""The program that runs inside a sandbox: it waits for one request, runs it, reports, exits.

It runs under the sandbox's Python, which may be older than the host's, so it uses only
the standard library and Python 3.8 syntax, and imports only what the interpreter has
loaded anyway or is cheap (``typing`` alone would cost more than the rest of start-up).
The host starts it (compiled: see ``guest.guest_command``) with a socket's fd as its
last argument, and speaks over that socket: one ready byte out, one sized request in,
result records out, the last one with the exit status (see ``autonomic.sandbox.wire``).
Nothing here is a security boundary: the code it runs may tamper with it, and can only
spoil its own result by doing so.
"""

from __future__ import annotations

import atexit
import errno
import io
import marshal
import os
import resource
import stat
import sys

__all__ = ["main"]

READY = b"R"
NAMES_ROOM = 1 << 19
"""Bytes of record headers and names the report may spend: half of what the host takes
beyond the files themselves (``wire.REPORT_OVERHEAD``)."""
_CATEGORIES = {errno.EFBIG: "file_size", errno.ENOSPC: "disk_full", errno.EMFILE: "open_files"}
_SIGPIPE, _SIGXFSZ = 13, 25


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


def _read_exactly(fd: int, size: int) -> bytes:
    chunks: list[bytes] = []
    while size > 0:
        chunk = os.read(fd, min(size, 1 << 20))
        if not chunk:
            raise EOFError("the host closed the control socket")
        chunks.append(chunk)
        size -= len(chunk)
    return b"".join(chunks)


def _record(tag: bytes, name: str, data: bytes = b"") -> bytes:
    raw = name.encode("utf-8", "surrogateescape")
    return tag + len(raw).to_bytes(4, "big") + len(data).to_bytes(4, "big") + raw + data


def _place_inputs(root: str, files: dict[str, bytes]) -> None:
    for name, data in files.items():
        path = os.path.join(root, name)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "wb") as f:
            f.write(data)


def _set_stdin(data: bytes) -> None:
    if not data:
        return
    fd = os.memfd_create("stdin")
    _write_all(fd, data)
    os.lseek(fd, 0, os.SEEK_SET)
    os.dup2(fd, 0)
    os.close(fd)


def _set_rlimits(limits: list[tuple[str, int, int]]) -> None:
    """Lower each limit, soft and hard (never above a hard limit already in place)."""
    for name, soft, hard in limits:
        which = getattr(resource, name)
        ceiling = resource.getrlimit(which)[1]
        if ceiling != resource.RLIM_INFINITY:
            hard = min(hard, ceiling)
        resource.setrlimit(which, (min(soft, hard), hard))


def _relay(path: str, port: int) -> None:
    """Carry each connection to 127.0.0.1:port (the sandbox's own loopback) to the egress
    proxy's Unix socket at ``path``: standard proxy settings then work.

    One daemon thread serves every connection, without blocking: a thread per
    connection would cost the code a process slot and, under RLIMIT_AS, 8 MiB of
    address space each, and a relay that cannot start one would stop relaying at all.
    """
    import contextlib
    import selectors
    import socket
    import threading
    import time

    server = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    server.bind(("127.0.0.1", port))
    server.listen(64)
    selector = selectors.DefaultSelector()
    selector.register(server, selectors.EVENT_READ)
    peer: dict[socket.socket, socket.socket] = {}
    unsent: dict[socket.socket, bytes] = {}
    """Bytes read from a socket, not yet written to its peer."""
    ended: set[socket.socket] = set()
    """Sockets that reached end of stream: their peer is half-closed once it has all."""

    def watch(sock: socket.socket) -> None:
        """Wait for what ``sock`` can do next: read, if what it sent has been passed on;
        write, if its peer sent something."""
        events = 0
        if sock not in ended and not unsent[sock]:
            events |= selectors.EVENT_READ
        if unsent[peer[sock]]:
            events |= selectors.EVENT_WRITE
        if sock in selector.get_map():
            if events:
                selector.modify(sock, events)
            else:
                selector.unregister(sock)
        elif events:
            selector.register(sock, events)

    def close(sock: socket.socket) -> None:
        for end in (sock, peer[sock]):
            if end in selector.get_map():
                selector.unregister(end)
            end.close()
            ended.discard(end)
            del peer[end], unsent[end]

    def shut(sock: socket.socket) -> None:
        with contextlib.suppress(OSError):
            sock.shutdown(socket.SHUT_WR)

    def send(sock: socket.socket) -> None:
        """Write to ``sock`` what its peer sent, half-closing it once that is all. If
        ``sock`` no longer takes any, stop reading its peer: what ``sock`` itself still
        has to say (a refusal, say) goes on being relayed."""
        other = peer[sock]
        if not unsent[other]:
            return
        try:
            unsent[other] = unsent[other][sock.send(unsent[other]) :]
        except BlockingIOError:
            return
        except OSError:
            unsent[other] = b""
            ended.add(other)
            return
        if not unsent[other] and other in ended:
            shut(sock)

    def receive(sock: socket.socket) -> None:
        try:
            data = sock.recv(1 << 16)
        except BlockingIOError:
            return
        except OSError:
            data = b""
        if data:
            unsent[sock] = data
            send(peer[sock])
        elif sock not in ended:
            ended.add(sock)
            shut(peer[sock])

    def accept() -> None:
        try:
            client = server.accept()[0]
        except OSError:  # out of descriptors, say: wait for the code to free some
            time.sleep(0.05)
            return
        upstream = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            upstream.connect(path)
        except OSError:
            client.close()
            upstream.close()
            return
        for end, other in ((client, upstream), (upstream, client)):
            end.setblocking(False)
            peer[end], unsent[end] = other, b""
            selector.register(end, selectors.EVENT_READ)

    def handle(sock: socket.socket, mask: int) -> None:
        if mask & selectors.EVENT_WRITE:
            send(sock)
        if mask & selectors.EVENT_READ and sock not in ended and not unsent[sock]:
            receive(sock)
        other = peer[sock]
        if sock in ended and other in ended and not unsent[sock] and not unsent[other]:
            close(sock)
        else:
            watch(sock)
            watch(other)

    def serve() -> None:
        while True:
            for key, mask in selector.select():
                sock = key.fileobj
                if sock is server:
                    accept()
                elif isinstance(sock, socket.socket) and sock in peer:
                    handle(sock, mask)

    threading.Thread(target=serve, daemon=True).start()


def _category(error: BaseException | None) -> str | None:
    """Which limit an uncaught exception (or one in its chain) says was hit."""
    for _ in range(8):
        if error is None:
            return None
        if isinstance(error, MemoryError):
            return "memory"
        if isinstance(error, OSError) and error.errno in _CATEGORIES:
            return _CATEGORIES[error.errno]
        error = error.__cause__ or error.__context__
    return None


def _exit_status(code: object) -> int:
    """What ``sys.exit(code)`` means as a process exit status, as CPython does it."""
    if code is None:
        return 0
    if isinstance(code, int):
        return code & 0xFF
    print(code, file=sys.stderr)
    return 1


def _run_python(code: str, root: str) -> tuple[int, str | None]:
    main = type(sys)("__main__")
    sys.modules["__main__"] = main
    sys.argv[:] = ["-c"]
    sys.path.insert(0, root)
    sys.dont_write_bytecode = True
    try:
        exec(compile(code, "<string>", "exec"), main.__dict__)
    except SystemExit as e:
        return _exit_status(e.code), None
    except BaseException as e:
        tb = e.__traceback__
        e.__traceback__ = tb.tb_next if tb is not None else None  # hide this frame
        sys.excepthook(type(e), e, e.__traceback__)
        return 1, _category(e)
    finally:
        _finish_python(main.__dict__)
    return 0, None


def _finish_python(namespace: dict[str, object]) -> None:
    """Wait for the code's threads and run its atexit hooks, as interpreter exit would;
    then drop its globals, so that the memory and files they held are free for the report.
    """
    threading = sys.modules.get("threading")
    if threading is not None:
        for thread in threading.enumerate():
            if thread is not threading.main_thread() and not thread.daemon:
                thread.join()
    atexit._run_exitfuncs()
    namespace.clear()


def _run_argv(argv: list[str]) -> int:
    try:
        pid = os.posix_spawnp(argv[0], argv, dict(os.environ), setsigdef=(_SIGPIPE, _SIGXFSZ))
    except OSError as e:
        sys.stderr.write(f"{argv[0]}: {e.strerror}\n")
        return 127 if e.errno == errno.ENOENT else 126
    _, status = os.waitpid(pid, 0)
    if os.WIFSIGNALED(status):
        return 128 + os.WTERMSIG(status)
    return os.WEXITSTATUS(status)


def _read_file(name: str, dir_fd: int, inode: int, limit: int) -> bytes | None:
    """Up to ``limit + 1`` bytes of the regular file ``inode`` at ``name`` in ``dir_fd``,
    never through a symlink, never blocking on a FIFO; else None."""
    fd = os.open(name, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK, dir_fd=dir_fd)
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode) or info.st_ino != inode:
            return None
        chunks, size = [], 0
        while size <= limit:
            chunk = os.read(fd, min(1 << 16, limit + 1 - size))
            if not chunk:
                break
            chunks.append(chunk)
            size += len(chunk)
        return b"".join(chunks)
    finally:
        os.close(fd)


def _regular(name: str, dir_fd: int) -> os.stat_result | None:
    """The lstat of ``name`` in ``dir_fd`` if it is a regular file, else None."""
    try:
        info = os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
    except OSError:
        return None
    return info if stat.S_ISREG(info.st_mode) else None


def _link_counts(root: str) -> dict[int, int]:
    """How many names each regular file under ``root`` has there."""
    counts: dict[int, int] = {}
    for _, _, names, dir_fd in os.fwalk(root):
        for name in names:
            info = _regular(name, dir_fd)
            if info is not None:
                counts[info.st_ino] = counts.get(info.st_ino, 0) + 1
    return counts


def _collect(root: str, inputs: dict[str, bytes], budget: int) -> list[bytes]:
    """Records for the regular files that are new or changed, within ``budget`` bytes
    of data and ``NAMES_ROOM`` of names.

    It walks by directory fds and never follows a symlink, so a directory swapped for a
    link meanwhile leads nowhere outside ``root``. A file with more hard links than are
    found under ``root`` is also linked from outside it, and is left out.
    """
    links = _link_counts(root)
    records: list[bytes] = []
    room = NAMES_ROOM
    for directory, subdirs, names, dir_fd in os.fwalk(root):
        subdirs.sort()
        for name in sorted(names):
            info = _regular(name, dir_fd)
            if info is None or info.st_nlink > links.get(info.st_ino, 0):
                continue
            rel = os.path.relpath(os.path.join(directory, name), root)
            room -= 64 + len(rel.encode("utf-8", "surrogateescape"))
            if room < 0:
                return [*records, _record(b"V", "too_many_files")]
            known, size = inputs.get(rel), info.st_size
            try:
                unchanged = known is not None and len(known) == size
                if unchanged and _read_file(name, dir_fd, info.st_ino, size) == known:
                    continue
                data = _read_file(name, dir_fd, info.st_ino, budget) if size <= budget else b""
            except OSError:
                continue
            if data is None:
                continue
            if size > budget or len(data) > budget:
                records.append(_record(b"O", rel, str(max(size, len(data))).encode()))
                continue
            budget -= len(data)
            records.append(_record(b"F", rel, data))
    return records


def _end_record(status: int) -> bytes:
    """The last record: the exit status, and the CPU time and peak memory of the run."""
    own = resource.getrusage(resource.RUSAGE_SELF)
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime
    peak = max(own.ru_maxrss, children.ru_maxrss) * 1024
    return _record(b"E", str(status), f"{cpu} {peak}".encode())


def _flush() -> None:
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):
            continue


def main() -> None:
    control = int(sys.argv[-1])
    os.set_inheritable(control, False)
    root = os.getcwd()
    if isinstance(sys.stdout, io.TextIOWrapper):
        sys.stdout.reconfigure(line_buffering=True)
    # The first compile() sets up the AST types (about a millisecond): do it while idle.
    compile("", "<string>", "exec")
    _write_all(control, READY)
    size = int.from_bytes(_read_exactly(control, 8), "big")
    request = marshal.loads(_read_exactly(control, size))
    files = request["files"]
    category = None
    try:
        _place_inputs(root, files)
        _set_stdin(request["stdin"])
        _set_rlimits(request["rlimits"])
        if "relay" in request:
            _relay(*request["relay"])
    except OSError as e:
        sys.stderr.write(f"could not prepare the run: {e}\n")
        status, category = 1, _category(e)
    else:
        if "code" in request:
            status, category = _run_python(request["code"], root)
        else:
            status = _run_argv(request["argv"])
    _flush()
    records = _collect(root, files, request["files_bytes"])
    if category is not None:
        records.append(_record(b"V", category))
    records.append(_end_record(status))
    try:
        _write_all(control, b"".join(records))
    finally:
        os._exit(status)


if __name__ == "__main__":
    main()

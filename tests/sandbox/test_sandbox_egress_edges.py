"""The egress proxy's edges: the host a request names must be the host it is let through
to, one request per connection, and only so many connections at once.

Sandboxed code speaks raw HTTP (and TLS) to the proxy, so that every trick is in reach;
the servers are real ones on the host's loopback, and say exactly what reached them.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import os
import shutil
import ssl
import subprocess
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from autonomic.sandbox import BwrapSandbox, SandboxLimits
from autonomic.sandbox.egress import EgressPolicy, EgressProxy, EgressRequest

from .conftest import LIMITS, requires_bwrap

pytestmark = requires_bwrap


async def _origin(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """An HTTP server that answers with what reached it: the request line, every Host
    header, the body, and any bytes that came after the request (there must be none)."""
    try:
        head = (await reader.readuntil(b"\r\n\r\n")).decode("latin-1")
    except asyncio.IncompleteReadError:  # a tunnel closed before it carried a request
        writer.close()
        return
    lines = head.split("\r\n")[:-2]
    fields = [line.partition(":") for line in lines[1:]]
    hosts = [value.strip() for name, _, value in fields if name.lower() == "host"]
    lengths = [int(value) for name, _, value in fields if name.lower() == "content-length"]
    if any(name.lower() == "transfer-encoding" for name, _, _ in fields):
        body = await reader.readuntil(b"\r\n0\r\n\r\n")
    else:
        body = await reader.readexactly(lengths[0] if lengths else 0)
    try:
        extra = await asyncio.wait_for(reader.read(65536), 0.3)
    except TimeoutError:
        extra = b""
    said = {"line": lines[0], "hosts": hosts, "body": body.decode(), "extra": extra.decode()}
    payload = json.dumps(said).encode()
    writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s" % (len(payload), payload))
    await writer.drain()
    writer.close()


@pytest.fixture
async def origin() -> AsyncIterator[int]:
    server = await asyncio.start_server(_origin, "127.0.0.1", 0)
    async with server:
        yield server.sockets[0].getsockname()[1]


ASK = r"""
import json, socket

def ask(raw, then=None):
    '''Send ``raw`` to the proxy (and ``then`` once a tunnel is open); print the answer's
    status line and body on one line.'''
    s = socket.create_connection(('127.0.0.1', 3128), timeout=10)
    s.sendall(raw)
    data = b''
    while then is not None and b'\r\n\r\n' not in data:
        data += s.recv(1)
    if then is not None and data.startswith(b'HTTP/1.1 200'):
        s.sendall(then)
        data = b''
    while chunk := s.recv(65536):
        data += chunk
    s.close()
    head, _, body = data.partition(b'\r\n\r\n')
    print(json.dumps([head.split(b'\r\n')[0].decode(), body.decode().strip()]))

for raw, then in json.loads(REQUESTS):
    ask(raw.encode('latin-1'), then and then.encode('latin-1'))
"""


async def _ask(box: BwrapSandbox, requests: list[tuple[str, str | None]]) -> list[tuple[str, str]]:
    """Each request's (status line, body), as the sandboxed code saw them."""
    code = f"REQUESTS = {json.dumps(json.dumps(requests))}\n{ASK}"
    result = await box.run_python(code)
    assert result.exit_code == 0, result
    return [tuple(json.loads(line)) for line in result.stdout.splitlines()]  # type: ignore[misc]


def _origin_saw(body: str) -> dict[str, object]:
    said: dict[str, object] = json.loads(body)
    return said


@pytest.fixture
async def box(
    origin: int, no_leaks: None
) -> AsyncIterator[tuple[BwrapSandbox, list[EgressRequest]]]:
    heard: list[EgressRequest] = []
    async with BwrapSandbox(
        limits=LIMITS,
        warm=0,
        egress=[f"127.0.0.1:{origin}", f"api.test:{origin}"],
        egress_resolve={"api.test": "127.0.0.1"},
        on_egress=heard.append,
    ) as sandbox:
        yield sandbox, heard


async def test_an_absolute_request_must_name_its_host_in_the_host_header(
    box: tuple[BwrapSandbox, list[EgressRequest]], origin: int
) -> None:
    sandbox, heard = box
    url = f"http://127.0.0.1:{origin}/x"
    answers = await _ask(
        sandbox,
        [
            (f"GET {url} HTTP/1.1\r\nHost: other.test\r\n\r\n", None),
            (f"GET {url} HTTP/1.1\r\nHost: 127.0.0.1:{origin + 1}\r\n\r\n", None),
            (f"GET {url} HTTP/1.1\r\nHost: 127.0.0.1:{origin}\r\n\r\n", None),
            (f"GET {url} HTTP/1.1\r\n\r\n", None),
            (f"GET {url} HTTP/1.1\r\nHost: 127.0.0.1:{origin}\r\nHost: other.test\r\n\r\n", None),
            (f"GET http://127.0.0.1:{origin}@other.test/ HTTP/1.1\r\n\r\n", None),
            (f"GET {url} HTTP/1.1\r\nX-A: 1\nHost: other.test\r\n\r\n", None),
            (f"GET {url} HTTP/1.1\r\nHost : other.test\r\n\r\n", None),
        ],
    )
    forbidden = "HTTP/1.1 403 Forbidden"
    bad = "HTTP/1.1 400 Bad Request"
    assert answers[0] == (
        forbidden,
        f"the Host header names other.test:80, but the request goes to 127.0.0.1:{origin}: "
        "they must agree",
    )
    assert answers[1][0] == forbidden and f"names 127.0.0.1:{origin + 1}," in answers[1][1]
    for status, body in answers[2:4]:  # the server gets one Host header: the target's
        assert status == "HTTP/1.1 200 OK"
        assert _origin_saw(body)["hosts"] == [f"127.0.0.1:{origin}"]
        assert _origin_saw(body)["line"] == "GET /x HTTP/1.1"
    assert answers[4] == (bad, "more than one Host header")
    assert answers[5][0] == bad and "is not a host with an optional port" in answers[5][1]
    assert answers[6] == (bad, "the X-A header has a control character")
    assert answers[7] == (bad, "malformed header line 'Host : other.test'")
    assert [(r.host, r.port, r.allowed) for r in heard] == [
        ("other.test", 80, False),
        ("127.0.0.1", origin + 1, False),
        ("127.0.0.1", origin, True),
        ("127.0.0.1", origin, True),
    ]
    assert heard[0].reason == answers[0][1]


async def test_one_request_per_connection_and_nothing_past_its_body(
    box: tuple[BwrapSandbox, list[EgressRequest]], origin: int
) -> None:
    """A second request pipelined behind an allowed one, or hidden by framing tricks,
    never reaches the server."""
    sandbox, _ = box
    url = f"http://127.0.0.1:{origin}"
    smuggled = "GET /second HTTP/1.1\r\nHost: other.test\r\n\r\n"
    answers = await _ask(
        sandbox,
        [
            (f"GET {url}/first HTTP/1.1\r\n\r\n{smuggled}", None),
            (
                f"POST {url}/up HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n"
                f"5\r\nhello\r\n0\r\n\r\n{smuggled}",
                None,
            ),
            (
                f"POST {url}/up HTTP/1.1\r\nContent-Length: 5\r\nConnection: content-length"
                f"\r\n\r\nhello{smuggled}",
                None,
            ),
            (
                f"POST {url}/up HTTP/1.1\r\nContent-Length: 5\r\nTransfer-Encoding: chunked"
                f"\r\n\r\n0\r\n\r\n{smuggled}",
                None,
            ),
            (f"POST {url}/up HTTP/1.1\r\nContent-Length: 5\r\nContent-Length: 50\r\n\r\n", None),
        ],
    )
    first, chunked, listed = (_origin_saw(body) for _, body in answers[:3])
    assert first == {"line": "GET /first HTTP/1.1", "hosts": [f"127.0.0.1:{origin}"],
                     "body": "", "extra": ""}  # fmt: skip
    assert chunked["body"] == "5\r\nhello\r\n0\r\n\r\n" and chunked["extra"] == ""
    assert listed["body"] == "hello" and listed["extra"] == ""
    assert answers[3] == (
        "HTTP/1.1 400 Bad Request",
        "Transfer-Encoding must be chunked alone, without Content-Length",
    )
    assert answers[4] == ("HTTP/1.1 400 Bad Request", "Content-Length must be one number")


async def test_a_tunnel_carries_only_requests_for_its_host(
    box: tuple[BwrapSandbox, list[EgressRequest]], origin: int
) -> None:
    sandbox, heard = box
    connect = f"CONNECT api.test:{origin} HTTP/1.1\r\nHost: api.test:{origin}\r\n\r\n"
    answers = await _ask(
        sandbox,
        [
            (f"CONNECT api.test:{origin} HTTP/1.1\r\nHost: other.test\r\n\r\n", None),
            (connect, "GET /in HTTP/1.1\r\nHost: other.test\r\n\r\n"),
            (connect, f"GET http://other.test:{origin}/in HTTP/1.1\r\n\r\n"),
            (connect, f"GET /in HTTP/1.1\r\nHost: api.test:{origin}\r\n\r\n"),
            (connect, "SSH-2.0-OpenSSH_9.2\r\n\r\n"),
        ],
    )
    assert answers[0] == (
        "HTTP/1.1 403 Forbidden",
        f"the Host header names other.test:{origin}, but the request goes to "
        f"api.test:{origin}: they must agree",
    )
    assert answers[1] == (
        "HTTP/1.1 403 Forbidden",
        f"the request names other.test:80, but the tunnel goes to api.test:{origin}: "
        "they must agree",
    )
    assert answers[2][0] == "HTTP/1.1 403 Forbidden"
    assert answers[2][1].startswith(f"the request names other.test:{origin},")
    assert answers[3][0] == "HTTP/1.1 200 OK"
    assert _origin_saw(answers[3][1])["hosts"] == [f"api.test:{origin}"]
    assert answers[4] == (
        "HTTP/1.1 400 Bad Request",
        "the request line must be: METHOD TARGET HTTP/1.1",
    )
    assert [(r.method, r.host, r.port, r.allowed) for r in heard] == [
        ("CONNECT", "other.test", origin, False),
        ("CONNECT", "api.test", origin, True),
        ("GET", "other.test", 80, False),
        ("CONNECT", "api.test", origin, True),
        ("GET", "other.test", origin, False),
        ("CONNECT", "api.test", origin, True),
        ("CONNECT", "api.test", origin, True),
    ]


@pytest.fixture(scope="module")
def certificate(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A self-signed certificate for tls.test, made by the openssl command."""
    openssl = shutil.which("openssl")
    assert openssl is not None, "the TLS tests need the openssl command: apt-get install openssl"
    folder = tmp_path_factory.mktemp("tls")
    cert, key = folder / "cert.pem", folder / "key.pem"
    subprocess.run(
        [openssl, "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
         "-nodes", "-keyout", str(key), "-out", str(cert), "-days", "1", "-subj", "/CN=tls.test",
         "-addext", "subjectAltName=DNS:tls.test"],
        check=True, capture_output=True,
    )  # fmt: skip
    return cert, key


async def _tls_hello(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    await reader.readuntil(b"\r\n\r\n")
    writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 9\r\n\r\nover tls\n")
    await writer.drain()
    writer.close()


TLS_CLIENT = r"""
import socket, ssl

def through_tunnel(name):
    s = socket.create_connection(('127.0.0.1', 3128), timeout=10)
    s.sendall(f'CONNECT tls.test:{PORT} HTTP/1.1\r\nHost: tls.test:{PORT}\r\n\r\n'.encode())
    head = b''
    while not head.endswith(b'\r\n\r\n'):
        head += s.recv(1)
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    try:
        with context.wrap_socket(s, server_hostname=name) as tls:
            tls.sendall(b'GET / HTTP/1.1\r\nHost: tls.test\r\n\r\n')
            print(name, tls.recv(65536).split(b'\r\n')[0].decode())
    except ssl.SSLError as e:
        print(name, e.reason)

through_tunnel('tls.test')
through_tunnel('evil.test')
through_tunnel(None)
"""


async def test_a_tls_tunnel_must_ask_for_its_host_by_name(
    certificate: tuple[Path, Path], no_leaks: None
) -> None:
    """The server name (SNI) in the ClientHello is checked against the tunnel's host:
    another name is answered with TLS's unrecognized_name alert, and recorded."""
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(*certificate)
    server = await asyncio.start_server(_tls_hello, "127.0.0.1", 0, ssl=context)
    heard: list[EgressRequest] = []
    async with server:
        port = server.sockets[0].getsockname()[1]
        async with BwrapSandbox(
            limits=LIMITS,
            warm=0,
            egress=[f"tls.test:{port}"],
            egress_resolve={"tls.test": "127.0.0.1"},
            on_egress=heard.append,
        ) as box:
            result = await box.run_python(f"PORT = {port}\n{TLS_CLIENT}")
    assert result.stdout.splitlines() == [
        "tls.test HTTP/1.1 200 OK",
        "evil.test TLSV1_UNRECOGNIZED_NAME",
        "None HTTP/1.1 200 OK",
    ], result
    refused = [r for r in heard if not r.allowed]
    assert refused == [
        EgressRequest(
            "CONNECT",
            "evil.test",
            port,
            f"tls.test:{port}",
            False,
            "the TLS server name evil.test is not the tunnel's host tls.test",
        )
    ]
    assert len(heard) == 4


HOLD = r"""
import socket, time
held, statuses = [], []
def open_tunnel():
    s = socket.create_connection(('127.0.0.1', 3128), timeout=10)
    s.sendall(f'CONNECT 127.0.0.1:{PORT} HTTP/1.1\r\n\r\n'.encode())
    data = b''
    while b'\r\n\r\n' not in data and (chunk := s.recv(4096)):
        data += chunk
    status = data.split(b'\r\n')[0].decode()
    if status.endswith('503 Service Unavailable'):
        while chunk := s.recv(4096):
            data += chunk
        print(data.partition(b'\r\n\r\n')[2].decode().strip())
    held.append(s)
    return status
statuses = [open_tunnel() for _ in range(8)]
print(sorted(set(statuses)), [statuses.count(s) for s in sorted(set(statuses))])
held[0].close()
for _ in range(100):  # once the proxy has seen it close, there is room again
    time.sleep(0.05)
    if open_tunnel().endswith('200 Connection established'):
        print('room again')
        break
"""


async def test_connections_at_once_are_capped(
    box: tuple[BwrapSandbox, list[EgressRequest]], origin: int
) -> None:
    sandbox, _ = box
    result = await sandbox.run_python(
        f"PORT = {origin}\n{HOLD}", limits=dataclasses.replace(LIMITS, egress_connections=4)
    )
    lines = result.stdout.splitlines()
    message = (
        "too many connections through the egress proxy at once (limit 4): "
        "close one before opening another"
    )
    assert lines[:4] == [message] * 4, result
    assert lines[4] == (
        "['HTTP/1.1 200 Connection established', 'HTTP/1.1 503 Service Unavailable'] [4, 4]"
    )
    assert lines[-1] == "room again"
    assert "egress connection limit 4 reached" in result.violations


FLOOD = r"""
import select, socket, time
socks = []
for _ in range(240):  # straight to the proxy's socket, past the relay, and never a byte sent
    s = socket.socket(socket.AF_UNIX)
    s.connect('/run/egress.sock')
    socks.append(s)
pending, refused, deadline = set(socks), 0, time.time() + 15
while len(pending) > 8 and time.time() < deadline:
    ready = select.select(list(pending), [], [], 0.5)[0]
    for s in ready:
        pending.discard(s)
        refused += s.recv(100).startswith(b'HTTP/1.1 503')
print(refused, len(pending))
"""


def _open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


async def test_a_connection_flood_does_not_exhaust_the_hosts_descriptors(
    box: tuple[BwrapSandbox, list[EgressRequest]],
) -> None:
    sandbox, _ = box
    limits = dataclasses.replace(LIMITS, egress_connections=8)
    baseline = peak = _open_fds()
    running = asyncio.ensure_future(sandbox.run_python(FLOOD, limits=limits))
    while not running.done():
        peak = max(peak, _open_fds())
        await asyncio.sleep(0.002)
    result = await running
    assert result.stdout.split() == ["232", "8"], result
    assert "egress connection limit 8 reached" in result.violations
    # the guest's own pipes and sockets and 8 held connections (refused ones are closed
    # as they are accepted); without the cap it would be 240 more
    assert peak - baseline < 40, (baseline, peak)


def test_the_limit_is_validated() -> None:
    from autonomic.errors import ConfigError

    with pytest.raises(ConfigError, match="egress_connections must be a positive int"):
        SandboxLimits(egress_connections=0)


MANY = r"""
import socket
tunnels = []
for _ in range(16):  # all open at once, through the relay on the sandbox's loopback
    s = socket.create_connection(('127.0.0.1', 3128), timeout=10)
    s.sendall(f'CONNECT 127.0.0.1:{PORT} HTTP/1.1\r\n\r\n'.encode())
    tunnels.append(s)
for s in tunnels:
    data = b''
    while b'\r\n\r\n' not in data:
        data += s.recv(1)
    assert data.startswith(b'HTTP/1.1 200'), data
for i, s in enumerate(tunnels):
    s.sendall(f'GET /{i} HTTP/1.1\r\nHost: 127.0.0.1:{PORT}\r\n\r\n'.encode())
answers = []
for s in tunnels:
    data = b''
    while chunk := s.recv(65536):
        data += chunk
    answers.append(json.loads(data.partition(b'\r\n\r\n')[2])['line'])
print(answers == [f'GET /{i} HTTP/1.1' for i in range(16)])
"""


async def test_the_relay_inside_serves_many_connections_at_once(
    box: tuple[BwrapSandbox, list[EgressRequest]], origin: int
) -> None:
    """The relay in the sandbox takes no thread per connection, so many connections at
    once fit in the code's memory limit (threads' stacks would count against it)."""
    sandbox, _ = box
    limits = dataclasses.replace(LIMITS, memory_bytes=160 * 2**20)
    result = await sandbox.run_python(f"import json\nPORT = {origin}\n{MANY}", limits=limits)
    assert result.stdout == "True\n", result
    assert result.ok, result


async def test_an_execution_may_make_only_so_many_requests(origin: int) -> None:
    """Each request becomes an event in the run's log: past the limit they are refused,
    and a long target is kept only in part."""
    heard: list[EgressRequest] = []
    proxy = EgressProxy(EgressPolicy.of([f"127.0.0.1:{origin}"]), heard.append, max_requests=3)
    path = await proxy.start()
    long_path = "/" + "p" * 5000
    statuses = []
    try:
        for i in range(5):
            reader, writer = await asyncio.open_unix_connection(path)
            target = f"http://127.0.0.1:{origin}{long_path if i == 0 else f'/{i}'}"
            writer.write(f"GET {target} HTTP/1.1\r\n\r\n".encode())
            statuses.append((await reader.read()).split(b"\r\n")[0].decode())
            writer.close()
            await writer.wait_closed()
    finally:
        await proxy.close()
    assert statuses == ["HTTP/1.1 200 OK"] * 3 + ["HTTP/1.1 429 Too Many Requests"] * 2
    assert len(heard) == 3 and proxy.refused_requests == 2
    assert heard[0].target == f"http://127.0.0.1:{origin}{long_path}"[:2048] + "..."

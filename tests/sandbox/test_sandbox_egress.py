"""Egress on request: only listed hosts, only through the proxy, every request heard.

Every server here listens on the host's loopback; nothing is sent anywhere else.
"""

from __future__ import annotations

import asyncio
import shutil
from collections.abc import AsyncIterator

import pytest

from autonomic.errors import ConfigError
from autonomic.sandbox import BwrapSandbox
from autonomic.sandbox.egress import EgressPolicy, EgressProxy, EgressRequest
from autonomic.tools.base import ToolContext
from autonomic.tools.sandboxed import run_python

from .conftest import LIMITS, requires_bwrap


async def _answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """A one-shot HTTP server: echoes the request line back."""
    head = await reader.readuntil(b"\r\n\r\n")
    body = b"you asked: " + head.split(b"\r\n", 1)[0]
    writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body))
    await writer.drain()
    writer.close()


@pytest.fixture
async def servers() -> AsyncIterator[tuple[int, int]]:
    """Two HTTP servers on the host's loopback: one to allow, one to keep out."""
    allowed = await asyncio.start_server(_answer, "127.0.0.1", 0)
    other = await asyncio.start_server(_answer, "127.0.0.1", 0)
    async with allowed, other:
        yield allowed.sockets[0].getsockname()[1], other.sockets[0].getsockname()[1]


@pytest.fixture
async def egress_box(
    servers: tuple[int, int], no_leaks: None
) -> AsyncIterator[tuple[BwrapSandbox, list[EgressRequest]]]:
    heard: list[EgressRequest] = []
    box = BwrapSandbox(
        limits=LIMITS, warm=1, egress=[f"127.0.0.1:{servers[0]}"], on_egress=heard.append
    )
    async with box:
        yield box, heard


@requires_bwrap
async def test_listed_hosts_only(
    egress_box: tuple[BwrapSandbox, list[EgressRequest]], servers: tuple[int, int]
) -> None:
    box, heard = egress_box
    allowed, other = servers
    result = await box.run_python(
        "import urllib.request, urllib.error\n"
        f"print(urllib.request.urlopen('http://127.0.0.1:{allowed}/data?q=1').read())\n"
        "try:\n"
        f"    urllib.request.urlopen('http://127.0.0.1:{other}/secret')\n"
        "except urllib.error.HTTPError as e:\n"
        "    print(e.code, e.read().decode().strip())\n"
    )
    assert result.stdout.splitlines() == [
        "b'you asked: GET /data?q=1 HTTP/1.1'",
        f"403 egress to 127.0.0.1:{other} is not allowed",
    ], result
    assert heard == [
        EgressRequest("GET", "127.0.0.1", allowed, f"http://127.0.0.1:{allowed}/data?q=1", True),
        EgressRequest(
            "GET",
            "127.0.0.1",
            other,
            f"http://127.0.0.1:{other}/secret",
            False,
            f"egress to 127.0.0.1:{other} is not allowed",
        ),
    ]


@requires_bwrap
@pytest.mark.skipif(shutil.which("curl") is None, reason="needs curl")
async def test_tunnels_are_checked_too(
    egress_box: tuple[BwrapSandbox, list[EgressRequest]], servers: tuple[int, int]
) -> None:
    box, heard = egress_box
    allowed, other = servers
    result = await box.run_command(
        f"curl -s -p http://127.0.0.1:{allowed}/tunnelled; echo; "
        f"curl -s -p -o /dev/null -w '%{{http_connect}}' http://127.0.0.1:{other}/"
    )
    assert result.stdout.splitlines() == ["you asked: GET /tunnelled HTTP/1.1", "403"], result
    assert [(r.method, r.port, r.allowed) for r in heard] == [
        ("CONNECT", allowed, True),
        ("CONNECT", other, False),
    ]


@requires_bwrap
async def test_the_proxy_is_the_only_way_out(
    egress_box: tuple[BwrapSandbox, list[EgressRequest]], servers: tuple[int, int]
) -> None:
    box, heard = egress_box
    result = await box.run_python(
        "import socket, errno\n"
        "try:\n"
        f"    socket.create_connection(('127.0.0.1', {servers[0]}), timeout=2)\n"
        "except OSError as e:\n"
        "    print(errno.errorcode[e.errno])\n"
        "for kind in (socket.AF_PACKET, socket.AF_NETLINK):\n"
        "    try:\n"
        "        socket.socket(kind, socket.SOCK_RAW)\n"
        "    except OSError as e:\n"
        "        print(errno.errorcode[e.errno])\n"
        "try:\n"
        "    socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP)\n"
        "except OSError as e:\n"
        "    print(errno.errorcode[e.errno])\n"
        "print(open('/proc/net/dev').read().count(':'))\n"
    )
    assert result.stdout.split() == ["ECONNREFUSED", "EPERM", "EPERM", "EPERM", "1"], result
    assert heard == []


@requires_bwrap
async def test_no_egress_no_proxy(sandbox: BwrapSandbox) -> None:
    result = await sandbox.run_python(
        "import os\nprint(os.path.exists('/run'), [k for k in os.environ if 'proxy' in k.lower()])"
    )
    assert result.stdout == "False []\n"
    assert not sandbox.reaches_network


@requires_bwrap
async def test_a_tool_that_declares_its_hosts(servers: tuple[int, int], no_leaks: None) -> None:
    heard: list[EgressRequest] = []
    tool = run_python(allow_hosts=[f"127.0.0.1:{servers[0]}"], on_egress=heard.append)
    assert not tool.idempotent
    assert f"access to 127.0.0.1:{servers[0]} only" in tool.spec.description
    observation = await tool.invoke(
        {
            "code": f"import urllib.request as u; print(u.urlopen('http://127.0.0.1:{servers[0]}/').read())"
        },
        ToolContext(run_id="r", action_id="a"),
    )
    assert "you asked: GET / HTTP/1.1" in observation
    assert [r.allowed for r in heard] == [True]
    with pytest.raises(ConfigError, match="allow_hosts needs a backend name"):
        run_python(BwrapSandbox(warm=0), allow_hosts=["example.com"])


def test_policy() -> None:
    policy = EgressPolicy.of(["Example.COM", "api.test:8443", "[::1]:8080"])
    assert policy.allows("example.com", 443) and policy.allows("example.com", 80)
    assert not policy.allows("example.com", 8443)
    assert policy.allows("api.test", 8443) and not policy.allows("api.test", 443)
    assert policy.allows("::1", 8080)
    assert not policy.allows("sub.example.com", 443)
    with pytest.raises(ConfigError, match="has no host"):
        EgressPolicy.of([":80"])
    with pytest.raises(ConfigError, match="bad port"):
        EgressPolicy.of(["example.com:http"])


async def test_the_proxy_turns_away_what_it_cannot_check(servers: tuple[int, int]) -> None:
    heard: list[EgressRequest] = []
    proxy = EgressProxy(EgressPolicy.of([f"127.0.0.1:{servers[0]}"]), heard.append)
    path = await proxy.start()
    try:
        for request, expected in (
            (b"GET /relative HTTP/1.1\r\n\r\n", b"only absolute http:// URLs or CONNECT"),
            (b"GET ftp://127.0.0.1/ HTTP/1.1\r\n\r\n", b"only absolute http:// URLs or CONNECT"),
            (b"nonsense\r\n\r\n", b"the request line must be: METHOD TARGET HTTP/1.1"),
            (
                b"CONNECT 127.0.0.1:notaport HTTP/1.1\r\n\r\n",
                b"is not a host with an optional port",
            ),
        ):
            reader, writer = await asyncio.open_unix_connection(path)
            writer.write(request)
            answer = await reader.read()
            assert answer.startswith(b"HTTP/1.1 400 Bad Request\r\n"), answer
            assert expected in answer, answer
            writer.close()
            await writer.wait_closed()
    finally:
        await proxy.close()
    assert heard == []

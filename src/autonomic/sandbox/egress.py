"""Egress on request: an HTTP proxy, outside the sandbox, that lets through listed hosts.

A sandbox opened with ``egress=[...]`` gets this proxy on a Unix socket bound into it
(its network namespace still has nothing but loopback); inside, ``http_proxy`` and
``https_proxy`` point at a relay on the sandbox's own loopback that carries each
connection to the socket. The proxy serves ``CONNECT host:port`` (HTTPS) and absolute
``http://`` requests, refuses any other host with 403, and reports every request to a
callback, which the runtime can turn into events. Hosts are matched exactly, as
written (a name is resolved on the host, so list names you trust).

The listed host must also be the one the server is asked for, or a server that hosts
many names (a CDN, a shared load balancer) would serve another one on the allowed
address: an absolute request's ``Host`` header must name its URL's host, and a tunnel
must carry HTTP whose ``Host`` names the tunnel's host, or TLS whose server name (SNI)
does. Each connection carries one request (the server is told ``Connection: close``
and gets nothing past that request's body). A sandbox may hold only so many
connections at once (``SandboxLimits.egress_connections``): each costs the host two
descriptors, so more are refused with 503.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import tempfile
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from urllib.parse import urlsplit

from autonomic.errors import ConfigError
from autonomic.sandbox.httpcheck import (
    Head,
    Refused,
    absolute_target,
    authority,
    body_length,
    forward_body,
    origin_head,
    parse_head,
    read_client_hello,
)

__all__ = ["DEFAULT_CONNECTIONS", "MAX_REQUESTS", "EgressPolicy", "EgressProxy", "EgressRequest"]

_CHUNK = 64 * 1024
_DEFAULT_PORTS = (80, 443)
DEFAULT_CONNECTIONS = 16
MAX_REQUESTS = 1000
"""Requests one execution may make through the proxy: each one is recorded."""
_TARGET = 2048
"""Characters of a request's target kept in its record."""
_BACKLOG = 16
"""Connections the kernel queues until they are accepted (or refused)."""
_PAUSE = 0.1
"""Seconds to stop accepting when the host is out of descriptors."""
_UNRECOGNIZED_NAME = bytes([0x15, 0x03, 0x03, 0x00, 0x02, 0x02, 0x70])
"""A fatal TLS alert, unrecognized_name: how a TLS client learns its server name was refused."""


@dataclass(frozen=True, slots=True)
class EgressRequest:
    """One request through the proxy: what was asked for and whether it was let through.

    ``reason`` says why a request was refused (empty when it was allowed).
    """

    method: str
    host: str
    port: int
    target: str
    allowed: bool
    reason: str = ""


@dataclass(frozen=True, slots=True)
class EgressPolicy:
    """Which ``(host, port)`` pairs may be reached. ``"host"`` means ports 80 and 443.

    ``resolve`` maps host names to the addresses the proxy connects to instead of looking
    them up (like curl's ``--resolve``): for private names, and for tests on loopback.
    """

    allowed: frozenset[tuple[str, int]]
    resolve: Mapping[str, str] = field(default_factory=dict)

    @classmethod
    def of(cls, hosts: Sequence[str], resolve: Mapping[str, str] | None = None) -> EgressPolicy:
        pairs: set[tuple[str, int]] = set()
        for entry in hosts:
            host, port = _split_host(entry)
            if not host:
                raise ConfigError(f"egress entry {entry!r} has no host")
            pairs.update((host, p) for p in ([port] if port else _DEFAULT_PORTS))
        return cls(frozenset(pairs), {k.lower(): v for k, v in (resolve or {}).items()})

    def allows(self, host: str, port: int) -> bool:
        return (host.lower(), port) in self.allowed

    def address(self, host: str) -> str:
        """Where to connect for ``host``: its ``resolve`` entry, or the name itself."""
        return self.resolve.get(host.lower(), host)


def _split_host(text: str) -> tuple[str, int | None]:
    """``"Example.com:8080"`` → ``("example.com", 8080)``; ``"[::1]:80"`` works too."""
    parsed = urlsplit(f"//{text}")
    try:
        port = parsed.port
    except ValueError as e:
        raise ConfigError(f"bad port in {text!r}") from e
    return (parsed.hostname or "").lower(), port


class EgressProxy:
    """The proxy for one sandbox guest, listening on a Unix socket of its own."""

    def __init__(
        self,
        policy: EgressPolicy,
        on_request: Callable[[EgressRequest], None] | None = None,
        *,
        owner: int | None = None,
        max_connections: int = DEFAULT_CONNECTIONS,
        max_requests: int = MAX_REQUESTS,
    ) -> None:
        self._policy = policy
        self._on_request = on_request
        self._owner = owner
        self._listener: socket.socket | None = None
        self._folder: str | None = None
        self.path: str | None = None
        self.requests: list[EgressRequest] = []
        """Every request made through this proxy, in order (one proxy serves one guest)."""
        self.max_connections = max_connections
        """How many connections may be open at once; set per execution."""
        self.refused_connections = 0
        """How many were turned away for being over ``max_connections``."""
        self.max_requests = max_requests
        self.refused_requests = 0
        """How many requests were turned away for being over ``max_requests``."""
        self._connections: set[asyncio.Task[None]] = set()

    async def start(self) -> str:
        """Listen, and return the socket's path (in a fresh directory ``owner`` can reach)."""
        self._folder = tempfile.mkdtemp(prefix="autonomic-egress-")
        self.path = path = os.path.join(self._folder, "proxy.sock")
        self._listener = listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        listener.bind(path)
        listener.listen(_BACKLOG)
        listener.setblocking(False)
        asyncio.get_running_loop().add_reader(listener.fileno(), self._accept)
        os.chmod(self._folder, 0o711)
        if self._owner is not None:
            os.chown(path, self._owner, self._owner)
        os.chmod(path, 0o600)
        return path

    async def close(self) -> None:
        if self._listener is not None:
            asyncio.get_running_loop().remove_reader(self._listener.fileno())
            self._listener.close()
            self._listener = None
        for task in list(self._connections):
            task.cancel()
        await asyncio.gather(*self._connections, return_exceptions=True)
        if self._folder is not None:
            with contextlib.suppress(OSError):
                os.unlink(os.path.join(self._folder, "proxy.sock"))
                os.rmdir(self._folder)

    def _accept(self) -> None:
        """Take the connections waiting. One over ``max_connections`` is answered 503
        and closed right here, so that a flood of them holds no descriptors."""
        assert self._listener is not None
        for _ in range(_BACKLOG):
            try:
                sock = self._listener.accept()[0]
            except (BlockingIOError, InterruptedError):
                return
            except OSError:  # out of descriptors: let the kernel queue them meanwhile
                self._pause()
                return
            if len(self._connections) >= self.max_connections:
                self.refused_connections += 1
                with contextlib.suppress(OSError):
                    sock.setblocking(False)
                    sock.send(self._refusal())
                sock.close()
                continue
            task = asyncio.create_task(self._serve(sock))
            self._connections.add(task)
            task.add_done_callback(self._connections.discard)

    def _pause(self) -> None:
        """Stop accepting for a moment: the host is out of descriptors."""
        assert self._listener is not None
        loop = asyncio.get_running_loop()
        loop.remove_reader(self._listener.fileno())
        loop.call_later(_PAUSE, self._resume)

    def _resume(self) -> None:
        if self._listener is not None:
            asyncio.get_running_loop().add_reader(self._listener.fileno(), self._accept)

    def _refusal(self) -> bytes:
        return _response(
            "503 Service Unavailable",
            f"too many connections through the egress proxy at once (limit "
            f"{self.max_connections}): close one before opening another",
        )

    async def _serve(self, sock: socket.socket) -> None:
        """Carry one connection (one request, or one tunnel) to its end."""
        reader, writer = await asyncio.open_unix_connection(sock=sock)
        try:
            await self._proxy(reader, writer)
        except Refused as e:
            with contextlib.suppress(OSError):
                await _reply(writer, e.status, e.message)
        except (OSError, EOFError, asyncio.LimitOverrunError, ValueError):
            pass  # the client went away or spoke nonsense mid-stream: drop it
        finally:
            writer.close()

    def _record(self, head: Head, host: str, port: int, refusal: str = "") -> None:
        """Hear of a request; ``Refused`` (429) once ``max_requests`` have been heard,
        since each becomes an event in the run's log."""
        if len(self.requests) >= self.max_requests:
            self.refused_requests += 1
            raise Refused(
                "429 Too Many Requests",
                f"this execution has made {self.max_requests} requests through the egress "
                "proxy, the most it may: make fewer, larger ones",
            )
        target = head.target if len(head.target) <= _TARGET else f"{head.target[:_TARGET]}..."
        request = EgressRequest(head.method, host, port, target, not refusal, refusal)
        self.requests.append(request)
        if self._on_request is not None:
            self._on_request(request)

    def _admit(self, head: Head, host: str, port: int, default_port: int) -> None:
        """Record the request; ``Refused`` (403) unless ``host:port`` is allowed and the
        Host header, if any, names it (a Host without a port means ``default_port``)."""
        hosts = head.values("host")
        if len(hosts) > 1:
            raise Refused("400 Bad Request", "more than one Host header")
        if not self._policy.allows(host, port):
            refusal = f"egress to {host}:{port} is not allowed"
        elif hosts and (named := _named(hosts[0], default_port)) != (host, port):
            refusal = (
                f"the Host header names {named[0]}:{named[1]}, but the request goes to "
                f"{host}:{port}: they must agree"
            )
            host, port = named
        else:
            self._record(head, host, port)
            return
        self._record(head, host, port, refusal)
        raise Refused("403 Forbidden", refusal)

    async def _proxy(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = parse_head(await reader.readuntil(b"\r\n\r\n"))
        if head.method == "CONNECT":
            await self._tunnel(head, reader, writer)
            return
        host, port, path = absolute_target(head.target)
        length = body_length(head)
        self._admit(head, host, port, 80)
        up_reader, up_writer = await self._connect(host, port)
        try:
            up_writer.write(origin_head(head, path, _host_field(host, port, 80)))
            await asyncio.gather(forward_body(reader, up_writer, length), _pump(up_reader, writer))
        finally:
            up_writer.close()

    async def _tunnel(
        self, head: Head, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        """CONNECT: open the tunnel, then let through only what is for its host."""
        host, port = authority(head.target)
        port = port or 443
        self._admit(head, host, port, port)
        up_reader, up_writer = await self._connect(host, port)
        try:
            writer.write(b"HTTP/1.1 200 Connection established\r\n\r\n")
            first = await reader.readexactly(1)
            if first[0] == 0x16:
                await self._tls(head, host, port, first, reader, writer, up_writer)
                await asyncio.gather(_pump(reader, up_writer), _pump(up_reader, writer))
            else:
                inner = parse_head(first + await reader.readuntil(b"\r\n\r\n"))
                path = self._inner_target(inner, host, port)
                length = body_length(inner)
                up_writer.write(origin_head(inner, path, _host_field(host, port, 80)))
                await asyncio.gather(
                    forward_body(reader, up_writer, length), _pump(up_reader, writer)
                )
        finally:
            up_writer.close()

    async def _tls(
        self,
        head: Head,
        host: str,
        port: int,
        first: bytes,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        up_writer: asyncio.StreamWriter,
    ) -> None:
        """Pass on the ClientHello if its server name is the tunnel's host (or absent);
        else record the refusal, answer with a TLS alert, and raise ``EOFError``."""
        hello, name = await read_client_hello(reader, first)
        if name is not None and name != host:
            refusal = f"the TLS server name {name} is not the tunnel's host {host}"
            self._record(head, name, port, refusal)
            writer.write(_UNRECOGNIZED_NAME)
            await writer.drain()
            raise EOFError(refusal)
        up_writer.write(hello)

    def _inner_target(self, inner: Head, host: str, port: int) -> str:
        """Where a request inside a tunnel goes: it must name the tunnel's host, in its
        target (if absolute) and its Host header. The path to send on."""
        if inner.target.startswith("/"):
            target = (host, port, inner.target)
        else:
            target = absolute_target(inner.target)
        hosts = inner.values("host")
        if len(hosts) > 1:
            raise Refused("400 Bad Request", "more than one Host header")
        for named in [target[:2], *(_named(value, 80) for value in hosts)]:
            if named != (host, port):
                refusal = (
                    f"the request names {named[0]}:{named[1]}, but the tunnel goes to "
                    f"{host}:{port}: they must agree"
                )
                self._record(inner, named[0], named[1], refusal)
                raise Refused("403 Forbidden", refusal)
        return target[2]

    async def _connect(
        self, host: str, port: int
    ) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        try:
            return await asyncio.open_connection(self._policy.address(host), port)
        except OSError as e:
            raise Refused("502 Bad Gateway", f"cannot reach {host}:{port}: {e}") from e


def _named(value: str, default_port: int) -> tuple[str, int]:
    """The host and port a Host header names."""
    host, port = authority(value)
    return host, port or default_port


def _host_field(host: str, port: int, default_port: int) -> str:
    name = f"[{host}]" if ":" in host else host
    return name if port == default_port else f"{name}:{port}"


def _response(status: str, message: str) -> bytes:
    body = f"{message}\n".encode()
    return (
        f"HTTP/1.1 {status}\r\nContent-Type: text/plain\r\nContent-Length: {len(body)}\r\n"
        "Connection: close\r\n\r\n".encode()
        + body
    )


async def _reply(writer: asyncio.StreamWriter, status: str, message: str) -> None:
    writer.write(_response(status, message))
    await writer.drain()


async def _pump(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """Copy until end of stream, then half-close the other side."""
    try:
        while chunk := await reader.read(_CHUNK):
            writer.write(chunk)
            await writer.drain()
        if writer.can_write_eof():
            writer.write_eof()
    except OSError:
        writer.close()

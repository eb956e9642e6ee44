"""Egress on request: an HTTP proxy, outside the sandbox, that lets through listed hosts.

A sandbox opened with ``egress=[...]`` gets this proxy on a Unix socket bound into it
(its network namespace still has nothing but loopback); inside, ``http_proxy`` and
``https_proxy`` point at a relay on the sandbox's own loopback that carries each
connection to the socket. The proxy serves ``CONNECT host:port`` (HTTPS) and absolute
``http://`` requests, refuses any other host with 403, and reports every request to a
callback, which the runtime can turn into events. Hosts are matched exactly, as
written (a name is resolved on the host, so list names you trust).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import tempfile
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from urllib.parse import urlsplit

from autonomic.errors import ConfigError

__all__ = ["EgressPolicy", "EgressProxy", "EgressRequest"]

_CHUNK = 64 * 1024
_DEFAULT_PORTS = (80, 443)


@dataclass(frozen=True, slots=True)
class EgressRequest:
    """One request through the proxy: what was asked for and whether it was let through."""

    method: str
    host: str
    port: int
    target: str
    allowed: bool


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
    ) -> None:
        self._policy = policy
        self._on_request = on_request
        self._owner = owner
        self._server: asyncio.Server | None = None
        self._folder: str | None = None
        self.path: str | None = None
        self.requests: list[EgressRequest] = []
        """Every request made through this proxy, in order (one proxy serves one guest)."""
        self._connections: set[asyncio.Task[None]] = set()

    async def start(self) -> str:
        """Listen, and return the socket's path (in a fresh directory ``owner`` can reach)."""
        self._folder = tempfile.mkdtemp(prefix="autonomic-egress-")
        self.path = path = os.path.join(self._folder, "proxy.sock")
        self._server = await asyncio.start_unix_server(self._serve, path)
        os.chmod(self._folder, 0o711)
        if self._owner is not None:
            os.chown(path, self._owner, self._owner)
        os.chmod(path, 0o600)
        return path

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
        for task in list(self._connections):
            task.cancel()
        await asyncio.gather(*self._connections, return_exceptions=True)
        if self._server is not None:
            await self._server.wait_closed()
        if self._folder is not None:
            with contextlib.suppress(OSError):
                os.unlink(os.path.join(self._folder, "proxy.sock"))
                os.rmdir(self._folder)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        tasks = {task} if task is not None else set()
        self._connections |= tasks
        try:
            await self._proxy(reader, writer)
        except (OSError, EOFError, asyncio.LimitOverrunError, ValueError, ConfigError):
            pass  # the client went away or spoke nonsense (a head over 64 KiB, say): drop it
        finally:
            self._connections -= tasks
            writer.close()

    async def _proxy(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = await reader.readuntil(b"\r\n\r\n")
        line, _, rest = head.decode("latin-1").partition("\r\n")
        method, target, version = line.split(" ", 2)
        if method == "CONNECT":
            host, port = _split_host(target)
            port = port or 443
        else:
            url = urlsplit(target)
            if url.scheme != "http" or not url.hostname:
                await _reply(writer, "400 Bad Request", "only absolute http:// URLs or CONNECT")
                return
            host, port = url.hostname.lower(), url.port or 80
        allowed = self._policy.allows(host, port)
        request = EgressRequest(method, host, port, target, allowed)
        self.requests.append(request)
        if self._on_request is not None:
            self._on_request(request)
        if not allowed:
            await _reply(writer, "403 Forbidden", f"egress to {host}:{port} is not allowed")
            return
        try:
            up_reader, up_writer = await asyncio.open_connection(self._policy.address(host), port)
        except OSError as e:
            await _reply(writer, "502 Bad Gateway", f"cannot reach {host}:{port}: {e}")
            return
        try:
            if method == "CONNECT":
                writer.write(b"HTTP/1.1 200 Connection established\r\n\r\n")
            else:
                up_writer.write(_origin_request(method, target, version, rest))
            await asyncio.gather(_pump(reader, up_writer), _pump(up_reader, writer))
        finally:
            up_writer.close()


def _origin_request(method: str, target: str, version: str, headers: str) -> bytes:
    """The request as the origin server expects it: a path, no proxy headers, one shot."""
    path = urlsplit(target)._replace(scheme="", netloc="").geturl() or "/"
    kept = [
        h
        for h in headers.split("\r\n")
        if h and not h.lower().startswith(("proxy-", "connection:", "keep-alive:"))
    ]
    return "\r\n".join([f"{method} {path} {version}", *kept, "Connection: close", "", ""]).encode(
        "latin-1"
    )


async def _reply(writer: asyncio.StreamWriter, status: str, message: str) -> None:
    body = f"{message}\n".encode()
    writer.write(
        f"HTTP/1.1 {status}\r\nContent-Type: text/plain\r\nContent-Length: {len(body)}\r\n"
        "Connection: close\r\n\r\n".encode()
        + body
    )
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

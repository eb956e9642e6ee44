"""What the egress proxy reads from sandboxed code, parsed strictly.

A request head, a body's framing, the first message of a tunnel: all of it comes from
code that may be hostile. Whatever two parsers could read two ways (a bare line feed, a
space before a colon, two Host headers, both Content-Length and Transfer-Encoding) is
refused rather than guessed at, so that what the proxy checks is what the server gets.
"""

from __future__ import annotations

import asyncio
import re
from dataclasses import dataclass

__all__ = [
    "Head",
    "Refused",
    "absolute_target",
    "authority",
    "body_length",
    "forward_body",
    "origin_head",
    "parse_head",
    "read_client_hello",
]

_CHUNK = 64 * 1024
_TOKEN = frozenset("!#$%&'*+-.^_`|~0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ")
_CONTROL = re.compile(r"[\x00-\x08\x0a-\x1f\x7f]")
_AUTHORITY = re.compile(r"(?:\[([0-9A-Fa-f:.]+)\]|([A-Za-z0-9._-]+))(?::([0-9]{1,5}))?")
_ABSOLUTE = re.compile(r"(?i:http)://([^/?#]*)([/?][^#]*)?")
_HOP_BY_HOP = frozenset(
    {"connection", "keep-alive", "proxy-connection", "proxy-authorization", "te", "trailer"}
    | {"upgrade", "host"}
)
_FRAMING = frozenset({"content-length", "transfer-encoding"})
"""Never dropped, whatever ``Connection`` lists: the body is forwarded as they frame it."""
_MAX_HOST = 253
"""The longest DNS name."""
_TLS_HANDSHAKE = 0x16
_MAX_HELLO = 1 << 16


class Refused(Exception):
    """A request the proxy will not carry; ``status`` and ``message`` are its answer."""

    def __init__(self, status: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


def _bad(message: str) -> Refused:
    return Refused("400 Bad Request", message)


@dataclass(frozen=True, slots=True)
class Head:
    """A request head: its line, and its fields in order, names as sent."""

    method: str
    target: str
    version: str
    fields: tuple[tuple[str, str], ...]

    def values(self, name: str) -> list[str]:
        """The values of every field called ``name`` (lower case)."""
        return [value for field, value in self.fields if field.lower() == name]


def parse_head(raw: bytes) -> Head:
    """A request head, through its blank line; ``Refused`` (400) if anything is off."""
    text = raw.decode("latin-1")
    if not text.endswith("\r\n\r\n"):
        raise _bad("the request head must end with a blank line")
    lines = text[:-4].split("\r\n")
    parts = lines[0].split(" ")
    if len(parts) != 3:
        raise _bad("the request line must be: METHOD TARGET HTTP/1.1")
    method, target, version = parts
    if not method or not _TOKEN.issuperset(method):
        raise _bad("the method is not a token")
    if not target or any(not "!" <= c <= "~" for c in target):
        raise _bad("the request target is empty or has a control character")
    if version not in ("HTTP/1.0", "HTTP/1.1"):
        raise _bad("only HTTP/1.0 and HTTP/1.1 are carried")
    fields = []
    for line in lines[1:]:
        name, colon, value = line.partition(":")
        if not colon or not name or not _TOKEN.issuperset(name):
            raise _bad(f"malformed header line {line[:60]!r}")
        if _CONTROL.search(value):
            raise _bad(f"the {name} header has a control character")
        fields.append((name, value.strip(" \t")))
    return Head(method, target, version, tuple(fields))


def authority(text: str) -> tuple[str, int | None]:
    """``"Example.com:8080"`` → ``("example.com", 8080)``, ``"[::1]"`` → ``("::1", None)``;
    ``Refused`` (400) for anything else (user info, spaces, a bad port)."""
    match = _AUTHORITY.fullmatch(text)
    host = (match[1] or match[2]) if match else ""
    port = int(match[3]) if match and match[3] else None
    if not 0 < len(host) <= _MAX_HOST or port == 0 or (port or 0) > 65535:
        raise _bad(f"{text[:300]!r} is not a host with an optional port")
    return host.lower(), port


def absolute_target(target: str) -> tuple[str, int, str]:
    """``http://host:port/path?q`` → host, port (80 if none), and ``/path?q``."""
    match = _ABSOLUTE.fullmatch(target)
    if match is None:
        raise _bad("only absolute http:// URLs or CONNECT")
    host, port = authority(match[1])
    path = match[2] or "/"
    return host, port or 80, path if path.startswith("/") else f"/{path}"


def body_length(head: Head) -> int | None:
    """How the body is framed: its length, or None when it is chunked."""
    lengths = head.values("content-length")
    codings = head.values("transfer-encoding")
    if codings:
        if lengths or [c.lower() for c in codings] != ["chunked"]:
            raise _bad("Transfer-Encoding must be chunked alone, without Content-Length")
        return None
    if len(lengths) > 1 or (lengths and not (lengths[0].isascii() and lengths[0].isdigit())):
        raise _bad("Content-Length must be one number")
    return int(lengths[0]) if lengths else 0


def origin_head(head: Head, target: str, host: str) -> bytes:
    """The head sent on: ``target``, one Host header, no hop-by-hop fields, and
    ``Connection: close``, so that the server takes no second request on it."""
    listed = {token.strip().lower() for v in head.values("connection") for token in v.split(",")}
    dropped = _HOP_BY_HOP | (listed - _FRAMING)
    kept = [f"{name}: {value}" for name, value in head.fields if name.lower() not in dropped]
    lines = [f"{head.method} {target} {head.version}", f"Host: {host}", *kept, "Connection: close"]
    return "\r\n".join([*lines, "", ""]).encode("latin-1")


async def _copy(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, size: int) -> None:
    while size > 0:
        chunk = await reader.read(min(size, _CHUNK))
        if not chunk:
            raise EOFError("the body ended early")
        writer.write(chunk)
        await writer.drain()
        size -= len(chunk)


async def _line(reader: asyncio.StreamReader) -> bytes:
    line = await reader.readuntil(b"\r\n")
    if b"\n" in line[:-2] or b"\r" in line[:-2]:
        raise ValueError("a bare line break in a chunked body")
    return line


async def forward_body(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, length: int | None
) -> None:
    """Copy one body, framed by ``length`` (None: chunked), and not a byte more."""
    if length is not None:
        await _copy(reader, writer, length)
        return
    while True:
        line = await _line(reader)
        size = line[:-2].split(b";", 1)[0]
        if not 0 < len(size) <= 16 or not all(c in b"0123456789abcdefABCDEF" for c in size):
            raise ValueError("a chunk size that is not hexadecimal")
        writer.write(line)
        if int(size, 16) == 0:
            break
        await _copy(reader, writer, int(size, 16))
        if await reader.readexactly(2) != b"\r\n":
            raise ValueError("a chunk that does not end with a line break")
        writer.write(b"\r\n")
    while (trailer := await _line(reader)) != b"\r\n":
        writer.write(trailer)
    writer.write(b"\r\n")
    await writer.drain()


class _Cursor:
    """Reads TLS's length-prefixed fields, refusing to run past the end."""

    def __init__(self, data: bytes) -> None:
        self._data = data
        self._at = 0

    @property
    def done(self) -> bool:
        return self._at == len(self._data)

    def take(self, size: int) -> bytes:
        if self._at + size > len(self._data):
            raise ValueError("truncated")
        self._at += size
        return self._data[self._at - size : self._at]

    def number(self, size: int) -> int:
        return int.from_bytes(self.take(size), "big")

    def vector(self, size_bytes: int) -> bytes:
        return self.take(self.number(size_bytes))


def _server_name(hello: _Cursor) -> str | None:
    """The host name a ClientHello's SNI extension asks for, if it has one."""
    hello.take(2 + 32)  # version, random
    hello.vector(1)  # session id
    hello.vector(2)  # cipher suites
    hello.vector(1)  # compression methods
    if hello.done:
        return None
    extensions = _Cursor(hello.vector(2))
    names: list[bytes] = []
    while not extensions.done:
        kind, data = extensions.number(2), extensions.vector(2)
        if kind != 0:
            continue
        entries = _Cursor(data)
        listing = _Cursor(entries.vector(2))
        while not listing.done:
            name_type, name = listing.number(1), listing.vector(2)
            if name_type == 0:
                names.append(name)
    if not hello.done or len(names) > 1:
        raise ValueError("trailing bytes, or several server names")
    if not names:
        return None
    host, port = authority(names[0].decode("ascii"))
    if port is not None:
        raise ValueError("a port in the server name")
    return host


async def read_client_hello(reader: asyncio.StreamReader, first: bytes) -> tuple[bytes, str | None]:
    """The TLS records that carry a ClientHello (``first``, their first byte, is read
    already), exactly as read, and the server name it asks for (None if it names none).
    ``Refused`` (400) if it is not a well-formed ClientHello."""
    try:
        read = bytearray(first + await reader.readexactly(4))
        handshake = bytearray()
        while True:
            header = read[-5:]
            if header[0] != _TLS_HANDSHAKE or header[1] != 3:
                raise ValueError("not a TLS handshake record")
            body = await reader.readexactly(int.from_bytes(header[3:5], "big"))
            read += body
            handshake += body
            if len(read) > _MAX_HELLO:
                raise ValueError("too long")
            if len(handshake) >= 4 and len(handshake) >= 4 + int.from_bytes(handshake[1:4], "big"):
                break
            read += await reader.readexactly(5)
        if handshake[0] != 1:
            raise ValueError("not a ClientHello")
        size = int.from_bytes(handshake[1:4], "big")
        return bytes(read), _server_name(_Cursor(bytes(handshake[4 : 4 + size])))
    except (ValueError, Refused) as e:
        raise _bad(f"a malformed TLS ClientHello ({e})") from None

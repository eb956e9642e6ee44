"""Where an MCP server is, and one client session with it, held by a task of its own.

The MCP tools (``autonomic.tools.mcp``) are built on this; nothing here knows of tools.
"""

from __future__ import annotations

import asyncio
import contextlib
import shlex
import sys
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from typing import Any

from autonomic.errors import ConfigError, MissingExtra

try:
    import anyio
    import httpx2
    from mcp import Client, StdioServerParameters
    from mcp.client import Transport
    from mcp.client.stdio import stdio_client
    from mcp.client.streamable_http import streamable_http_client
    from mcp.shared.exceptions import MCPError
    from mcp.types import CONNECTION_CLOSED, INVALID_REQUEST, CallToolResult
    from mcp.types import Tool as RemoteTool
except ImportError as e:
    raise MissingExtra("mcp", "MCP tools") from e

__all__ = [
    "Disconnected",
    "HttpServer",
    "MCPServerParams",
    "RemoteTool",
    "Session",
    "SessionExpired",
    "StdioServer",
    "Unreachable",
    "http",
    "stdio",
]

_MAX_LIST_PAGES = 100


@dataclass(frozen=True, slots=True)
class StdioServer:
    """An MCP server started as a subprocess, spoken to over its stdin and stdout."""

    command: str
    args: tuple[str, ...] = ()
    env: Mapping[str, str] | None = None
    cwd: str | None = None

    def transport(self) -> Transport:
        params = StdioServerParameters(
            command=self.command,
            args=list(self.args),
            env=dict(self.env) if self.env is not None else None,
            cwd=self.cwd,
        )
        return stdio_client(params, errlog=sys.stderr)

    def __str__(self) -> str:
        return shlex.join([self.command, *self.args])


@dataclass(frozen=True, slots=True)
class HttpServer:
    """An MCP server reached over streamable HTTP at ``url``."""

    url: str
    headers: Mapping[str, str] | None = None

    def transport(self) -> Transport:
        return _http_transport(self.url, dict(self.headers or {}))

    def __str__(self) -> str:
        return self.url


MCPServerParams = StdioServer | HttpServer


def stdio(
    command: str, *args: str, env: Mapping[str, str] | None = None, cwd: str | None = None
) -> StdioServer:
    """A server to start as ``command *args``; ``env`` is added to a minimal environment."""
    return StdioServer(command, args, env, cwd)


def http(url: str, *, headers: Mapping[str, str] | None = None) -> HttpServer:
    """A server at ``url`` (such as ``http://127.0.0.1:8000/mcp``); ``headers`` go on every
    request, e.g. an ``Authorization`` header."""
    if not url.startswith(("http://", "https://")):
        raise ConfigError(f"an MCP server URL starts with http:// or https://, not {url!r}")
    return HttpServer(url, headers)


@contextlib.asynccontextmanager
async def _http_transport(url: str, headers: dict[str, str]) -> AsyncIterator[Any]:
    # The SDK's defaults: a server may hold a response stream open for minutes.
    timeout = httpx2.Timeout(30.0, read=300.0)
    async with (
        httpx2.AsyncClient(headers=headers, timeout=timeout) as client,
        streamable_http_client(url, http_client=client) as streams,
    ):
        yield streams


class Disconnected(Exception):
    """The session ended under a call; the server may or may not have seen the call."""


class Unreachable(Disconnected):
    """No session could be opened, so no call was sent."""


class SessionExpired(Unreachable):
    """The server no longer knows this session (it restarted, or ended it) and refused the
    request unseen: HTTP 404 "Session not found", or 400 for a missing session. The MCP
    spec says to start a new session."""


def _expired(error: MCPError) -> bool:
    return error.code == INVALID_REQUEST and "session" in error.message.lower()


def describe(error: BaseException | None) -> str:
    while isinstance(error, BaseExceptionGroup) and len(error.exceptions) == 1:
        error = error.exceptions[0]
    if error is None:
        return "the connection closed"
    return f"{type(error).__name__}: {error}" if str(error) else type(error).__name__


class Session:
    """An MCP client session entered and left by one task of its own.

    The SDK's transports run in anyio task groups that must be left by the task that
    entered them, and a transport failure cancels the task that holds them: so neither may
    be a caller's task. Callers only send requests through the session.
    """

    def __init__(self, server: MCPServerParams, connect_timeout: float) -> None:
        self.server = server
        self._connect_timeout = connect_timeout
        self._client: Client | None = None
        self._error: BaseException | None = None
        self._ready = asyncio.Event()
        self._stop = asyncio.Event()
        self._task = asyncio.create_task(self._hold(), name=f"MCP session with {server}")

    @property
    def alive(self) -> bool:
        return not self._task.done() and not self._stop.is_set()

    async def _hold(self) -> None:
        try:
            async with Client(self.server.transport()) as client:
                self._client = client
                self._ready.set()
                await self._stop.wait()
        except Exception as e:
            self._error = e
        finally:
            self._client = None
            self._ready.set()

    async def client(self) -> Client:
        try:
            async with asyncio.timeout(self._connect_timeout):
                await self._ready.wait()
        except TimeoutError:
            raise Unreachable(f"no answer within {self._connect_timeout:g}s") from None
        if self._client is None:
            raise Unreachable(describe(self._error))
        return self._client

    async def call(self, name: str, arguments: dict[str, Any]) -> CallToolResult:
        client = await self.client()
        try:
            return await client.call_tool(name, arguments)
        except MCPError as e:
            if _expired(e):
                raise SessionExpired(e.message) from e
            if e.code == CONNECTION_CLOSED:
                raise Disconnected(describe(self._error)) from e
            raise
        except (anyio.BrokenResourceError, anyio.ClosedResourceError) as e:
            raise Disconnected(describe(self._error)) from e

    async def list_tools(self) -> list[RemoteTool]:
        client = await self.client()
        tools: list[RemoteTool] = []
        cursor: str | None = None
        for _ in range(_MAX_LIST_PAGES):
            try:
                page = await client.list_tools(cursor=cursor)
            except MCPError as e:
                if _expired(e):
                    raise SessionExpired(e.message) from e
                raise
            tools.extend(page.tools)
            cursor = page.next_cursor
            if cursor is None:
                break
        return tools

    async def close(self) -> None:
        self._stop.set()
        if not self._ready.is_set():
            self._task.cancel()
        # wait(), not await: closing must neither raise the task's cancellation nor cancel it.
        await asyncio.wait([self._task])

"""Test helpers for the model tests: tool specs, and a scripted HTTP/1.1 server on 127.0.0.1.

Each request is answered by the next ``Reply`` of the script (the last one repeats):
a status and JSON body, a Server-Sent-Events stream, a delay, or a dropped connection.
Requests are recorded so a test can check what went over the wire.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from autonomic.models.base import ToolSpec
from autonomic.models.bundled import TINY

__all__ = [
    "ADD",
    "RECORDINGS",
    "WEATHER",
    "FakeServer",
    "Reply",
    "Request",
    "ServerFactory",
    "smallest_bundled",
]

RECORDINGS = Path(__file__).parent / "recordings"

ADD = ToolSpec(
    "add",
    "Add two numbers.",
    {
        "type": "object",
        "properties": {"a": {"type": "number"}, "b": {"type": "number"}},
        "required": ["a", "b"],
    },
)
WEATHER = ToolSpec(
    "get_weather",
    "Get the current weather for a city.",
    {
        "type": "object",
        "properties": {"city": {"type": "string"}, "unit": {"type": "string"}},
        "required": ["city"],
    },
)


def smallest_bundled() -> str:
    """The fastest bundled model installed: structural tests hold for any model."""
    return "tiny" if TINY.installed() else "brain"


@dataclass(frozen=True)
class Reply:
    status: int = 200
    body: Any = None
    headers: dict[str, str] = field(default_factory=dict)
    delay: float = 0.0
    drop: bool = False
    events: Sequence[Any] | None = None


@dataclass(frozen=True)
class Request:
    method: str
    path: str
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


_REASONS = {200: "OK", 400: "Bad Request", 401: "Unauthorized", 429: "Too Many Requests"}


class FakeServer:
    """Answers from a script (or a function of the request); ``url`` once started."""

    def __init__(self, script: Sequence[Reply] | Callable[[Request], Reply]) -> None:
        self._script = script
        self.requests: list[Request] = []
        self._server: asyncio.Server | None = None
        self._handlers: set[asyncio.Task[None]] = set()
        self.port = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def __aenter__(self) -> FakeServer:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        assert self._server is not None
        self._server.close()
        handlers = list(self._handlers)
        for task in handlers:
            task.cancel()
        await asyncio.gather(*handlers)
        await self._server.wait_closed()

    def _reply_for(self, request: Request) -> Reply:
        if callable(self._script):
            return self._script(request)
        index = min(len(self.requests) - 1, len(self._script) - 1)
        return self._script[index]

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._handlers.add(task)
        try:
            while await self._one(reader, writer):
                pass
        except (ConnectionError, asyncio.IncompleteReadError, asyncio.CancelledError):
            pass  # the client went away, or the server is stopping: end quietly
        finally:
            self._handlers.discard(task)
            writer.close()

    async def _one(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> bool:
        head = await reader.readuntil(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        method, path, _ = lines[0].split(" ", 2)
        headers = {
            k.strip().lower(): v.strip() for k, v in (ln.split(":", 1) for ln in lines[1:] if ln)
        }
        body = await reader.readexactly(int(headers.get("content-length", "0")))
        request = Request(method, path, headers, body)
        self.requests.append(request)
        reply = self._reply_for(request)
        if reply.delay:
            await asyncio.sleep(reply.delay)
        if reply.drop:
            return False
        if reply.events is not None:
            await self._stream(writer, reply)
            return False
        payload = reply.body if isinstance(reply.body, bytes) else json.dumps(reply.body).encode()
        self._head(writer, reply, {"content-length": str(len(payload))})
        writer.write(payload)
        await writer.drain()
        return True

    @staticmethod
    def _head(writer: asyncio.StreamWriter, reply: Reply, extra: dict[str, str]) -> None:
        headers = {"content-type": "application/json", **extra, **reply.headers}
        reason = _REASONS.get(reply.status, "Status")
        lines = [f"HTTP/1.1 {reply.status} {reason}", *(f"{k}: {v}" for k, v in headers.items())]
        writer.write(("\r\n".join(lines) + "\r\n\r\n").encode())

    async def _stream(self, writer: asyncio.StreamWriter, reply: Reply) -> None:
        extra = {"content-type": "text/event-stream", "connection": "close"}
        self._head(writer, reply, extra)
        for event in reply.events or ():
            data = event if isinstance(event, str) else json.dumps(event)
            writer.write(f"data: {data}\n\n".encode())
            await writer.drain()


ServerFactory = Callable[[Sequence[Reply] | Callable[[Request], Reply]], Awaitable[FakeServer]]
"""The ``fake_server`` fixture: starts a scripted server, stopped when the test ends."""

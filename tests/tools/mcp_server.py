"""A real MCP server for the MCP tool tests, written with the SDK's MCPServer.

``python mcp_server.py stdio`` serves over stdin and stdout; ``python mcp_server.py http
[PORT]`` serves streamable HTTP on 127.0.0.1 (a free port by default), and prints the port
once it listens.
"""

from __future__ import annotations

import base64
import os
import socket
import sys

import anyio
import uvicorn
from mcp.server.mcpserver import Context, MCPServer
from mcp.server.mcpserver.exceptions import ToolError
from mcp.server.mcpserver.utilities.types import Image
from mcp.types import (
    AudioContent,
    BlobResourceContents,
    ContentBlock,
    EmbeddedResource,
    ResourceLink,
    TextContent,
    TextResourceContents,
    Tool,
    ToolAnnotations,
    ToolExecution,
)
from pydantic import BaseModel

TASKS_ONLY = {"long_job"}


class TestServer(MCPServer):
    """Marks the tools in TASKS_ONLY as runnable only as MCP tasks (``taskSupport:
    required``), which MCPServer's decorator cannot say."""

    async def list_tools(self) -> list[Tool]:
        required = ToolExecution(task_support="required")
        return [
            tool.model_copy(update={"execution": required}) if tool.name in TASKS_ONLY else tool
            for tool in await super().list_tools()
        ]


server = TestServer("autonomic-test")

# The smallest valid PNG: one transparent pixel.
PIXEL = bytes.fromhex(
    "89504e470d0a1a0a0000000d4948445200000001000000010806000000"
    "1f15c4890000000d49444154789c63000100000500010d0a2db40000000049454e44ae426082"
)


class Forecast(BaseModel):
    city: str
    celsius: float
    sky: str


@server.tool(annotations=ToolAnnotations(read_only_hint=True))
def add(a: int, b: int) -> int:
    """Add two integers."""
    return a + b


@server.tool(annotations=ToolAnnotations(idempotent_hint=True))
def echo(text: str, times: int = 1) -> str:
    """Repeat a text."""
    return " ".join([text] * times)


@server.tool()
def forecast(city: str) -> Forecast:
    """The weather in a city, as structured data."""
    return Forecast(city=city, celsius=21.5, sky="clear")


@server.tool()
def pixel() -> Image:
    """A one-pixel image."""
    return Image(data=PIXEL, format="png")


@server.tool()
def report() -> list[ContentBlock]:
    """A result of every other kind of content."""
    return [
        TextContent(text="see attached"),
        EmbeddedResource(resource=TextResourceContents(uri="file:///notes.txt", text="hello")),
        EmbeddedResource(resource=BlobResourceContents(uri="file:///a.bin", blob="AAEC")),
        ResourceLink(name="log", uri="file:///log.txt"),
        AudioContent(data="AAAA", mime_type="audio/wav"),
    ]


@server.tool()
def refuse(reason: str) -> str:
    """Always fails, the way a tool reports an error."""
    raise ToolError(f"refused: {reason}")


@server.tool()
async def slow(seconds: float) -> str:
    """Sleeps, then answers."""
    await anyio.sleep(seconds)
    return f"slept {seconds}s"


@server.tool(name="math.mul")
def mul(a: float, b: float) -> float:
    """Multiply two numbers (a dotted name, as some servers use)."""
    return a * b


@server.tool()
def caller(ctx: Context) -> str:
    """Who is calling, by the request's Authorization header (none over stdio)."""
    return (ctx.headers or {}).get("authorization", "nobody")


@server.tool()
def pid() -> int:
    """The server's process id, to tell one server process from the next."""
    return os.getpid()


@server.tool()
def long_job(size: int) -> str:
    """A job the server runs only as an MCP task."""
    return f"done {size}"


@server.tool()
def snapshot() -> dict[str, object]:
    """A JSON result that carries a 300 KB image as base64, as some servers send them."""
    data = base64.b64encode(bytes(range(256)) * 1200).decode()
    return {"caption": "the dashboard", "image": {"mimeType": "image/png", "data": data}}


@server.tool()
def crash() -> str:
    """Kills the server process in the middle of the call."""
    os._exit(3)


async def serve_http(port: int = 0) -> None:
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", port))
    sock.listen()
    print(sock.getsockname()[1], flush=True)
    config = uvicorn.Config(server.streamable_http_app(), log_level="warning")
    await uvicorn.Server(config).serve(sockets=[sock])


def speak_the_handshake_protocol_only() -> None:
    """Answer as servers deployed today do (the 2025-11-25 handshake, with HTTP sessions and
    task support flags): without ``server/discover`` the client falls back to it."""
    server._lowlevel_server._request_handlers.pop("server/discover")


if __name__ == "__main__":
    if "legacy" in sys.argv:
        sys.argv.remove("legacy")
        speak_the_handshake_protocol_only()
    if sys.argv[1:2] == ["http"]:
        anyio.run(serve_http, int(sys.argv[2]) if sys.argv[2:] else 0)
    else:
        server.run("stdio")

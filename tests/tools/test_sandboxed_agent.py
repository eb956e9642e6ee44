"""An agent that writes code and runs it in the sandbox, through the durable runtime."""

from __future__ import annotations

import asyncio
import shutil
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from autonomic import Agent, Runtime, ScriptedModel, tool_call
from autonomic.events import ActionCompleted, EgressRequested
from autonomic.loader import read_events
from autonomic.tools.sandboxed import run_python
from autonomic.views import render_trace

pytestmark = pytest.mark.skipif(shutil.which("bwrap") is None, reason="needs bubblewrap")


async def _answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    await reader.readuntil(b"\r\n\r\n")
    writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello")
    await writer.drain()
    writer.close()


@pytest.fixture
async def ports() -> AsyncIterator[tuple[int, int]]:
    """Two HTTP servers on the host's loopback: one the agent may reach, one it may not."""
    allowed = await asyncio.start_server(_answer, "127.0.0.1", 0)
    other = await asyncio.start_server(_answer, "127.0.0.1", 0)
    async with allowed, other:
        yield allowed.sockets[0].getsockname()[1], other.sockets[0].getsockname()[1]


async def test_code_runs_sandboxed_and_each_request_is_an_event(
    tmp_path: Path, ports: tuple[int, int]
) -> None:
    allowed, other = ports
    # host names, resolved by the proxy itself to the two servers on the host's loopback
    code = (
        "import urllib.request, urllib.error\n"
        f"print(urllib.request.urlopen('http://api.example.test:{allowed}/a').read().decode())\n"
        "try:\n"
        f"    urllib.request.urlopen('http://other.example.test:{other}/b')\n"
        "except urllib.error.HTTPError as e:\n"
        "    print('refused', e.code)\n"
        # the allowed host's address, but another site's name: refused as well
        f"fronted = urllib.request.Request('http://api.example.test:{allowed}/c',\n"
        "                                 headers={'Host': 'evil.example.test'})\n"
        "try:\n"
        "    urllib.request.urlopen(fronted)\n"
        "except urllib.error.HTTPError as e:\n"
        "    print('fronting refused', e.code)\n"
    )
    tool = run_python(
        allow_hosts=[f"api.example.test:{allowed}"],
        resolve={"api.example.test": "127.0.0.1", "other.example.test": "127.0.0.1"},
    )
    agent = Agent(
        name="coder",
        model=ScriptedModel([tool_call("run_python", code=code), "done"]),
        tools=[tool],
    )
    async with Runtime(f"sqlite:///{tmp_path / 'r.db'}") as rt:
        run = await rt.start(agent, "fetch it")
        await run.wait()
        stored = await read_events(rt.store, run.run_id)
    events = [s.event for s in stored]
    (done,) = [e for e in events if isinstance(e, ActionCompleted)]
    assert "hello" in done.observation and "refused 403" in done.observation
    assert "fronting refused 403" in done.observation
    egress = [(e.host, e.port, e.allowed) for e in events if isinstance(e, EgressRequested)]
    assert egress == [
        ("api.example.test", allowed, True),
        ("other.example.test", other, False),
        ("evil.example.test", 80, False),
    ]
    trace = render_trace(stored)
    assert f"egress GET api.example.test:{allowed} allowed" in trace
    assert f"egress GET other.example.test:{other} refused" in trace
    assert "egress GET evil.example.test:80 refused" in trace

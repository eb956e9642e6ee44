"""MCP tools against a real MCP server (tests/tools/mcp_server.py), over stdio and HTTP."""

from __future__ import annotations

import contextlib
import importlib
import json
import os
import select
import signal
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from autonomic import Agent, Runtime, ScriptedModel, tool_call
from autonomic.errors import ConfigError, MissingExtra, ToolError
from autonomic.events import ActionCompleted, ActionFailed, ActionRequested
from autonomic.loader import read_events
from autonomic.tools import ToolContext
from autonomic.tools.executor import execute_action
from autonomic.tools.mcp import HttpServer, MCPTool, MCPTools, StdioServer, http, mcp_tools, stdio

SERVER = Path(__file__).with_name("mcp_server.py")
EXAMPLE = Path(__file__).parents[2] / "examples" / "mcp_agent.py"
CONTEXT = ToolContext(run_id="run-1", action_id="call-1")
START_S = 30.0


def stdio_tools() -> MCPTools:
    return mcp_tools(stdio(sys.executable, str(SERVER), "stdio"))


@contextlib.contextmanager
def http_server() -> Iterator[str]:
    """A server process on a free loopback port; its URL once it listens."""
    proc = subprocess.Popen(
        [sys.executable, str(SERVER), "http"], stdout=subprocess.PIPE, text=True
    )
    assert proc.stdout is not None
    try:
        ready, _, _ = select.select([proc.stdout], [], [], START_S)
        assert ready, f"the MCP server did not start within {START_S:g}s"
        yield f"http://127.0.0.1:{int(proc.stdout.readline())}/mcp"
    finally:
        proc.kill()
        proc.wait()
        proc.stdout.close()


@pytest.fixture(scope="module")
def http_url() -> Iterator[str]:
    with http_server() as url:
        yield url


@pytest.fixture(params=["stdio", "http"])
def server(request: pytest.FixtureRequest) -> StdioServer | HttpServer:
    if request.param == "stdio":
        return stdio(sys.executable, str(SERVER), "stdio")
    return http(request.getfixturevalue("http_url"))


@pytest.fixture
async def tools(server: StdioServer | HttpServer) -> AsyncIterator[dict[str, MCPTool]]:
    async with mcp_tools(server, timeouts={"slow": 0.5}) as toolset:
        yield {t.spec.name: t for t in toolset}


def request(tool_name: str, **args: object) -> ActionRequested:
    return ActionRequested("run-1", "call-1", tool_name, dict(args))


# -- listing ---------------------------------------------------------------------------


async def test_the_server_tools_become_tool_specs(tools: dict[str, MCPTool]) -> None:
    add = tools["add"].spec
    assert add.description == "Add two integers."
    assert add.parameters == {
        "type": "object",
        "properties": {"a": {"type": "integer"}, "b": {"type": "integer"}},
        "required": ["a", "b"],
    }
    assert tools["echo"].spec.parameters["properties"]["times"]["default"] == 1
    assert "math_mul" in tools  # "math.mul" on the server: a name model APIs accept
    assert tools["math_mul"].remote_name == "math.mul"
    assert tools["add"].timeout == 60.0 and tools["slow"].timeout == 0.5


async def test_idempotency_defaults_to_the_server_hints(tools: dict[str, MCPTool]) -> None:
    assert tools["add"].idempotent  # read-only
    assert tools["echo"].idempotent  # idempotent
    assert not tools["forecast"].idempotent  # no hint


async def test_choosing_renaming_and_configuring_tools(http_url: str) -> None:
    toolset = mcp_tools(
        http(http_url),
        include=["add", "echo", "slow"],
        exclude=["slow"],
        prefix="calc_",
        rename={"echo": "say"},
        timeout=5.0,
        timeouts={"echo": None},
        idempotent={"add": False},
    )
    with pytest.raises(ConfigError, match="not listed yet"):
        list(toolset)
    async with toolset:
        assert [t.spec.name for t in toolset] == ["calc_add", "say"]
        assert [(t.timeout, t.idempotent) for t in toolset] == [(5.0, False), (None, True)]
        assert await toolset[1].invoke({"text": "hi", "times": 2}, CONTEXT) == "hi hi"
    assert "2 tools" in repr(toolset)


async def test_headers_go_with_every_request(http_url: str) -> None:
    async with mcp_tools(
        http(http_url, headers={"Authorization": "Bearer t0ken"}), include=["caller"]
    ) as toolset:
        assert await toolset[0].invoke({}, CONTEXT) == "Bearer t0ken"


async def test_a_misspelt_tool_name_in_the_options_is_refused(http_url: str) -> None:
    with pytest.raises(ConfigError, match=r"rename names 'ad', which MCP server .* does not"):
        async with mcp_tools(http_url, rename={"ad": "plus"}):
            pass
    with pytest.raises(ConfigError, match="two tools named"):
        async with mcp_tools(http_url) as toolset:
            Agent("twice", tools=[*toolset, *toolset])


# -- calling ---------------------------------------------------------------------------


async def test_a_call_returns_the_text_of_the_result(tools: dict[str, MCPTool]) -> None:
    assert await tools["add"].invoke({"a": 2, "b": 3}, CONTEXT) == "5"
    assert json.loads(await tools["forecast"].invoke({"city": "Oslo"}, CONTEXT)) == {
        "city": "Oslo",
        "celsius": 21.5,
        "sky": "clear",
    }
    assert await tools["math_mul"].invoke({"a": 2, "b": 4}, CONTEXT) == "8.0"


async def test_other_content_is_described_in_words(tools: dict[str, MCPTool]) -> None:
    assert await tools["pixel"].invoke({}, CONTEXT) == "[image: image/png, 67 bytes]"
    assert await tools["report"].invoke({}, CONTEXT) == "\n".join(
        [
            "see attached",
            "[resource file:///notes.txt]",
            "hello",
            "[resource file:///a.bin: binary, 3 bytes]",
            "[resource link: log <file:///log.txt>]",
            "[audio: audio/wav, 3 bytes]",
        ]
    )


async def test_binary_data_in_a_json_result_is_described_not_pasted(
    tools: dict[str, MCPTool],
) -> None:
    observation = await tools["snapshot"].invoke({}, CONTEXT)
    assert len(observation) < 300
    assert '"caption": "the dashboard"' in observation
    assert "[binary data, 307200 bytes]" in observation


async def test_bad_arguments_fail_against_the_schema(tools: dict[str, MCPTool]) -> None:
    with pytest.raises(ToolError) as caught:
        await tools["add"].invoke({"a": "two"}, CONTEXT)
    assert str(caught.value) == (
        "invalid arguments: arguments: 'b' is a required property; "
        "a: 'two' is not of type 'integer'"
    )
    assert not caught.value.retryable


async def test_bad_arguments_are_refused_without_asking_the_server() -> None:
    with http_server() as url:
        toolset = mcp_tools(url).load()
    tools = {t.spec.name: t for t in toolset}  # the server is gone now
    with pytest.raises(ToolError, match="invalid arguments") as bad:
        await tools["add"].invoke({"a": "one", "b": 2}, CONTEXT)
    assert not bad.value.retryable
    with pytest.raises(ToolError, match="cannot reach MCP server") as gone:
        await tools["add"].invoke({"a": 1, "b": 2}, CONTEXT)
    assert gone.value.retryable


async def test_a_tool_error_on_the_server_is_a_tool_error(tools: dict[str, MCPTool]) -> None:
    with pytest.raises(ToolError, match="refused: no reason") as caught:
        await tools["refuse"].invoke({"reason": "no reason"}, CONTEXT)
    assert not caught.value.retryable


async def test_a_slow_tool_times_out_and_the_session_goes_on(tools: dict[str, MCPTool]) -> None:
    failed = await execute_action(tools["slow"], request("slow", seconds=30), "run-1")
    assert isinstance(failed, ActionFailed)
    assert failed.error == "timed out after 0.5s"
    done = await execute_action(tools["add"], request("add", a=1, b=1), "run-1")
    assert isinstance(done, ActionCompleted) and done.observation == "2"


# -- a server that goes away -----------------------------------------------------------


async def test_a_server_that_dies_during_a_call_is_restarted_for_the_next() -> None:
    async with stdio_tools() as toolset:
        tools = {t.spec.name: t for t in toolset}
        first = await tools["pid"].invoke({}, CONTEXT)
        with pytest.raises(ToolError, match="may or may not have run") as caught:
            await tools["crash"].invoke({}, CONTEXT)
        assert not caught.value.retryable  # not idempotent: it may have had its effect
        assert await tools["pid"].invoke({}, CONTEXT) != first


async def test_an_idempotent_call_is_sent_again_to_a_new_server() -> None:
    async with stdio_tools() as toolset:
        tools = {t.spec.name: t for t in toolset}
        first = await tools["pid"].invoke({}, CONTEXT)
        os.kill(int(first), signal.SIGKILL)
        assert await tools["add"].invoke({"a": 1, "b": 2}, CONTEXT) == "3"
        assert await tools["pid"].invoke({}, CONTEXT) != first


async def test_a_server_that_cannot_start_is_a_retryable_error(tmp_path: Path) -> None:
    with pytest.raises(ToolError, match="cannot list the tools") as caught:
        async with mcp_tools(stdio(str(tmp_path / "no-such-server"))):
            pass
    assert caught.value.retryable


async def test_a_server_that_never_answers_is_given_up_on() -> None:
    with pytest.raises(ToolError, match=r"no answer within 0\.5s"):
        async with mcp_tools(stdio("sleep", "60"), connect_timeout=0.5):
            pass


# -- with the runtime ------------------------------------------------------------------


async def test_an_agent_run_uses_mcp_tools(server: StdioServer | HttpServer, db_url: str) -> None:
    calls = [tool_call("add", a=2, b=3), tool_call("calc_forecast", city="Oslo")]
    async with mcp_tools(
        server, include=["add", "forecast"], rename={"forecast": "calc_forecast"}
    ) as toolset:
        agent = Agent(name="mcp-calc", model=ScriptedModel([calls, "done"]), tools=toolset)
        async with Runtime(db_url) as runtime:
            run = await runtime.start(agent, "What is 2+3, and the weather in Oslo?")
            assert (await run.wait()).answer == "done"
            events = [s.event for s in await read_events(runtime.store, run.run_id)]
    requested = {e.action_id: e for e in events if isinstance(e, ActionRequested)}
    completed = [e for e in events if isinstance(e, ActionCompleted)]
    seen = {
        requested[e.action_id].tool: (e.observation, requested[e.action_id].idempotent)
        for e in completed
    }
    assert seen["add"] == ("5", True)
    assert json.loads(seen["calc_forecast"][0])["sky"] == "clear"
    assert not seen["calc_forecast"][1]


def test_an_agent_defined_at_import_time_runs_from_the_cli(tmp_path: Path) -> None:
    """The example lists its tools at import; the run connects again; exit is clean."""
    done = subprocess.run(
        [
            sys.executable,
            "-W",
            "error",
            "-m",
            "autonomic.cli",
            "--store",
            f"sqlite:///{tmp_path / 'runs.db'}",
            "run",
            "--agent",
            f"{EXAMPLE}:agent",
            "What is 2+3?",
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert "2 + 3 = 5" in done.stdout
    assert "Warning" not in done.stderr and "Traceback" not in done.stderr


def test_without_the_sdk_the_module_asks_for_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "mcp", None)
    for name in ("autonomic.tools.mcp", "autonomic.tools._mcp_session"):
        monkeypatch.delitem(sys.modules, name)
    with pytest.raises(MissingExtra, match=r'pip install "autonomic\[mcp\]"'):
        importlib.import_module("autonomic.tools.mcp")


def start_http(port: int = 0, *, legacy: bool = False) -> tuple[subprocess.Popen[str], int]:
    """The test server on ``port`` (a free one by default); ``legacy``: speaking only the
    handshake protocol (HTTP sessions, task flags), as most deployed servers do."""
    args = [sys.executable, str(SERVER), "http", str(port), *(["legacy"] if legacy else [])]
    proc = subprocess.Popen(args, stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    ready, _, _ = select.select([proc.stdout], [], [], START_S)
    assert ready, f"the MCP server did not start within {START_S:g}s"
    return proc, int(proc.stdout.readline())


def stop(proc: subprocess.Popen[str]) -> None:
    proc.kill()
    proc.wait()
    assert proc.stdout is not None
    proc.stdout.close()


@pytest.mark.parametrize("legacy", [False, True], ids=["2026-07-28", "handshake-sessions"])
async def test_a_restarted_http_server_gets_a_new_session(legacy: bool) -> None:
    """The same URL, a new server process, which answers the old session with 404
    "Session not found": the next call (not idempotent) runs on a new session."""
    first, port = start_http(legacy=legacy)
    second: subprocess.Popen[str] | None = None
    try:
        async with mcp_tools(http(f"http://127.0.0.1:{port}/mcp")) as toolset:
            tools = {t.spec.name: t for t in toolset}
            assert not tools["pid"].idempotent
            before = await tools["pid"].invoke({}, CONTEXT)
            stop(first)
            second, _ = start_http(port, legacy=legacy)
            after = await tools["pid"].invoke({}, CONTEXT)
    finally:
        for proc in (first, second):
            if proc is not None and proc.poll() is None:
                stop(proc)
    assert second is not None and after == str(second.pid) != before


async def test_tools_that_need_mcp_tasks_are_not_offered() -> None:
    proc, port = start_http(legacy=True)
    url = f"http://127.0.0.1:{port}/mcp"
    try:
        async with mcp_tools(http(url)) as toolset:
            names = {t.spec.name for t in toolset}
        assert "long_job" not in names and "add" in names
        with pytest.raises(ConfigError, match="can only be run as an MCP task"):
            async with mcp_tools(http(url), include=["long_job", "add"]):
                pass
        async with mcp_tools(http(url), exclude=["long_job"]) as toolset:
            assert "long_job" not in {t.spec.name for t in toolset}
    finally:
        stop(proc)

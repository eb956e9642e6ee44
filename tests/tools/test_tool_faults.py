"""Whatever a tool does, the run records an outcome, goes on, ends, and ``wait()`` returns.

Every case runs through the public API (a Runtime on a SQLite file, an Agent whose scripted
model calls the tool, then answers), and asserts the recorded ActionFailed or
ActionCompleted and the run's end.
"""

from __future__ import annotations

import asyncio
import dataclasses
import itertools
import os
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from autonomic import Agent, ConfigError, Runtime, ScriptedModel, ToolError, tool, tool_call
from autonomic.events import ActionCompleted, ActionFailed, ActionRequested, Event
from autonomic.models.base import ToolSpec
from autonomic.runtime import RunResult
from autonomic.tools import ToolContext, ToolOptions
from autonomic.tools.executor import execute_action
from autonomic.tools.observations import MAX_ITEMS, observation_of
from autonomic.tools.secrets import FileSecrets
from autonomic.tools.threads import POOL

ROOT = Path(__file__).resolve().parents[2]


async def run_tool(
    tmp_path: Path, calls: list[Any], *tools: Any, secrets: Any = None
) -> tuple[RunResult, list[Event]]:
    """Run an agent that makes ``calls`` (one turn), then answers "survived"."""
    agent = Agent(name="faults", model=ScriptedModel([calls, "survived"]), tools=list(tools))
    async with Runtime(f"sqlite:///{tmp_path / 'runs.db'}", secrets=secrets) as rt:
        run = await rt.start(agent, "call the tool")
        async with asyncio.timeout(60):  # a guard against a dead driver, not a measurement
            result = await run.wait()
        events = [stored.event async for stored in rt.events(run.run_id, follow=False)]
    return result, events


def outcomes(events: list[Event]) -> list[ActionCompleted | ActionFailed]:
    return [e for e in events if isinstance(e, ActionCompleted | ActionFailed)]


async def only_outcome(
    tmp_path: Path, the_tool: Any, **args: Any
) -> ActionCompleted | ActionFailed:
    result, events = await run_tool(tmp_path, [tool_call(the_tool.spec.name, **args)], the_tool)
    assert (result.status, result.answer) == ("completed", "survived")
    (outcome,) = outcomes(events)
    return outcome


# -- tools that raise what they should not --------------------------------------------


class Meltdown(BaseException):
    """A custom BaseException, as some libraries define."""


class BadStr(Exception):
    def __str__(self) -> str:
        raise ValueError("no text for you")

    def __repr__(self) -> str:
        raise ValueError("nor a repr")


class BrokenToolError(ToolError):
    def __str__(self) -> str:
        raise RuntimeError("broken")


def raising(exc: Callable[[], BaseException], *, is_async: bool) -> Any:
    if is_async:

        async def boom_async() -> str:
            "Raises."
            raise exc()

        return tool(name="boom", timeout=10)(boom_async)

    def boom() -> str:
        "Raises."
        raise exc()

    return tool(name="boom", timeout=10)(boom)


RAISES = [
    ("SystemExit", lambda: SystemExit(3), "SystemExit: 3"),
    ("KeyboardInterrupt", KeyboardInterrupt, "KeyboardInterrupt"),
    ("GeneratorExit", GeneratorExit, "GeneratorExit"),
    ("custom BaseException", lambda: Meltdown("core"), "Meltdown: core"),
    (
        "CancelledError of its own",
        asyncio.CancelledError,
        "the tool raised CancelledError, but nothing cancelled it",
    ),
    (
        "__str__ and __repr__ raise",
        BadStr,
        "BadStr: (its message could not be read: ValueError)",
    ),
    (
        "a ToolError whose __str__ raises",
        lambda: BrokenToolError("unreadable"),
        "BrokenToolError: (its message could not be read: RuntimeError)",
    ),
]


@pytest.mark.parametrize("is_async", [True, False], ids=["async", "sync"])
@pytest.mark.parametrize(("exc", "reason"), [r[1:] for r in RAISES], ids=[r[0] for r in RAISES])
async def test_a_tool_raising_anything_fails_the_action_not_the_run(
    tmp_path: Path, exc: Callable[[], BaseException], reason: str, is_async: bool
) -> None:
    outcome = await only_outcome(tmp_path, raising(exc, is_async=is_async))
    assert isinstance(outcome, ActionFailed)
    assert outcome.error == reason


# -- results that cannot be shown as they are -----------------------------------------


class Opaque:
    def __repr__(self) -> str:
        raise RuntimeError("no repr")


@dataclasses.dataclass
class Point:
    x: int
    y: int


def returning(value: Callable[[], Any]) -> Any:
    def give() -> Any:
        "Returns something awkward."
        return value()

    return tool(name="give", timeout=10)(give)


def cyclic() -> list[Any]:
    items: list[Any] = [1]
    items.append(items)
    return items


def nested(depth: int) -> list[Any]:
    value: list[Any] = []
    for _ in range(depth):
        value = [value]
    return value


RESULTS = [
    ("object whose repr raises", lambda: {"x": Opaque()}, '{"x":"[Opaque object]"}'),
    ("lone surrogate", lambda: "half an emoji: \ud83d!", "half an emoji: \ufffd!"),
    ("lone surrogate inside", lambda: ["\udc00"], '["\ufffd"]'),
    ("cycle", cyclic, '[1,"[cycle]"]'),
    ("huge int", lambda: 7**20_000, f'"[an integer of {(7**20_000).bit_length():,} bits]"'),
    ("bytes that are not UTF-8", lambda: b"\xff\xfe\x00", '"[3 bytes of binary data]"'),
    ("non-finite floats", lambda: [float("nan"), float("inf")], '["nan","inf"]'),
    ("set of tuples", lambda: {(1, 2)}, "[[1,2]]"),
    ("dataclass", lambda: Point(1, 2), '{"x":1,"y":2}'),
    ("non-str keys", lambda: {1: "a", None: "b"}, '{"1":"a","None":"b"}'),
]


@pytest.mark.parametrize(("value", "shown"), [r[1:] for r in RESULTS], ids=[r[0] for r in RESULTS])
async def test_awkward_results_become_readable_observations(
    tmp_path: Path, value: Callable[[], Any], shown: str
) -> None:
    outcome = await only_outcome(tmp_path, returning(value))
    assert isinstance(outcome, ActionCompleted)
    assert outcome.observation == shown


async def test_too_deep_nesting_is_cut(tmp_path: Path) -> None:
    outcome = await only_outcome(tmp_path, returning(lambda: nested(10_000)))
    assert isinstance(outcome, ActionCompleted)
    assert outcome.observation == "[" * 64 + '"[nested too deeply]"' + "]" * 64


async def test_a_sync_tool_returning_a_coroutine_is_told_to_be_async(tmp_path: Path) -> None:
    async def later() -> str:
        return "never awaited"

    outcome = await only_outcome(tmp_path, returning(later))
    assert isinstance(outcome, ActionFailed)
    assert outcome.error.endswith(
        "TypeError: the tool returned an awaitable: declare it with async def"
    )


async def test_an_iterator_that_fails_midway_fails_the_action(tmp_path: Path) -> None:
    def items() -> Iterator[int]:
        yield 1
        raise ValueError("disk went away")

    outcome = await only_outcome(tmp_path, returning(items))
    assert isinstance(outcome, ActionFailed)
    assert outcome.error == "the tool's result could not be read: ValueError: disk went away"


# -- endless results ------------------------------------------------------------------


async def test_an_endless_generator_is_cut_at_the_item_cap(tmp_path: Path) -> None:
    outcome = await only_outcome(tmp_path, returning(itertools.count))
    assert isinstance(outcome, ActionCompleted)
    shown = outcome.full_output
    assert shown.startswith("[0,1,2,") and shown.endswith(
        f'{MAX_ITEMS - 1},"[more items not shown]"]'
    )


async def test_an_endless_stream_of_text_is_cut_at_the_character_cap(tmp_path: Path) -> None:
    readers: list[threading.Thread] = []

    def lines() -> Iterator[str]:
        while True:
            readers.append(threading.current_thread())
            yield "x" * 1000

    @tool(max_output_chars=50_000, timeout=30)
    async def flood() -> Iterator[str]:
        "Returns an endless iterator of long strings, read off the event loop."
        return lines()

    outcome = await only_outcome(tmp_path, flood)
    assert isinstance(outcome, ActionCompleted)
    note = "\n[output cut at 50,000 characters: the tool returned more]"
    assert outcome.full_output.endswith(note)
    assert len(outcome.full_output) == 50_000
    assert readers and threading.main_thread() not in readers  # never read on the loop


async def test_an_iterator_stuck_in_next_fails_after_the_read_timeout() -> None:
    release = threading.Event()

    def stuck() -> Iterator[int]:
        yield 1
        release.wait()
        yield 2

    try:
        with pytest.raises(ToolError, match=r"reading the tool's result took more than 0.2s"):
            await observation_of(stuck(), read_timeout_s=0.2)
    finally:
        release.set()


# -- hung sync tools ------------------------------------------------------------------


async def test_sync_tools_run_on_daemon_threads(tmp_path: Path) -> None:
    outcome = await only_outcome(tmp_path, returning(lambda: threading.current_thread().daemon))
    assert isinstance(outcome, ActionCompleted) and outcome.observation == "true"


async def test_hung_sync_tools_do_not_starve_later_ones(tmp_path: Path) -> None:
    release = threading.Event()

    @tool(timeout=0.2)
    def hang() -> str:
        "Blocks its thread until the test ends."
        release.wait()
        return "late"

    @tool
    def add(a: int, b: int) -> int:
        "Adds."
        return a + b

    # more hung threads than asyncio's default executor has (min(32, cpus + 4))
    hung = max(33, (os.cpu_count() or 1) + 5)
    script = [[tool_call("hang") for _ in range(hung)], [tool_call("add", a=2, b=3)], "survived"]
    agent = Agent(name="hung", model=ScriptedModel(script), tools=[hang, add])
    try:
        async with Runtime(f"sqlite:///{tmp_path / 'runs.db'}") as rt:
            run = await rt.start(agent, "go")
            async with asyncio.timeout(60):
                result = await run.wait()
            events = [s.event async for s in rt.events(run.run_id, follow=False)]
        assert POOL.threads >= hung + 1
    finally:
        release.set()
    assert result.answer == "survived"
    failed = [e.error for e in events if isinstance(e, ActionFailed)]
    assert failed == ["timed out after 0.2s"] * hung
    (done,) = [e for e in events if isinstance(e, ActionCompleted)]
    assert done.observation == "5"


HANG_SCRIPT = """
import asyncio, sys, threading
from autonomic import Agent, Runtime, ScriptedModel, tool, tool_call

@tool(timeout=0.2)
def hang() -> str:
    "Never returns."
    threading.Event().wait()
    return "never"

async def main() -> None:
    agent = Agent(name="h", model=ScriptedModel([tool_call("hang"), "gave up"]), tools=[hang])
    async with Runtime(sys.argv[1]) as rt:
        run = await rt.start(agent, "go")
        print((await run.wait()).answer, flush=True)

asyncio.run(main())
"""


def test_a_hung_sync_tool_does_not_keep_the_process_from_exiting(tmp_path: Path) -> None:
    script = tmp_path / "hang.py"
    script.write_text(HANG_SCRIPT)
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
    done = subprocess.run(
        [sys.executable, str(script), f"sqlite:///{tmp_path / 'runs.db'}"],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,  # a hang here is the bug: the process waits for the tool's thread
    )
    assert (done.returncode, done.stdout.strip()) == (0, "gave up"), done.stderr


# -- what surrounds the tool ----------------------------------------------------------


async def test_an_unreadable_secrets_file_fails_the_action(tmp_path: Path) -> None:
    @tool(secrets=("API_TOKEN",))
    def call_api(context: ToolContext) -> str:
        "Needs a token."
        return context.secret("API_TOKEN")

    result, events = await run_tool(
        tmp_path, [tool_call("call_api")], call_api, secrets=FileSecrets(tmp_path / "missing.env")
    )
    assert result.answer == "survived"
    (outcome,) = outcomes(events)
    assert isinstance(outcome, ActionFailed)
    assert outcome.error == (
        f"secret API_TOKEN could not be read: cannot read secrets file "
        f"{tmp_path / 'missing.env'}: No such file or directory"
    )


def test_a_rate_limited_tool_serves_a_second_event_loop(tmp_path: Path) -> None:
    @tool(rate_per_s=1000, burst=1)
    async def ping() -> str:
        "Rate limited."
        return "pong"

    async def two_calls(db: str) -> tuple[RunResult, list[Event]]:
        calls = [tool_call("ping"), tool_call("ping")]  # two at once: they contend for the bucket
        agent = Agent(name="p", model=ScriptedModel([calls, "survived"]), tools=[ping])
        async with Runtime(f"sqlite:///{tmp_path / db}") as rt:
            run = await rt.start(agent, "go")
            result = await run.wait()
            return result, [s.event async for s in rt.events(run.run_id, follow=False)]

    for db in ("first.db", "second.db"):  # each asyncio.run is a new event loop
        result, events = asyncio.run(two_calls(db))
        assert result.answer == "survived"
        assert [getattr(o, "observation", None) for o in outcomes(events)] == ["pong", "pong"]


class BrokenTool:
    """A hand-written tool whose timeout property raises."""

    spec = ToolSpec(name="broken", description="Broken.", parameters={"type": "object"})
    idempotent = False
    options = ToolOptions()

    @property
    def timeout(self) -> float | None:
        raise AttributeError("no timeout here")

    async def invoke(self, arguments: dict[str, Any], context: ToolContext) -> str:
        return "unreachable"


class NonStrTool:
    """A hand-written tool whose invoke breaks the protocol by returning a dict."""

    spec = ToolSpec(name="loose", description="Loose.", parameters={"type": "object"})
    idempotent = False
    timeout = 5.0
    options = ToolOptions()

    async def invoke(self, arguments: dict[str, Any], context: ToolContext) -> Any:
        return {"not": "a string"}


async def test_hand_written_tools_that_break_the_protocol(tmp_path: Path) -> None:
    result, events = await run_tool(
        tmp_path, [tool_call("broken"), tool_call("loose")], BrokenTool(), NonStrTool()
    )
    assert result.answer == "survived"
    broken, loose = outcomes(events)
    assert isinstance(broken, ActionFailed)
    assert broken.error == "tool 'broken' could not be run: AttributeError: no timeout here"
    assert isinstance(loose, ActionCompleted) and loose.observation == '{"not":"a string"}'


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"breaker_reset_s": -1}, "breaker_reset_s must be a number >= 0"),
        ({"breaker_reset_s": float("nan")}, "breaker_reset_s must be a number >= 0"),
        ({"breaker_threshold": 1.5}, "breaker_threshold must be a whole number >= 0"),
        ({"backoff_s": -0.1}, "backoff_s must be a number >= 0"),
        ({"max_backoff_s": float("inf")}, "max_backoff_s must be a number >= 0"),
        ({"retries": True}, "retries must be a whole number >= 0"),
        ({"burst": 0}, "burst must be a whole number >= 1"),
        ({"rate_per_s": -2}, "rate_per_s must be a number > 0"),
        ({"max_output_chars": 500}, "max_output_chars must be a whole number >= 16000"),
        (
            {"secrets": "API_TOKEN"},
            r"secrets must be a sequence of names, e.g. secrets=\('API_TOKEN',\)",
        ),
        ({"secrets": ("",)}, "secrets must be a sequence of names"),
        ({"timeout": 0}, "timeout must be a number of seconds > 0 or None"),
        ({"timeout": "5"}, "timeout must be a number of seconds > 0 or None"),
    ],
)
def test_bad_options_are_refused_when_the_tool_is_declared(options: dict, message: str) -> None:
    def f() -> str:
        "A tool."
        return ""

    with pytest.raises(ConfigError, match=message):
        tool(**options)(f)


def test_an_async_generator_is_refused_as_a_tool() -> None:
    async def stream() -> Any:
        "Streams."
        yield 1

    with pytest.raises(ConfigError, match="is an async generator: return a value"):
        tool(stream)


# -- a real cancellation still goes through -------------------------------------------


def request(name: str) -> ActionRequested:
    return ActionRequested("act-1", "call-1", name, {})


class Stubborn:
    """An async tool body that ignores cancellation until the test lets it go."""

    def __init__(self, mode: str) -> None:
        self.mode = mode
        self.started, self.release, self.stopped = asyncio.Event(), asyncio.Event(), asyncio.Event()

    async def run(self) -> str:
        self.started.set()
        try:
            while not self.release.is_set():
                try:
                    await asyncio.sleep(0.01)
                except asyncio.CancelledError:
                    if self.mode == "plain":
                        raise
                    if self.mode == "swallows":
                        return "swallowed the cancellation"
            return "let go"
        finally:
            self.stopped.set()


async def test_a_tool_that_ignores_cancellation_still_times_out(tmp_path: Path) -> None:
    body = Stubborn("ignores")
    stubborn = tool(name="stubborn", timeout=0.1)(body.run)
    try:
        outcome = await only_outcome(tmp_path, stubborn)
    finally:
        body.release.set()
    await body.stopped.wait()
    assert isinstance(outcome, ActionFailed)
    # run in the driver's own task, the call that ignored its timeout's cancellation was
    # left running, and a new driver went on with the run
    assert outcome.error == (
        "timed out after 0.1s, and tool 'stubborn' ignored the cancellation: it was left running"
    )


async def test_execute_action_alone_isolates_a_tool_that_ignores_cancellation() -> None:
    body = Stubborn("ignores")
    stubborn = tool(name="stubborn", timeout=0.1)(body.run)
    try:
        outcome = await execute_action(stubborn, request("stubborn"), "run")
    finally:
        body.release.set()
    await body.stopped.wait()
    assert isinstance(outcome, ActionFailed) and outcome.error == "timed out after 0.1s"


@pytest.mark.parametrize("mode", ["plain", "swallows", "ignores"])
async def test_cancelling_the_caller_cancels_execute_action(mode: str) -> None:
    body = Stubborn(mode)
    stubborn = tool(name="stubborn")(body.run)
    task = asyncio.create_task(execute_action(stubborn, request("stubborn"), "run"))
    await body.started.wait()
    task.cancel()
    try:
        with pytest.raises(asyncio.CancelledError):
            await task
    finally:
        body.release.set()
    await body.stopped.wait()


async def test_cancelling_the_caller_while_a_sync_tool_runs() -> None:
    started, release = threading.Event(), threading.Event()

    @tool
    def block() -> str:
        "Blocks."
        started.set()
        release.wait()
        return "late"

    task = asyncio.create_task(execute_action(block, request("block"), "run"))
    try:
        await asyncio.to_thread(started.wait)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
    finally:
        release.set()

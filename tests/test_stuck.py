"""A model or tool that ignores cancellation cannot hold a run: its driver is left behind,
and a new one, under a new lease epoch, goes on (cancels, fails for time, moves on)."""

from __future__ import annotations

import asyncio
import time

import pytest

from autonomic import (
    Agent,
    FunctionModel,
    ModelRequest,
    Runtime,
    ScriptedModel,
    tool,
    tool_call,
)
from autonomic.events import ActionFailed, Resumed, RunCancelled, RunFailed
from autonomic.loader import read_events
from autonomic.store import InMemoryStore
from autonomic.store.base import Commit, Committed, Store


class Deaf:
    """Something that does not stop when told to, until released."""

    def __init__(self) -> None:
        self.release = asyncio.Event()
        self.entered = asyncio.Event()

    async def hold(self) -> str:
        self.entered.set()
        while not self.release.is_set():
            try:
                await asyncio.sleep(0.01)
            except asyncio.CancelledError:
                continue  # ignores every cancellation
        return "released"


async def test_cancelling_a_run_whose_model_ignores_it(store: Store) -> None:
    deaf = Deaf()

    async def answer(request: ModelRequest) -> str:
        return await deaf.hold()

    agent = Agent(name="deaf-model", model=FunctionModel(answer))
    async with Runtime(store) as rt:
        run = await rt.start(agent, "go")
        await deaf.entered.wait()
        started = time.monotonic()
        result = await rt.cancel(run.run_id, wait_s=10)
        elapsed = time.monotonic() - started
        events = [s.event for s in await read_events(store, run.run_id)]
        deaf.release.set()
    assert result is not None and result.status == "cancelled", result
    assert elapsed < 9
    assert isinstance(events[-1], RunCancelled)
    assert any(isinstance(e, Resumed) and "stuck" in e.reason for e in events)


async def test_the_wall_time_limit_holds_against_a_model_that_ignores_it(store: Store) -> None:
    deaf = Deaf()

    async def answer(request: ModelRequest) -> str:
        return await deaf.hold()

    agent = Agent(name="deaf-model", model=FunctionModel(answer), max_wall_s=0.3)
    async with Runtime(store) as rt:
        result = await (await rt.start(agent, "go")).wait(check=False)
        events = [s.event for s in await read_events(store, result.run_id)]
        deaf.release.set()
    assert result.status == "failed" and "wall-time limit of 0.3s" in (result.error or "")
    assert isinstance(events[-1], RunFailed)


async def test_a_stuck_tool_is_left_behind_and_the_run_goes_on(store: Store) -> None:
    deaf = Deaf()
    calls: list[str] = []

    @tool(timeout=0.1)
    async def hang() -> str:
        "Hang."
        calls.append("hang")
        return await deaf.hold()

    agent = Agent(
        name="stuck-tool", model=ScriptedModel([tool_call("hang"), "moved on"]), tools=[hang]
    )
    async with Runtime(store) as rt:
        result = await (await rt.start(agent, "go")).wait()
        events = [s.event for s in await read_events(store, result.run_id)]
        info = await rt.get_run(result.run_id)
        deaf.release.set()
    failed = next(e for e in events if isinstance(e, ActionFailed))
    assert result.answer == "moved on" and calls == ["hang"]
    assert failed.error.startswith("timed out after 0.1s, and tool 'hang' ignored")
    assert info.lease_epoch >= 2  # the new driver's epoch fenced the stuck one out


async def test_leaving_the_runtime_does_not_wait_for_a_stuck_driver(store: Store) -> None:
    deaf = Deaf()

    async def answer(request: ModelRequest) -> str:
        return await deaf.hold()

    agent = Agent(name="deaf-model", model=FunctionModel(answer))
    started = time.monotonic()
    async with Runtime(store) as rt:
        await rt.start(agent, "go")
        await deaf.entered.wait()
    assert time.monotonic() - started < 8
    deaf.release.set()
    await asyncio.sleep(0.05)


STALLS: list[int] = []


@tool
async def stall(n: int) -> str:
    "Block the whole process (the event loop) past its lease, as a long GC pause does."
    STALLS.append(n)
    time.sleep(0.5)  # noqa: ASYNC251 (the stall is the point)
    return f"stalled {n}"


async def test_a_process_that_stalled_past_its_lease_takes_its_run_back(store: Store) -> None:
    """Nobody else took the run while this process stood still: it must not be stranded
    as 'running' with no driver, nor run a tool twice."""
    STALLS.clear()
    model = ScriptedModel([tool_call("stall", n=1), tool_call("stall", n=2), "done"])
    agent = Agent(name="staller", model=model, tools=[stall])
    async with Runtime(store, lease_s=0.2) as rt:
        run = await rt.start(agent, "stall twice")
        result = await asyncio.wait_for(run.wait(), 30)
        events = [s.event for s in await read_events(store, run.run_id)]
    assert result.answer == "done" and STALLS == [1, 2]
    assert any(isinstance(e, Resumed) and "stalled" in e.reason for e in events)


async def test_a_run_releasing_its_lease_is_not_reported_lost_by_the_heartbeat(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """The heartbeat may renew while the run's last commit, the one that lets the lease
    go, is in flight: that is the run ending, not another process taking it."""

    class SlowToAnswer(InMemoryStore):
        async def commit(self, commit: Commit) -> Committed:
            done = await super().commit(commit)
            if commit.release:  # written, but its answer is slow to come back
                await asyncio.sleep(0.4)
            return done

    agent = Agent(name="quick", model=ScriptedModel(["done"]))
    async with Runtime(SlowToAnswer(), lease_s=0.15) as rt:
        result = await asyncio.wait_for((await rt.start(agent, "go")).wait(), 30)
    assert result.answer == "done"
    assert "lease lost" not in caplog.text

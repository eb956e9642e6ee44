"""Regression tests for the bugs the core review found (issue 7's numbered list)."""

from __future__ import annotations

import asyncio
import sys
import threading
import time
from pathlib import Path
from typing import Any

import msgspec
import pytest

from autonomic import (
    Agent,
    ConfigError,
    InMemoryStore,
    RunEnded,
    Runtime,
    ScriptedModel,
    tool,
    tool_call,
)
from autonomic.cli import main as cli
from autonomic.events import (
    ActionFailed,
    Event,
    NewEvent,
    Resumed,
    RunCancelled,
    RunDead,
    encode_event,
)
from autonomic.lifecycle import run_started
from autonomic.loader import read_events
from autonomic.owner import new_owner_id
from autonomic.store.base import Commit, Committed, NewRun, Store


@tool
async def slow(seconds: float) -> str:
    "Sleep, then say so."
    await asyncio.sleep(seconds)
    return "slept"


def sleeper(script: list[Any], name: str = "sleeper", **kwargs: Any) -> Agent:
    return Agent(name=name, model=ScriptedModel(script), tools=[slow], **kwargs)


async def kinds(store: Store, run_id: str) -> list[str]:
    return [type(s.event).__name__ for s in await read_events(store, run_id)]


class SlowAcks(InMemoryStore):
    """A store whose commits land at once but are acknowledged late, as over a network."""

    ack_s = 0.2

    async def commit(self, commit: Commit) -> Committed:
        committed = await super().commit(commit)
        await asyncio.sleep(self.ack_s)
        return committed


async def test_1_a_cancel_landing_during_a_commit_loses_nothing() -> None:
    store = SlowAcks()
    async with Runtime(store) as rt:
        run = await rt.start(sleeper([tool_call("slow", seconds=30), "never"]), "go")
        await asyncio.sleep(0.05)  # the first commit (ModelCalled) is in flight now
        result = await rt.cancel(run.run_id)
        info = await store.get_run(run.run_id)
        events = await kinds(store, run.run_id)
    assert result is not None and result.status == "cancelled"
    assert info.status == "cancelled" and info.last_seq == len(events)
    assert events[-1] == "RunCancelled"
    async with Runtime(store) as other:
        with pytest.raises(RunEnded):
            await other.resume(run.run_id, agent=sleeper(["done"]))


async def test_1_a_wall_time_limit_landing_during_a_commit_loses_nothing() -> None:
    store = SlowAcks()
    async with Runtime(store) as rt:
        run = await rt.start(sleeper([tool_call("slow", seconds=30)], max_wall_s=0.1), "go")
        result = await run.wait(check=False)
        info = await store.get_run(run.run_id)
        events = await kinds(store, run.run_id)
    assert result.status == "failed" and "wall-time limit" in (result.error or "")
    assert info.status == "failed" and info.last_seq == len(events)


async def test_2_cancel_right_after_start_leaves_no_zombie(store: Store) -> None:
    async with Runtime(store) as rt:
        run = await rt.start(sleeper([tool_call("slow", seconds=30)]), "go")
        result = await run.cancel()
        assert result is not None and result.status == "cancelled"
        assert not rt.supervisor.tasks and not rt.supervisor.drivers
        info = await rt.get_run(run.run_id)
        assert (info.status, info.lease_owner) == ("cancelled", None)
        assert (await run.wait(check=False)).status == "cancelled"


def _encoded(*events: Event) -> list[NewEvent]:
    return [encode_event(e, time.time()) for e in events]


async def _orphan(store: Store, run_id: str, agent: Agent, *, path: str | None = None) -> None:
    """A run whose process died right after starting it (its lease has run out)."""
    started = run_started(agent, "go", "scripted")
    if path is not None:
        started = msgspec.structs.replace(started, agent_path=path)
    await store.create_run(
        NewRun(run_id, agent.name, "go"), _encoded(started), owner="gone:0:0:x", lease_s=0.01
    )


async def test_3_two_concurrent_resumes_make_one_driver(store: Store) -> None:
    agent = sleeper([tool_call("slow", seconds=0.2), "done"])
    await _orphan(store, "r3", agent)
    await asyncio.sleep(0.02)
    async with Runtime(store) as rt:
        handles = await asyncio.gather(
            rt.resume("r3", agent=agent), rt.resume("r3", agent=agent), return_exceptions=True
        )
        assert all(not isinstance(h, BaseException) for h in handles), handles
        assert len(rt.supervisor.tasks) == 1
        info = await rt.get_run("r3")
        assert info.lease_owner == rt.owner  # the winner's lease is intact
        result = await rt.handle("r3").wait()
    assert result.answer == "done"
    assert (await kinds(store, "r3")).count("Resumed") == 1


async def test_8_and_9_an_unloadable_agent_does_not_stop_others_and_ends_dead(
    store: Store,
) -> None:
    good = sleeper(["fine"], name="good")
    await _orphan(store, "bad", sleeper([], name="ghost"), path="no_such_module_x:agent")
    await _orphan(store, "ok", good)
    await asyncio.sleep(0.02)
    async with Runtime(
        store, agents=[good], resume_incomplete=True, max_recoveries=1, poll_s=0.02
    ) as rt:
        assert (await rt.handle("ok").wait()).answer == "fine"
        result = await rt.handle("bad").wait(check=False)
    assert result.status == "dead"
    events = [s.event for s in await read_events(store, "bad")]
    assert isinstance(events[-1], RunDead) and events[-1].recoveries == 2


def _driving_thread_of(module: Path) -> None:
    module.write_text(
        "import threading, time\n"
        "from autonomic import Agent, ScriptedModel\n"
        "IMPORTED_IN = threading.current_thread().name\n"
        "time.sleep(0.2)\n"
        "agent = Agent(name='slowimport', model=ScriptedModel(['imported']))\n"
    )


async def test_12_agents_are_imported_off_the_event_loop(store: Store, tmp_path: Path) -> None:
    module = tmp_path / "slow_import_agent.py"
    _driving_thread_of(module)
    agent = Agent(name="slowimport", model=ScriptedModel(["imported"]))
    await _orphan(store, "r12", agent, path=f"{module}:agent")
    await asyncio.sleep(0.02)
    async with Runtime(store) as rt:
        result = await (await rt.resume("r12")).wait()
    imported = sys.modules["slow_import_agent"]
    assert result.answer == "imported"
    assert threading.main_thread().name != imported.IMPORTED_IN


async def test_10_a_fork_cannot_take_the_parents_ending_and_follows_its_own_end(
    store: Store,
) -> None:
    async with Runtime(store) as rt:
        parent = await rt.start(sleeper(["first"]), "go")
        await parent.wait()
        last = (await rt.get_run(parent.run_id)).last_seq
        with pytest.raises(ConfigError, match=f"event {last} of run .* ends it"):
            await rt.fork(parent.run_id, last)
        fork = await rt.fork(parent.run_id, last - 1, agent=sleeper(["second"]))
        seen = [type(s.event).__name__ async for s in fork.events()]
    assert "RunForked" in seen and seen[-1] == "RunCompleted"
    assert seen.count("RunCompleted") == 1  # the parent's ending is not part of the fork


async def test_11_cancelling_from_another_process_writes_the_same_log(store: Store) -> None:
    logs = []
    for remote in (False, True):
        async with Runtime(store) as driver, Runtime(store, wake=False) as other:
            run = await driver.start(sleeper([tool_call("slow", seconds=30)]), "go")
            async for stored in run.events():  # wait until the tool is running
                if stored.seq >= 4:
                    break
            canceller = other if remote else driver
            await canceller.cancel(run.run_id, by="ops")
            result = await run.wait(check=False)
            events = [s.event for s in await read_events(store, run.run_id)]
        assert result.status == "cancelled"
        logs.append([type(e).__name__ for e in events])
        assert isinstance(events[-1], RunCancelled) and events[-1].by == "ops"
        assert isinstance(events[-2], ActionFailed) and "cancelled" in events[-2].error
    assert logs[0] == logs[1]


async def test_cancel_and_resume_racing_never_resurrect_a_run(store: Store) -> None:
    agent = sleeper([tool_call("slow", seconds=30)])
    await _orphan(store, "race", agent)
    await asyncio.sleep(0.02)
    async with Runtime(store) as rt:
        outcomes = await asyncio.gather(
            rt.cancel("race"), rt.resume("race", agent=agent), return_exceptions=True
        )
        await asyncio.sleep(0.1)
        info = await rt.get_run("race")
        events = await kinds(store, "race")
    assert info.status == "cancelled", outcomes
    assert events[-1] == "RunCancelled" and events.count("RunCancelled") == 1


def test_16_runs_whose_process_died_are_called_orphaned(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    url = f"sqlite:///{tmp_path / 'runs.db'}"

    async def leave_an_orphan() -> None:
        async with Runtime(url) as rt:
            await _orphan(rt.store, "orphan1", sleeper([]))

    asyncio.run(leave_an_orphan())
    time.sleep(0.05)
    assert cli(["--store", url, "runs", "list"]) == 0
    assert "running (orphaned)" in capsys.readouterr().out
    assert cli(["--store", url, "runs", "show", "orphan1"]) == 0
    assert "orphaned: its process died" in capsys.readouterr().out


async def test_a_resumed_run_records_who_took_it_over(store: Store) -> None:
    agent = sleeper(["back"])
    await _orphan(store, "r17", agent)
    await asyncio.sleep(0.02)
    async with Runtime(store) as rt:
        result = await (await rt.resume("r17", agent=agent)).wait()
        events = [s.event for s in await read_events(store, "r17")]
    resumed = next(e for e in events if isinstance(e, Resumed))
    assert result.answer == "back" and resumed.by == rt.owner and resumed.reason == "resumed"
    assert new_owner_id().split(":")[:2] == rt.owner.split(":")[:2]

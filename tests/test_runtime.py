"""The runtime end to end with scripted models, on every store backend."""

from __future__ import annotations

import asyncio
import sys
import time
from pathlib import Path

import pytest

from autonomic import (
    Agent,
    ConfigError,
    Deny,
    FunctionModel,
    Guard,
    LeaseLost,
    ModelError,
    ModelRequest,
    ReplayDivergence,
    RunFailedError,
    RunNotFound,
    Runtime,
    ScriptedModel,
    ToolCall,
    ToolContext,
    run_sync,
    tool,
    tool_call,
)
from autonomic.events import (
    ActionCompleted,
    ActionFailed,
    ActionRequested,
    Event,
    ModelCalled,
    ModelResponded,
    NewEvent,
    RunCancelled,
    encode_event,
)
from autonomic.lifecycle import run_started
from autonomic.loader import load_state, read_events
from autonomic.owner import new_owner_id
from autonomic.state import RunState
from autonomic.steps import Step, ToolCalls
from autonomic.store.base import NewRun, Store


@tool
def add(a: int, b: int) -> int:
    "Add two integers."
    return a + b


@tool
async def slow(seconds: float) -> str:
    "Sleep, then say so."
    await asyncio.sleep(seconds)
    return "slept"


def calc(script: list, **kwargs: object) -> Agent:
    return Agent(name="calc", model=ScriptedModel(script), tools=[add, slow], **kwargs)


async def events_of(runtime: Runtime, run_id: str) -> list[Event]:
    return [s.event for s in await read_events(runtime.store, run_id)]


async def test_a_run_completes_and_records_the_whole_story(store: Store) -> None:
    async with Runtime(store) as rt:
        run = await rt.start(calc([tool_call("add", a=2, b=3), "5"]), "What is 2+3?")
        result = await run.wait()
        assert (result.status, result.answer, result.model_calls) == ("completed", "5", 2)
        kinds = [type(e).__name__ for e in await events_of(rt, run.run_id)]
        assert kinds == [
            "RunStarted",
            "ModelCalled",
            "ModelResponded",
            "ActionRequested",
            "ActionCompleted",
            "ModelCalled",
            "ModelResponded",
            "RunCompleted",
        ]
        assert (await rt.get_run(run.run_id)).status == "completed"


async def test_parallel_tool_calls_run_concurrently(store: Store) -> None:
    calls = [tool_call("slow", seconds=0.2) for _ in range(5)]
    async with Runtime(store) as rt:
        run = await rt.start(calc([calls, "done"]), "wait a lot")
        await run.wait()
        events = await events_of(rt, run.run_id)
    completed = [e for e in events if isinstance(e, ActionCompleted)]
    assert len(completed) == 5
    # five 0.2 s sleeps in parallel: each took about 0.2 s, and they overlapped
    starts = [e for e in events if isinstance(e, ActionRequested)]
    assert len({e.action_id for e in starts}) == 5


async def test_tool_errors_are_observations_the_model_sees(store: Store) -> None:
    seen: list[str] = []

    def decide(request: ModelRequest) -> object:
        turn = sum(m.role == "assistant" for m in request.messages)
        if turn == 0:
            return [tool_call("add", a="x", b=1), tool_call("nope"), tool_call("add", a=1, b=1)]
        seen.extend(m.content for m in request.messages if m.role == "tool")
        return "recovered"

    agent = Agent(name="calc", model=FunctionModel(decide), tools=[add])
    async with Runtime(store) as rt:
        result = await (await rt.start(agent, "go")).wait()
    assert result.answer == "recovered"
    assert seen[0].startswith("Error: invalid arguments: a: Input should be a valid integer")
    assert seen[1] == "Error: unknown tool 'nope' (available: add)"
    assert seen[2] == "2"


async def test_malformed_output_too_many_times_in_a_row_fails_the_run(store: Store) -> None:
    broken = ToolCall("", "add", error="Expecting value: line 1 column 1")
    agent = calc([[broken], "", [broken]], max_malformed=3)
    async with Runtime(store) as rt:
        run = await rt.start(agent, "go")
        with pytest.raises(RunFailedError, match="malformed output 3 times in a row"):
            await run.wait()


async def test_step_limit_fails_the_run(store: Store) -> None:
    agent = calc([tool_call("add", a=1, b=1)] * 10, max_steps=3)
    async with Runtime(store) as rt:
        result = await (await rt.start(agent, "loop")).wait(check=False)
    assert result.status == "failed" and "step limit reached: 3 model calls" in (result.error or "")
    assert result.model_calls == 3


async def test_wall_time_limit_interrupts_a_hung_tool(store: Store) -> None:
    agent = calc([tool_call("slow", seconds=30), "never"], max_wall_s=0.3)
    async with Runtime(store) as rt:
        run = await rt.start(agent, "hang")
        result = await run.wait(check=False)
        events = await events_of(rt, run.run_id)
    assert result.status == "failed" and "wall-time limit of 0.3s" in (result.error or "")
    assert any(isinstance(e, ActionFailed) and "interrupted" in e.error for e in events)


async def test_model_errors_fail_the_run_with_the_reason(store: Store) -> None:
    agent = calc([ModelError("provider is down")])
    async with Runtime(store) as rt:
        with pytest.raises(RunFailedError, match="provider is down"):
            await (await rt.start(agent, "go")).wait()


async def test_cancel_a_running_run(store: Store) -> None:
    async with Runtime(store) as rt:
        run = await rt.start(calc([tool_call("slow", seconds=30), "never"]), "hang")
        await asyncio.sleep(0.1)
        await run.cancel()
        result = await run.wait(check=False)
        events = await events_of(rt, run.run_id)
    assert result.status == "cancelled"
    assert isinstance(events[-1], RunCancelled)
    assert any(isinstance(e, ActionFailed) and "cancelled" in e.error for e in events)


async def test_cancelling_a_finished_run_is_an_error(store: Store) -> None:
    async with Runtime(store) as rt:
        run = await rt.start(calc(["done"]), "go")
        await run.wait()
        with pytest.raises(ConfigError, match="already completed"):
            await run.cancel()


async def test_events_can_be_followed_live(store: Store) -> None:
    async with Runtime(store) as rt:
        run = await rt.start(calc([tool_call("slow", seconds=0.1), "done"]), "go")
        seen = [stored.seq async for stored in run.events()]
    assert seen == list(range(1, 9))


async def test_bad_input_to_the_api_is_a_clear_error(store: Store) -> None:
    async with Runtime(store) as rt:
        with pytest.raises(ConfigError, match="goal is empty"):
            await rt.start(calc(["x"]), "   ")
        with pytest.raises(ConfigError, match=r"needs an autonomic\.Agent"):
            await rt.start("calc", "go")  # type: ignore[arg-type]
        with pytest.raises(RunNotFound, match="no run with id 'missing'"):
            await rt.resume("missing")
    with pytest.raises(ConfigError, match="non-empty name"):
        Agent(name="")
    with pytest.raises(ConfigError, match="two tools named 'add'"):
        Agent(name="x", tools=[add, add])


async def test_replay_rebuilds_the_same_state_without_calling_the_model(store: Store) -> None:
    script = [[tool_call("add", a=2, b=3), tool_call("add", a=1, b=1)], "7"]
    async with Runtime(store) as rt:
        run = await rt.start(calc(script), "sum things")
        await run.wait()

        def never(request: ModelRequest) -> str:
            raise AssertionError("replay must not call the model")

        replayed = await rt.replay(
            run.run_id, agent=Agent(name="calc", model=FunctionModel(never), tools=[add, slow])
        )
        folded = await load_state(rt.store, run.run_id, use_snapshot=False)
    assert replayed == folded
    assert replayed.answer == "7"


async def test_replay_detects_a_strategy_that_decides_differently(store: Store) -> None:
    async with Runtime(store) as rt:
        run = await rt.start(calc([tool_call("add", a=2, b=3), "5"]), "sum")
        await run.wait()
        changed = Agent(
            name="calc",
            instructions="Something else entirely.",
            model=ScriptedModel([]),
            tools=[add, slow],
        )
        with pytest.raises(ReplayDivergence, match=r"event 2 \(ModelCalled\)"):
            await rt.replay(run.run_id, agent=changed)


async def test_fork_shares_history_then_diverges(store: Store) -> None:
    async with Runtime(store) as rt:
        original = await rt.start(calc([tool_call("add", a=2, b=3), "5"]), "sum", priority=3)
        await original.wait()
        # fork right after the tool result (event 5) with an agent that answers differently
        other = Agent(name="calc", model=ScriptedModel(["", "five"]), tools=[add, slow])
        fork = await rt.fork(original.run_id, 5, agent=other)
        result = await fork.wait()
        parent_events = await events_of(rt, original.run_id)
        fork_events = await events_of(rt, fork.run_id)
        forked = await rt.get_run(fork.run_id)
    assert forked.priority == 3  # as its history says (its children would inherit it)
    assert result.answer == "five" and fork.run_id != original.run_id
    assert fork_events[:5] == parent_events[:5]
    assert type(fork_events[5]).__name__ == "RunForked"
    assert result.model_calls == 2  # one shared with the parent, one of its own
    assert type(parent_events[-1]).__name__ == "RunCompleted" and parent_events[-1].answer == "5"


async def test_snapshots_give_the_same_state_as_a_full_fold(store: Store) -> None:
    script = [tool_call("add", a=i, b=1) for i in range(80)] + ["done"]
    async with Runtime(store, snapshot_every=7) as rt:
        run = await rt.start(calc(script, max_steps=100), "count")
        await run.wait()
        snapshot = await rt.store.latest_snapshot(run.run_id)
        from_snapshot = await load_state(rt.store, run.run_id)
        folded = await load_state(rt.store, run.run_id, use_snapshot=False)
    assert snapshot is not None and snapshot[0] > 300
    assert from_snapshot == folded and len(folded.messages) == 1 + 81 + 80


class NoSlowTools(Guard):
    name = "no-slow"

    def check(self, state: RunState, step: Step) -> Deny | object:
        if isinstance(step, ToolCalls) and any(c.name == "slow" for c in step.calls):
            return Deny("slow tools are not allowed here")
        return super().check(state, step)


async def test_a_guard_can_refuse_a_tool_call(store: Store) -> None:
    agent = calc([tool_call("slow", seconds=5), "gave up"], guards=[NoSlowTools()])
    async with Runtime(store) as rt:
        run = await rt.start(agent, "go")
        result = await run.wait()
        events = await events_of(rt, run.run_id)
    assert result.answer == "gave up"
    tripped = [e for e in events if type(e).__name__ == "GuardTripped"]
    assert len(tripped) == 1 and tripped[0].detail == "slow tools are not allowed here"
    assert not any(isinstance(e, ActionCompleted) for e in events)


def _encoded(*events: Event) -> list[NewEvent]:
    return [encode_event(e, time.time()) for e in events]


async def test_resume_incomplete_picks_up_runs_whose_owner_died(db_url: str) -> None:
    effects: list[str] = []

    @tool(idempotent=True)
    def remember(note: str, context: ToolContext) -> str:
        "Remember a note."
        effects.append(context.idempotency_key)
        return "ok"

    @tool
    def charge(amount: int) -> str:
        "Charge a card (not idempotent)."
        effects.append(f"charge {amount}")
        return "charged"

    calls = [tool_call("remember", note="n"), tool_call("charge", amount=5)]
    agent = Agent(name="ops", model=ScriptedModel([calls, "done"]), tools=[remember, charge])
    # what a SIGKILL between intent and outcome leaves behind: intents, no outcomes,
    # and a lease nobody renews
    async with Runtime(db_url) as rt:
        await rt.store.create_run(
            NewRun("r1", "ops", "go"),
            _encoded(
                run_started(agent, "go", "scripted"),
                ModelCalled("act", "d"),
                ModelResponded(
                    tool_calls=(
                        ToolCall("c1", "remember", {"note": "n"}),
                        ToolCall("c2", "charge", {"amount": 5}),
                    )
                ),
                ActionRequested("r1-1", "c1", "remember", {"note": "n"}, idempotent=True),
                ActionRequested("r1-2", "c2", "charge", {"amount": 5}),
            ),
            owner="elsewhere:1:2:gone",
            lease_s=0.05,
        )
    await asyncio.sleep(0.1)
    async with Runtime(db_url, agents=[agent], resume_incomplete=True) as rt:
        result = await rt.handle("r1").wait()
        events = await events_of(rt, "r1")
    assert result.answer == "done"
    assert effects == ["r1-1"]  # the idempotent tool re-ran with the same key
    unknown = [e for e in events if isinstance(e, ActionFailed)]
    assert len(unknown) == 1 and unknown[0].error.startswith("outcome unknown")
    assert type(events[events.index(unknown[0]) - 1]).__name__ == "Resumed"


async def _state(url: str, run_id: str) -> RunState:
    async with Runtime(url) as rt:
        return await rt.state(run_id)


async def test_a_run_leased_by_a_live_process_cannot_be_resumed(db_url: str) -> None:
    async with Runtime(db_url) as first, Runtime(db_url) as second:
        run = await first.start(calc([tool_call("slow", seconds=1), "done"]), "go")
        await asyncio.sleep(0.05)
        with pytest.raises(LeaseLost, match="being driven by"):
            await second.resume(run.run_id)
        # the other process still sees it and can wait for it
        result = await second.handle(run.run_id).wait()
    assert result.answer == "done"


def test_run_sync(tmp_path: Path) -> None:
    result = run_sync(
        calc([tool_call("add", a=1, b=2), "3"]), "1+2", store=f"sqlite:///{tmp_path}/r.db"
    )
    assert result.answer == "3" and result.status == "completed"


async def test_resume_takes_over_at_once_from_a_local_process_that_died(db_url: str) -> None:
    exited = await asyncio.create_subprocess_exec(sys.executable, "-c", "pass")
    await exited.wait()
    host, namespace, _, _ = new_owner_id().split(":")
    ghost = f"{host}:{namespace}:{exited.pid}:abcdef"  # this host, a process that is gone
    agent = calc(["resumed"])
    async with Runtime(db_url) as rt:
        await rt.store.create_run(
            NewRun("r2", "calc", "go"),
            _encoded(run_started(agent, "go", "scripted")),
            owner=ghost,
            lease_s=600,
        )
    async with Runtime(db_url) as other:
        handle = await other.resume("r2", agent=agent)
        result = await handle.wait()
        info = await other.get_run("r2")
    assert result.answer == "resumed" and info.recoveries == 1

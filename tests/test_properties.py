"""Random interleavings of start, spawn, approve, signal, cancel, kill and resume.

Whatever happens, once things settle: every run has ended or waits, no ended run has an
open action, every log is numbered 1..n with nothing after its ending, and no effect
happened twice.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import Counter
from collections.abc import Iterable, Sequence
from typing import Any

import hypothesis.strategies as st
from hypothesis import HealthCheck, given, settings

from autonomic import (
    Agent,
    AgentView,
    AutonomicError,
    Await,
    Children,
    ChildSpec,
    Finish,
    InMemoryStore,
    Runtime,
    ScriptedModel,
    Signal,
    Spawn,
    Step,
    StoreError,
    ToolContext,
    tool,
    tool_call,
)
from autonomic.events import TERMINAL_EVENTS
from autonomic.loader import load_state, read_events
from autonomic.state import RunState
from autonomic.store.base import Commit, Committed

effects: list[str] = []


@tool(requires_approval=True)
def transfer(amount: int, context: ToolContext) -> str:
    "Move money (needs approval)."
    effects.append(context.action_id)
    return "sent"


@tool
async def work(context: ToolContext) -> str:
    "Do some work."
    effects.append(context.action_id)
    await asyncio.sleep(0.005)
    return "worked"


@tool
async def long_work(context: ToolContext) -> str:
    "Do work that takes a while (cancels and kills land in the middle of it)."
    effects.append(context.action_id)
    await asyncio.sleep(0.1)
    return "worked long"


class WaitForGo:
    name = "wait-for-go"

    def next_step(self, state: RunState, agent: AgentView) -> Step:
        if state.signals.get("go"):
            return Finish("went")
        return Await(Signal("go"))


class SpawnTwo:
    name = "spawn-two"

    def next_step(self, state: RunState, agent: AgentView) -> Step:
        if not state.children:
            return Spawn((ChildSpec("waiter", "child a"), ChildSpec("worker", "child b")))
        if state.open_children:
            return Await(Children(tuple(state.children)))
        return Finish("joined")


waiter = Agent(name="waiter", model=ScriptedModel([]), strategy=WaitForGo())
AGENTS = {
    "payer": Agent(
        name="payer",
        model=ScriptedModel([tool_call("transfer", amount=1), tool_call("work"), "paid"]),
        tools=[transfer, work],
    ),
    "waiter": waiter,
    "worker": Agent(
        name="worker",
        model=ScriptedModel(
            [tool_call("work"), [tool_call("long_work"), tool_call("work")], "done"]
        ),
        tools=[work, long_work],
    ),
}
AGENTS["spawner"] = Agent(
    name="spawner",
    model=ScriptedModel([]),
    strategy=SpawnTwo(),
    subagents=[waiter, AGENTS["worker"]],
)


class Killable(InMemoryStore):
    """One process's view of a shared store: after ``kill()`` it can do nothing at all,
    as if the process had died at whatever await it was in."""

    def __init__(self, shared: InMemoryStore) -> None:
        self.__dict__.update(shared.__dict__)  # the same dicts: one store, many processes
        self.dead = False

    def _alive(self) -> None:
        if self.dead:
            raise StoreError("this process was killed")

    async def commit(self, commit: Commit) -> Committed:
        self._alive()
        return await super().commit(commit)

    async def claim_runs(self, *args: Any, **kwargs: Any) -> Any:
        self._alive()
        return await super().claim_runs(*args, **kwargs)

    async def renew_leases(self, *args: Any, **kwargs: Any) -> Any:
        self._alive()
        return await super().renew_leases(*args, **kwargs)

    async def release_lease(self, *args: Any, **kwargs: Any) -> None:
        self._alive()
        await super().release_lease(*args, **kwargs)

    async def deliver(self, *args: Any, **kwargs: Any) -> Any:
        self._alive()
        return await super().deliver(*args, **kwargs)


def runtime(store: InMemoryStore) -> Runtime:
    return Runtime(
        store, agents=list(AGENTS.values()), resume_incomplete=True, lease_s=0.1, poll_s=0.01
    )


Op = tuple[str, Any]
ops = st.lists(
    st.one_of(
        st.tuples(st.just("start"), st.sampled_from(sorted(AGENTS))),
        st.tuples(st.sampled_from(["approve", "deny", "signal", "cancel"]), st.integers(0, 5)),
        st.tuples(st.sampled_from(["kill", "pause"]), st.just(0)),
    ),
    min_size=1,
    max_size=10,
)


async def _apply(op: Op, rt: Runtime, started: list[str]) -> None:
    kind, arg = op
    if kind == "start":
        started.append((await rt.start(AGENTS[arg], f"goal {len(started)}")).run_id)
        return
    if kind == "pause":
        await asyncio.sleep(0.03)
        return
    runs = await rt.list_runs(limit=100)
    if not runs:
        return
    run = runs[arg % len(runs)]
    if kind == "signal":
        await rt.signal(run.run_id, "go")
    elif kind == "cancel":
        await rt.cancel(run.run_id, wait_s=0.05)
    else:
        pending = await rt.pending_approvals(run.run_id)
        if pending and kind == "approve":
            await rt.approve(run.run_id, pending[0].digest, approver="prop")
        elif pending:
            await rt.deny(run.run_id, pending[0].digest, approver="prop")


async def scenario(steps: Sequence[Op]) -> InMemoryStore:
    shared = InMemoryStore()
    started: list[str] = []
    store = Killable(shared)
    rt = await runtime(store).__aenter__()
    try:
        for op in steps:
            if op[0] == "kill":
                store.dead = True
                await rt.__aexit__(None, None, None)  # nothing it tries to write lands
                store = Killable(shared)
                rt = await runtime(store).__aenter__()
                continue
            # deciding on a run that just ended, and the like, is refused cleanly
            with contextlib.suppress(AutonomicError):
                await _apply(op, rt, started)
        await _settle(rt)
    finally:
        await rt.__aexit__(None, None, None)
    return shared


async def _settle(rt: Runtime) -> None:
    """Wait until no run is being driven or ready to be (only ended and waiting ones)."""
    deadline = time.monotonic() + 15
    while True:
        runs = await rt.list_runs(limit=1000)
        busy = [r for r in runs if r.status == "running" or (r.status == "waiting" and r.wake_at)]
        if not busy and not rt.supervisor.tasks:
            return
        assert time.monotonic() < deadline, f"never settled: {busy}"
        await asyncio.sleep(0.02)


async def check(store: InMemoryStore) -> None:
    for info in await store.list_runs(limit=10_000):
        assert info.status in ("completed", "failed", "cancelled", "waiting"), info
        records = await store.read(info.run_id)
        assert [r.seq for r in records] == list(range(1, len(records) + 1)), info.run_id
        events = [s.event for s in await read_events(store, info.run_id)]
        endings = [i for i, e in enumerate(events) if isinstance(e, TERMINAL_EVENTS)]
        assert endings in ([], [len(events) - 1]), f"{info.run_id}: events after its end"
        state = await load_state(store, info.run_id)
        if state.terminal:
            assert not state.pending, f"{info.run_id} ended with open actions"


def _twice(items: Iterable[str]) -> dict[str, int]:
    return {k: n for k, n in Counter(items).items() if n > 1}


@settings(
    max_examples=150,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
@given(ops)
def test_any_interleaving_settles_with_every_invariant_kept(steps: list[Op]) -> None:
    effects.clear()
    store = asyncio.run(scenario(steps))
    asyncio.run(check(store))
    assert not _twice(effects), f"an effect happened twice: {_twice(effects)}"

"""Runs that wait and wake: approvals bound to content, signals, timers, child runs."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest

from autonomic import (
    Agent,
    AgentView,
    ApprovalRefused,
    Await,
    Children,
    ChildSpec,
    Finish,
    FunctionModel,
    Guard,
    ModelRequest,
    ModelUnavailable,
    RequireApproval,
    Runtime,
    ScriptedModel,
    Signal,
    Spawn,
    Step,
    Timer,
    ToolCall,
    sleep,
    tool,
    tool_call,
)
from autonomic.errors import ConfigError
from autonomic.events import (
    ActionCompleted,
    ActionFailed,
    ActionRequested,
    ApprovalGranted,
    ApprovalRequested,
    Event,
    InboxRefused,
    RunCancelled,
    Suspended,
    encode_event,
)
from autonomic.lifecycle import approval_key
from autonomic.loader import read_events
from autonomic.state import RunState
from autonomic.store.base import Delivery, Store

transfers: list[dict[str, Any]] = []


@tool(requires_approval=True)
def transfer(account: str, amount: int) -> str:
    "Move money to an account."
    transfers.append({"account": account, "amount": amount})
    return f"sent {amount} to {account}"


@tool(requires_approval=lambda args: args["amount"] > 100)
def pay(account: str, amount: int) -> str:
    "Pay an invoice; large amounts need a person's approval."
    transfers.append({"account": account, "amount": amount})
    return f"paid {amount}"


@pytest.fixture(autouse=True)
def _clear_transfers() -> None:
    transfers.clear()


def payer(script: list[Any], **kwargs: Any) -> Agent:
    return Agent(name="payer", model=ScriptedModel(script), tools=[transfer, pay], **kwargs)


async def events_of(rt: Runtime, run_id: str) -> list[Event]:
    return [s.event for s in await read_events(rt.store, run_id)]


async def test_a_run_waits_for_approval_holding_nothing_then_runs_the_approved_call(
    store: Store,
) -> None:
    async with Runtime(store) as rt:
        script = [tool_call("transfer", account="acme", amount=500), "paid"]
        run = await rt.start(payer(script), "Pay")
        waiting = await run.wait_until_waiting()
        assert waiting.status == "waiting"
        assert waiting.waiting_for == "approval of transfer(account='acme', amount=500)"
        info = await rt.get_run(run.run_id)
        assert info.lease_owner is None and not rt.supervisor.busy(run.run_id)
        [pending] = await rt.pending_approvals(run.run_id)
        assert (pending.tool, pending.args) == ("transfer", {"account": "acme", "amount": 500})
        assert transfers == []
        await rt.approve(run.run_id, pending.digest, approver="alice")
        result = await run.wait()
        events = await events_of(rt, run.run_id)
    assert result.answer == "paid"
    assert transfers == [{"account": "acme", "amount": 500}]
    granted = next(e for e in events if isinstance(e, ApprovalGranted))
    action = next(e for e in events if isinstance(e, ActionRequested))
    assert granted.approver == "alice" and action.approval == pending.digest
    assert [type(e).__name__ for e in events][3:9] == [
        "ApprovalRequested",
        "Suspended",
        "Resumed",
        "ApprovalGranted",
        "ActionRequested",
        "ActionCompleted",
    ]


async def test_approving_with_edited_arguments_runs_those_under_a_new_digest(store: Store) -> None:
    async with Runtime(store) as rt:
        script = [tool_call("transfer", account="acme", amount=500), "ok"]
        run = await rt.start(payer(script), "Pay")
        await run.wait_until_waiting()
        [pending] = await rt.pending_approvals(run.run_id)
        await rt.approve(
            run.run_id, pending.digest, approver="bob", args={"account": "acme", "amount": 50}
        )
        await run.wait()
        events = await events_of(rt, run.run_id)
    action = next(e for e in events if isinstance(e, ActionRequested))
    assert transfers == [{"account": "acme", "amount": 50}]
    assert action.args == {"account": "acme", "amount": 50}
    assert action.approval not in (None, pending.digest)


async def test_a_denied_call_never_runs_and_the_model_sees_why(store: Store) -> None:
    seen: list[str] = []

    def decide(request: ModelRequest) -> object:
        if not any(m.role == "tool" for m in request.messages):
            return tool_call("transfer", account="x", amount=9000)
        seen.extend(m.content for m in request.messages if m.role == "tool")
        return "understood"

    agent = Agent(name="payer", model=FunctionModel(decide), tools=[transfer])
    async with Runtime(store) as rt:
        run = await rt.start(agent, "Pay")
        await run.wait_until_waiting()
        await rt.deny(run.run_id, "call_0_0", approver="carol", reason="too much")
        result = await run.wait()
    assert result.answer == "understood" and transfers == []
    assert seen == ["Error: carol denied this call: too much"]


async def test_a_predicate_asks_only_for_the_calls_it_names(store: Store) -> None:
    script = [[tool_call("pay", account="a", amount=5), tool_call("pay", account="b", amount=500)]]
    async with Runtime(store) as rt:
        run = await rt.start(payer([*script, "done"]), "Pay both")
        await run.wait_until_waiting()
        assert transfers == [{"account": "a", "amount": 5}]  # the small one ran at once
        [pending] = await rt.pending_approvals(run.run_id)
        assert pending.args == {"account": "b", "amount": 500}
        await rt.approve(run.run_id, pending.action_id, approver="dan")
        assert (await run.wait()).answer == "done"
    assert transfers[1] == {"account": "b", "amount": 500}


async def test_several_approvals_are_independent_and_decided_in_any_order(store: Store) -> None:
    calls = [tool_call("transfer", account=f"a{i}", amount=i) for i in range(3)]
    async with Runtime(store) as rt:
        run = await rt.start(payer([calls, "all settled"]), "Pay three")
        await run.wait_until_waiting()
        pending = {p.args["account"]: p for p in await rt.pending_approvals(run.run_id)}
        await rt.approve(run.run_id, pending["a2"].digest, approver="x")
        await _until(lambda: transfers == [{"account": "a2", "amount": 2}])
        assert (await run.wait_until_waiting()).status == "waiting"
        assert {p.args["account"] for p in await rt.pending_approvals(run.run_id)} == {"a0", "a1"}
        await rt.deny(run.run_id, pending["a1"].digest, approver="x")
        await rt.approve(run.run_id, pending["a0"].digest, approver="x")
        result = await run.wait()
    assert result.answer == "all settled"
    assert transfers == [{"account": "a2", "amount": 2}, {"account": "a0", "amount": 0}]


async def _until(condition: Any) -> None:
    deadline = time.monotonic() + 5
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        await asyncio.sleep(0.01)


async def test_approvals_of_other_calls_forged_or_replayed_are_refused(store: Store) -> None:
    async with Runtime(store) as rt:
        run = await rt.start(payer([tool_call("transfer", account="a", amount=1), "ok"]), "Pay")
        other = await rt.start(payer([tool_call("transfer", account="a", amount=1), "ok"]), "Pay")
        await run.wait_until_waiting()
        await other.wait_until_waiting()
        [pending] = await rt.pending_approvals(run.run_id)
        [other_pending] = await rt.pending_approvals(other.run_id)
        with pytest.raises(ApprovalRefused, match="no pending approval"):
            await rt.approve(run.run_id, "f" * 64, approver="eve")
        # a forged decision put straight into the inbox: wrong signature
        forged = ApprovalGranted(pending.digest, "eve", signature="0" * 64)
        await store.deliver(
            Delivery(run.run_id, approval_key(pending.digest), encode_event(forged, time.time()))
        )
        # a genuine decision for the other run, replayed onto this one
        state: RunState = await rt.state(other.run_id)
        replayed = rt.signer.grant(other.run_id, state.approvals[other_pending.digest], "mallory")
        await store.deliver(
            Delivery(run.run_id, approval_key(pending.digest), encode_event(replayed, time.time()))
        )
        rt.bus.publish("ready")
        await _until_refused(rt, run.run_id, 2)
        assert transfers == [] and (await rt.get_run(run.run_id)).status == "waiting"
        await rt.approve(run.run_id, pending.digest, approver="alice")
        with pytest.raises(ApprovalRefused, match="already"):
            await rt.approve(run.run_id, pending.digest, approver="alice")
        assert (await run.wait()).answer == "ok"
        refused = [e for e in await events_of(rt, run.run_id) if isinstance(e, InboxRefused)]
    assert transfers == [{"account": "a", "amount": 1}]
    assert [e.reason for e in refused] == [
        "its signature is not valid (forged, or signed with another key)",
        "no call waits for this approval",  # the digest names another run's call
    ]


async def _until_refused(rt: Runtime, run_id: str, count: int) -> None:
    deadline = time.monotonic() + 5
    while True:
        events = await events_of(rt, run_id)
        if sum(isinstance(e, InboxRefused) for e in events) >= count:
            return
        assert time.monotonic() < deadline, "the forged approvals were never read"
        await asyncio.sleep(0.02)


class Cautious(Guard):
    """Asks a person before any transfer to an unknown account."""

    name = "cautious"

    def check_call(self, state: RunState, call: ToolCall) -> RequireApproval | object:
        if call.arguments.get("account") != "known":
            return RequireApproval("unknown account")
        return super().check_call(state, call)


async def test_a_guard_can_require_approval_per_call(store: Store) -> None:
    calls = [tool_call("pay", account="known", amount=1), tool_call("pay", account="new", amount=2)]
    async with Runtime(store) as rt:
        run = await rt.start(payer([calls, "done"], guards=[Cautious()]), "Pay")
        await run.wait_until_waiting()
        [pending] = await rt.pending_approvals(run.run_id)
        assert pending.reason == "unknown account" and pending.args["account"] == "new"
        await rt.approve(run.run_id, pending.digest, approver="x")
        await run.wait()
    assert [t["account"] for t in transfers] == ["known", "new"]


class Waiter:
    """Waits for a signal (or a timer), then answers with what arrived."""

    name = "waiter"

    def __init__(self, *conditions: Any) -> None:
        self.conditions = conditions

    def next_step(self, state: RunState, agent: AgentView) -> Step:
        if state.signals.get("go"):
            return Finish(f"got {state.signals['go'][-1]}")
        if state.timers_fired:
            return Finish("the timer fired")
        return Await(*self.conditions, reason="a go signal")


async def test_a_signal_wakes_a_waiting_run(store: Store) -> None:
    agent = Agent(name="waiter", model=ScriptedModel([]), strategy=Waiter(Signal("go")))
    async with Runtime(store) as rt:
        run = await rt.start(agent, "wait for go")
        waiting = await run.wait_until_waiting()
        assert waiting.waiting_for == "a go signal"
        await rt.signal(run.run_id, "other", 1)  # not awaited: does not wake it
        await asyncio.sleep(0.1)
        assert (await rt.get_run(run.run_id)).status == "waiting"
        await rt.signal(run.run_id, "go", {"k": 1})
        result = await run.wait()
    assert result.answer == "got {'k': 1}"


async def test_a_durable_timer_wakes_the_run(store: Store) -> None:
    agent = Agent(name="waiter", model=ScriptedModel([]), strategy=Waiter(Timer(after_s=0.2)))
    async with Runtime(store) as rt:
        run = await rt.start(agent, "nap")
        waiting = await run.wait_until_waiting()
        started = time.monotonic()
        assert waiting.status == "waiting"
        result = await run.wait()
        events = await events_of(rt, run.run_id)
    assert result.answer == "the timer fired" and time.monotonic() - started < 5
    assert [type(e).__name__ for e in events][-4:] == [
        "Suspended",
        "Resumed",
        "TimerFired",
        "RunCompleted",
    ]


async def test_the_sleep_tool_is_a_durable_wait(store: Store) -> None:
    agent = Agent(
        name="sleeper",
        model=ScriptedModel([tool_call("sleep", seconds=0.2), "rested"]),
        tools=[sleep()],
    )
    async with Runtime(store) as rt:
        run = await rt.start(agent, "rest a moment")
        assert (await run.wait_until_waiting()).status == "waiting"
        result = await run.wait()
        events = await events_of(rt, run.run_id)
    assert result.answer == "rested"
    done = next(e for e in events if isinstance(e, ActionCompleted))
    assert done.observation == "slept 0.2s"


async def test_a_model_asking_to_retry_much_later_suspends_the_run(store: Store) -> None:
    calls = 0

    def flaky(request: ModelRequest) -> object:
        nonlocal calls
        calls += 1
        if calls == 1:
            raise ModelUnavailable("rate limited", retry_after=0.3)
        return "answered after the pause"

    agent = Agent(name="patient", model=FunctionModel(flaky), suspend_after_s=0.1)
    async with Runtime(store) as rt:
        run = await rt.start(agent, "go")
        waiting = await run.wait_until_waiting()
        assert "unavailable" in (waiting.waiting_for or "")
        result = await run.wait()
    assert result.answer == "answered after the pause" and calls == 2


class FanOut:
    """Spawns one child per word of the goal, waits for all, joins their answers."""

    name = "fan-out"

    def next_step(self, state: RunState, agent: AgentView) -> Step:
        if not state.children:
            words = state.goal.split()
            return Spawn(tuple(ChildSpec("echo", w) for w in words))
        if state.open_children:
            return Await(Children(tuple(state.children)), reason="the children")
        return Finish(" ".join(c.answer for c in state.children.values()))


class Echo:
    name = "echo"

    def next_step(self, state: RunState, agent: AgentView) -> Step:
        return Finish(state.goal.upper())


echo = Agent(name="echo", model=ScriptedModel([]), strategy=Echo())


async def test_children_run_concurrently_and_are_joined(store: Store) -> None:
    parent = Agent(name="fan", model=ScriptedModel([]), strategy=FanOut(), subagents=[echo])
    async with Runtime(store) as rt:
        run = await rt.start(parent, "alpha beta gamma")
        result = await run.wait()
        children = await rt.list_runs(parent_run_id=run.run_id)
    assert result.answer == "ALPHA BETA GAMMA"
    assert sorted(c.run_id for c in children) == [f"{run.run_id}.{i}" for i in (1, 2, 3)]
    assert all(c.status == "completed" and c.root_run_id == run.run_id for c in children)
    assert all(c.depth == 1 for c in children)


async def test_a_thousand_children_are_spawned_and_joined(store: Store) -> None:
    parent = Agent(name="fan", model=ScriptedModel([]), strategy=FanOut(), subagents=[echo])
    goal = " ".join(f"w{i}" for i in range(1000))
    async with Runtime(store) as rt:
        result = await (await rt.start(parent, goal)).wait()
    assert result.answer == goal.upper()


async def test_an_agent_as_a_tool_is_a_durable_child_run(store: Store) -> None:
    researcher = Agent(name="researcher", model=ScriptedModel(["Paris"]))
    boss = Agent(
        name="boss",
        model=ScriptedModel([tool_call("researcher", goal="capital of France?"), "It is Paris."]),
        tools=[researcher.as_tool()],
    )
    async with Runtime(store) as rt:
        run = await rt.start(boss, "Find the capital of France")
        result = await run.wait()
        events = await events_of(rt, run.run_id)
        [child] = await rt.list_runs(parent_run_id=run.run_id)
    assert result.answer == "It is Paris."
    assert next(e for e in events if isinstance(e, ActionCompleted)).observation == "Paris"
    assert child.agent == "researcher" and child.status == "completed"


async def test_an_agent_as_a_tool_runs_at_its_callers_priority_unless_given_one(
    store: Store,
) -> None:
    helper = Agent(name="helper", model=ScriptedModel(["a", "b"]))
    boss = Agent(
        name="boss",
        model=ScriptedModel(
            [[tool_call("helper", goal="x"), tool_call("background", goal="y")], "done"]
        ),
        tools=[helper.as_tool(), helper.as_tool(name="background", priority=-2)],
    )
    async with Runtime(store) as rt:
        run = await rt.start(boss, "go", priority=7)
        assert (await run.wait()).answer == "done"
        children = await rt.list_runs(parent_run_id=run.run_id)
    assert sorted(c.priority for c in children) == [-2, 7]
    with pytest.raises(ConfigError, match="64 bits"):
        helper.as_tool(priority=2**63)


async def test_an_agent_already_in_the_lineage_is_refused(store: Store) -> None:
    a = Agent(name="a", model=ScriptedModel([tool_call("b", goal="ask a"), "a done"]))
    b = Agent(name="b", model=ScriptedModel([tool_call("a", goal="again"), "b done"]))
    a.tools = (b.as_tool(),)
    b.tools = (a.as_tool(),)
    async with Runtime(store) as rt:
        run = await rt.start(a, "go")
        assert (await run.wait()).answer == "a done"
        [child] = await rt.list_runs(parent_run_id=run.run_id)
        child_events = await events_of(rt, child.run_id)
    failed = next(e for e in child_events if isinstance(e, ActionFailed))
    assert "already in this run's lineage (a → b → a)" in failed.error


async def test_cancelling_a_parent_cancels_its_subtree(store: Store) -> None:
    forever = Agent(name="forever", model=ScriptedModel([]), strategy=Waiter(Signal("never")))
    parent = Agent(
        name="fan",
        model=ScriptedModel([]),
        strategy=FanOutTo("forever"),
        subagents=[forever],
    )
    async with Runtime(store) as rt:
        run = await rt.start(parent, "a b c")
        await _until_all_waiting(rt, run.run_id, 3)
        result = await run.cancel()
        assert result is not None and result.status == "cancelled"
        children = await _settled_children(rt, run.run_id)
        endings = [(await events_of(rt, child.run_id))[-1] for child in children]
    assert [c.status for c in children] == ["cancelled"] * 3
    for ending in endings:
        assert isinstance(ending, RunCancelled) and ending.by == f"parent {run.run_id}"


class FanOutTo(FanOut):
    def __init__(self, agent: str) -> None:
        self.agent = agent

    def next_step(self, state: RunState, agent: AgentView) -> Step:
        if not state.children:
            return Spawn(tuple(ChildSpec(self.agent, w) for w in state.goal.split()))
        return super().next_step(state, agent)


class FanOutRanked(FanOut):
    """Spawns a ``go``-waiting child per word; a word ``name=N`` names its priority."""

    def next_step(self, state: RunState, agent: AgentView) -> Step:
        if not state.children:
            return Spawn(tuple(_ranked(w) for w in state.goal.split()))
        return super().next_step(state, agent)


def _ranked(word: str) -> ChildSpec:
    goal, _, priority = word.partition("=")
    return ChildSpec("go-waiter", goal, int(priority) if priority else None)


async def test_a_child_takes_its_parents_priority_and_is_claimed_before_lower_roots(
    store: Store,
) -> None:
    waiter = Agent(name="go-waiter", model=ScriptedModel([]), strategy=Waiter(Signal("go")))
    parent = Agent(name="fan", model=ScriptedModel([]), strategy=FanOutRanked(), subagents=[waiter])
    async with Runtime(store, wake=False) as rt:  # claims nothing: the test claims
        low = await rt.submit(waiter, "an older root of a lower priority", priority=1)
        run = await rt.start(parent, "inherits named=-3", priority=5)
        await _until_all_waiting(rt, run.run_id, 2)
        children = sorted(await rt.list_runs(parent_run_id=run.run_id), key=lambda r: r.run_id)
        for child in children:
            await rt.signal(child.run_id, "go")
        claims = await store.claim_runs("other", 30, 3)
    assert [c.priority for c in children] == [5, -3]
    assert [c.info.run_id for c in claims] == [children[0].run_id, low.run_id, children[1].run_id]


async def test_a_spawn_naming_a_priority_past_64_bits_fails_the_parent(store: Store) -> None:
    waiter = Agent(name="go-waiter", model=ScriptedModel([]), strategy=Waiter(Signal("go")))
    parent = Agent(name="fan", model=ScriptedModel([]), strategy=FanOutRanked(), subagents=[waiter])
    async with Runtime(store) as rt:
        run = await rt.start(parent, f"huge={2**63}")
        result = await run.wait(check=False)
        assert await rt.list_runs(parent_run_id=run.run_id) == []
    assert result.status == "failed" and "64 bits" in (result.error or "")


async def _until_all_waiting(rt: Runtime, parent: str, count: int) -> None:
    deadline = time.monotonic() + 10
    while True:
        runs = await rt.list_runs(parent_run_id=parent)
        if len(runs) == count and all(r.status == "waiting" for r in runs):
            return
        assert time.monotonic() < deadline
        await asyncio.sleep(0.02)


async def _settled_children(rt: Runtime, parent: str) -> list[Any]:
    deadline = time.monotonic() + 10
    while True:
        runs = sorted(await rt.list_runs(parent_run_id=parent), key=lambda r: r.run_id)
        if all(r.status in ("completed", "failed", "cancelled") for r in runs):
            return runs
        assert time.monotonic() < deadline
        await asyncio.sleep(0.02)


async def test_waiting_costs_no_task_and_any_runtime_on_the_store_wakes_it(store: Store) -> None:
    agent = payer([tool_call("transfer", account="a", amount=1), "done"])
    async with Runtime(store) as first:
        run = await first.start(agent, "Pay")
        await run.wait_until_waiting()
    async with Runtime(store, wake=False) as second:  # a process that only decides
        [pending] = await second.pending_approvals(run.run_id)
        await second.approve(run.run_id, pending.digest, approver="alice")
        assert not second.supervisor.tasks
    async with Runtime(store, agents=[agent]) as third:  # any process serving the agent
        result = await third.handle(run.run_id).wait()
    assert result.answer == "done" and len(transfers) == 1


async def test_suspension_is_recorded_with_what_it_waits_for(store: Store) -> None:
    async with Runtime(store) as rt:
        run = await rt.start(payer([tool_call("transfer", account="a", amount=1), "x"]), "Pay")
        await run.wait_until_waiting()
        [pending] = await rt.pending_approvals(run.run_id)
        events = await events_of(rt, run.run_id)
        info = await rt.get_run(run.run_id)
        waiting = await rt.list_runs(waiting=True)
        await rt.cancel(run.run_id)
    suspended = next(e for e in events if isinstance(e, Suspended))
    assert suspended.waiting_on == (approval_key(pending.digest),)
    assert info.wait is not None and info.wait.groups == ((approval_key(pending.digest),),)
    assert [r.run_id for r in waiting] == [run.run_id]
    assert isinstance(
        next(e for e in events if isinstance(e, ApprovalRequested)), ApprovalRequested
    )

"""Fork-join and the hierarchy, end to end: child runs with narrow goals, failures handled
by policy, dependencies ordered by the resolver, reports passed upward."""

from __future__ import annotations

import pytest
from msgspec.structs import replace

from autonomic import (
    Agent,
    FunctionModel,
    ModelRequest,
    ReplayDivergence,
    RunResult,
    Runtime,
    ScriptedModel,
)
from autonomic.events import ChildSpawned
from autonomic.kpis import run_kpis
from autonomic.loader import StoredEvent, read_events
from autonomic.replay import replay_events
from autonomic.store.base import Store
from autonomic.strategies.forkjoin import ForkJoin
from autonomic.strategies.hierarchy import Hierarchy
from autonomic.strategies.plans import PlanError, PlanNode, resolve
from autonomic.strategies.team import Delegated
from autonomic.views import render_trace


def summer() -> Agent:
    """Sums the range in its goal ("sum 1..5"); fails on a range that starts at 13."""

    def answer(request: ModelRequest) -> str:
        goal = request.messages[-1].content
        low, high = (int(x) for x in goal.split()[-1].split(".."))
        if low == 13:
            raise ValueError("unlucky range")
        return str(sum(range(low, high + 1)))

    return Agent(name="summer", model=FunctionModel(answer))


def split(goal: str) -> list[str]:
    return [f"sum {lo}..{lo + 3}" for lo in range(1, 17, 4)]


def total(goal: str, outcomes: object) -> str:
    parts = [o.split(": ", 1) for _, o in outcomes]  # type: ignore[attr-defined]
    return f"{sum(int(v) for s, v in parts if s == 'succeeded')} from {len(parts)} parts"


async def _run(store: Store, agent: Agent, goal: str) -> tuple[RunResult, list[StoredEvent]]:
    async with Runtime(store) as rt:
        run = await rt.start(agent, goal)
        result = await run.wait(check=False)
        events = await read_events(rt.store, run.run_id)
        replayed = await rt.replay(run.run_id, agent=agent)
    assert replayed.status == result.status
    return result, events


async def test_fork_join_runs_one_narrow_child_per_part_and_joins(store: Store) -> None:
    def reliable_answer(request: ModelRequest) -> str:
        low, high = (int(x) for x in request.messages[-1].content.split()[-1].split(".."))
        return str(sum(range(low, high + 1)))

    worker = Agent(name="summer", model=FunctionModel(reliable_answer))
    parent = Agent(
        name="boss",
        model=ScriptedModel([]),
        subagents=[worker],
        strategy=ForkJoin("summer", split=split, join=total),
    )
    result, events = await _run(store, parent, "sum 1..16")
    assert (result.status, result.answer) == ("completed", "136 from 4 parts")
    spawned = [e.event for e in events if isinstance(e.event, ChildSpawned)]
    assert [s.goal for s in spawned] == ["sum 1..4", "sum 5..8", "sum 9..12", "sum 13..16"]
    assert result.model_calls == 0
    assert "⇉ plan 1: T1, T2, T3, T4 handed to child runs" in render_trace(events)
    assert run_kpis([e.event for e in events]).plan_fidelity == 1.0


@pytest.mark.parametrize(
    ("policy", "status", "outcome", "children"),
    [
        ("skip", "completed", "78 from 4 parts", 4),
        ("retry", "failed", "sub-task T4 failed: model 'function' failed", 6),
        ("fail", "failed", "sub-task T4 failed: model 'function' failed", 4),
    ],
)
async def test_a_failed_part_is_handled_by_policy(
    store: Store, policy: str, status: str, outcome: str, children: int
) -> None:
    parent = Agent(
        name="boss",
        model=ScriptedModel([]),
        subagents=[summer()],
        strategy=ForkJoin("summer", split=split, join=total, on_failure=policy, max_retries=2),  # type: ignore[arg-type]
    )
    result, events = await _run(store, parent, "sum 1..16")
    assert result.status == status
    assert outcome in (result.answer or result.error or "")
    assert sum(isinstance(e.event, ChildSpawned) for e in events) == children


async def test_fork_join_asks_the_model_to_split_and_to_join(store: Store) -> None:
    parent = Agent(
        name="boss",
        model=ScriptedModel(["- sum 1..2\n- sum 3..4\nthat is all", "3 + 7 = 10"]),
        subagents=[summer()],
        strategy=ForkJoin("summer"),
    )
    result, events = await _run(store, parent, "sum 1..4")
    assert result.answer == "3 + 7 = 10" and result.model_calls == 2
    assert [e.event.goal for e in events if isinstance(e.event, ChildSpawned)] == [
        "sum 1..2",
        "sum 3..4",
    ]


def test_the_resolver_orders_tasks_and_refuses_cycles() -> None:
    a, b, c = PlanNode("E1", "it", deps=("E2",)), PlanNode("E2", "hr"), PlanNode("E3", "x")
    assert [n.id for n in resolve([a, b, c])] == ["E2", "E3", "E1"]
    with pytest.raises(PlanError, match="#E1, #E2 wait for each other"):
        resolve([a, PlanNode("E2", "hr", deps=("E1",))])
    with pytest.raises(PlanError, match="does not define"):
        resolve([a])


def specialist(name: str, fail: bool = False) -> Agent:
    def answer(request: ModelRequest) -> str:
        if fail:
            raise ValueError(f"{name} is down")
        return f"{name} done for [{request.messages[-1].content}]"

    return Agent(name=name, model=FunctionModel(answer))


async def test_hierarchy_orders_specialists_and_passes_reports_upward(store: Store) -> None:
    plan = (
        '#E2 = it["Set up a laptop once HR says: #E1"]\n'
        "#E1 = hr[Check Alice's compliance]\n"
        '#E3 = facilities["Book a desk"]'
    )
    architect = Agent(
        name="architect",
        model=ScriptedModel([plan, "Alice is onboarded"]),
        subagents=[specialist("hr"), specialist("it"), specialist("facilities")],
        strategy=Hierarchy({"hr": "HR compliance", "it": "IT setup", "facilities": "desks"}),
    )
    result, events = await _run(store, architect, "Onboard Alice")
    assert result.answer == "Alice is onboarded"
    spawned = [(e.event.agent, e.event.goal) for e in events if isinstance(e.event, ChildSpawned)]
    assert spawned == [
        ("hr", "Check Alice's compliance"),
        ("facilities", "Book a desk"),
        ("it", "Set up a laptop once HR says: succeeded: hr done for [Check Alice's compliance]"),
    ]


async def test_hierarchy_does_not_start_a_task_whose_input_failed(store: Store) -> None:
    told: list[str] = []

    def architect_model(request: ModelRequest) -> str:
        if request.purpose == "plan":
            return '#E1 = hr["Check"]\n#E2 = it["Laptop after #E1"]'
        told.append(request.messages[-1].content)
        return "onboarding blocked by HR"

    architect = Agent(
        name="architect",
        model=FunctionModel(architect_model),
        subagents=[specialist("hr", fail=True), specialist("it")],
        strategy=Hierarchy({"hr": "HR compliance", "it": "IT setup"}),
    )
    result, events = await _run(store, architect, "Onboard Bob")
    assert result.answer == "onboarding blocked by HR"
    assert [e.event.agent for e in events if isinstance(e.event, ChildSpawned)] == ["hr"]
    assert "#E1 hr: Check\n  → failed: model 'function' failed" in told[0]
    assert "not started: a task it waits for failed" in told[0]


async def test_each_part_gets_a_carved_share_of_the_parents_budget(store: Store) -> None:
    from autonomic.guards.budget import Budget

    parent = Agent(
        name="boss",
        model=ScriptedModel([]),
        subagents=[summer()],
        guards=[Budget(tokens=80_000, max_tokens=100, child_share=0.5)],
        strategy=ForkJoin("summer", split=split, join=total, on_failure="skip"),
    )
    result, events = await _run(store, parent, "sum 1..16")
    assert result.status == "completed"
    budgets = [e.event.budget for e in events if isinstance(e.event, ChildSpawned)]
    assert [b and b["tokens"] for b in budgets] == [10_000.0] * 4  # half, split 4 ways


async def test_a_specialist_that_is_not_a_subagent_is_refused_before_planning(
    store: Store,
) -> None:
    architect = Agent(
        name="architect",
        model=ScriptedModel([]),
        subagents=[specialist("hr")],
        strategy=Hierarchy({"hr": "HR", "legal": "contracts"}),
    )
    result, _ = await _run(store, architect, "Hire Carol")
    assert result.status == "failed" and result.model_calls == 0
    assert result.error == (
        "specialist 'legal' is not a subagent of this agent: add it to Agent(subagents=[...])"
    )


async def test_replay_checks_which_nodes_were_delegated(store: Store) -> None:
    """A log whose Delegated names other nodes than the strategy hands out diverges."""
    parent = Agent(
        name="boss",
        model=ScriptedModel([]),
        subagents=[summer()],
        strategy=ForkJoin("summer", split=split, join=total, on_failure="skip"),
    )
    _, events = await _run(store, parent, "sum 1..16")
    [at] = [i for i, e in enumerate(events) if isinstance(e.event, Delegated)]
    forged = events[at].event
    assert isinstance(forged, Delegated) and len(forged.nodes) == 4
    replay_events("forged", events, parent)  # the log as it is replays
    events[at] = replace(events[at], event=replace(forged, nodes=forged.nodes[::-1]))
    with pytest.raises(ReplayDivergence, match="strategy's own events"):
        replay_events("forged", events, parent)

"""Hierarchical budgets: a child is given a share of its parent's remainder, the unused
part comes back when it ends, and a tree of runs never spends more than its root was
given, also when its process is stopped mid-call (as by kill -9) and the runs resumed."""

from __future__ import annotations

import asyncio
import random
import tempfile
import time
from pathlib import Path

import hypothesis.strategies as st
from hypothesis import HealthCheck, given, settings

from autonomic import Agent, Budget, FunctionModel, ModelRequest, Runtime
from autonomic.events import ChildCompleted, ChildSpawned, RunStarted
from autonomic.guards.budget import BudgetLedger, ledger_spent
from autonomic.loader import read_events
from autonomic.messages import ModelResponse, ToolCall, Usage
from autonomic.models.pricing import Price, register_price

PRICE = Price(10.0, 30.0)
register_price("tree-test", input=PRICE.input, output=PRICE.output)
MAX_TOKENS = 200
DEPTH = 3


class Tree:
    """A random tree of agents, decided by ``seed`` for each node's path; the model
    charges every call it answers (or is stopped in) to ``charged``."""

    def __init__(self, seed: int, crash_at: int | None) -> None:
        self.seed, self.crash_at = seed, crash_at
        self.charged = 0.0
        self.calls = 0
        self.crashed = asyncio.Event()

    def node(self, path: str) -> tuple[int, random.Random]:
        rng = random.Random(f"{self.seed}:{path}")
        depth = path.count(".")
        return (rng.randint(0, 2) if depth < DEPTH else 0), rng

    async def answer(self, request: ModelRequest) -> ModelResponse:
        goal = next(m.content for m in request.messages if m.role == "user")
        path = goal.removeprefix("node ")
        kids, rng = self.node(path)
        turn = sum(1 for m in request.messages if m.role == "assistant")
        for _ in range(turn):
            rng.random()
        # what the call costs: at most its reservation (a prompt no longer than the
        # conservative estimate, at most MAX_TOKENS of output)
        chars = sum(len(m.content) for m in request.messages)
        usage = Usage(chars // 4, rng.randint(1, MAX_TOKENS))
        cost = PRICE.cost(usage)
        self.charged += cost
        self.calls += 1
        if self.calls == self.crash_at:
            self.crashed.set()
            await asyncio.Event().wait()  # the process is stopped during this call
        done = sum(1 for m in request.messages if m.role == "tool")
        if request.tools and done < kids:
            call = ToolCall(f"d{turn}", "delegate", {"goal": f"node {path}.{done + 1}"})
            return ModelResponse(tool_calls=(call,), usage=usage, cost=cost)
        return ModelResponse(text=f"{path} done", usage=usage, cost=cost)


def agents(tree: Tree, budget: float) -> list[Agent]:
    model = FunctionModel(tree.answer, name="tree-test")
    level: Agent | None = None
    made = []
    for depth in range(DEPTH, -1, -1):
        tools = [level.as_tool(name="delegate")] if level is not None else []
        guards = [Budget(cost_usd=budget, max_tokens=MAX_TOKENS)] if depth == 0 else []
        level = Agent(name=f"level{depth}", model=model, tools=tools, guards=guards, max_steps=50)
        made.append(level)
    return made


async def settle(runtime: Runtime, stop: asyncio.Event | None = None) -> None:
    """Until no run is being driven or ready (or ``stop`` is set)."""
    deadline = time.monotonic() + 30
    quiet = 0
    while quiet < 4 and time.monotonic() < deadline:
        if stop is not None and stop.is_set():
            return
        await asyncio.sleep(0.05)
        busy = runtime.supervisor.tasks or await runtime.list_runs(status="running")
        quiet = 0 if busy else quiet + 1
    assert time.monotonic() < deadline, "the tree never settled"


async def grow(db: str, seed: int, budget: float, crash_at: int | None) -> tuple[Tree, float]:
    tree = Tree(seed, crash_at)
    made = agents(tree, budget)
    root = made[-1]
    async with Runtime(db, agents=made, poll_s=0.05, lease_s=2) as runtime:
        run = await runtime.start(root, "node 0", run_id="root")
        await settle(runtime, tree.crashed)
    if tree.crashed.is_set():
        async with Runtime(db, agents=made, poll_s=0.05, resume_incomplete=True) as runtime:
            await runtime.resume_incomplete()
            await settle(runtime)
            state = await runtime.state(run.run_id)
    else:
        async with Runtime(db, agents=made, wake=False) as runtime:
            state = await runtime.state(run.run_id)
    return tree, ledger_spent(state)["cost_usd"]


@settings(
    max_examples=25,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    seed=st.integers(0, 2**32),
    budget=st.floats(0.004, 0.3),
    crash_at=st.none() | st.integers(1, 12),
)
def test_a_tree_never_spends_more_than_its_root_was_given(
    seed: int, budget: float, crash_at: int | None
) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        db = f"sqlite:///{Path(tmp) / 'runs.db'}"
        tree, counted = asyncio.run(grow(db, seed, budget, crash_at))
    assert tree.charged <= budget + 1e-9
    # the root's ledger counts at least what was really charged (a call cut short by
    # the stop included), and never more than it was given
    assert tree.charged <= counted + 1e-9 <= budget + 2e-9


async def test_a_child_is_given_a_share_and_the_rest_comes_back(db_url: str) -> None:
    tree = Tree(seed=0, crash_at=None)
    made = agents(tree, 0.5)
    tree.node = lambda path: (1 if path == "0" else 0, random.Random(path))  # type: ignore[method-assign]
    async with Runtime(db_url, agents=made) as runtime:
        run = await runtime.start(made[-1], "node 0")
        result = await run.wait()
        assert result.answer == "0 done"
        events = [e.event for e in await read_events(runtime.store, run.run_id)]
        spawned = next(e for e in events if isinstance(e, ChildSpawned))
        ended = next(e for e in events if isinstance(e, ChildCompleted))
        child_start = (await read_events(runtime.store, spawned.child_run_id))[0].event
        state = await runtime.state(run.run_id)
    assert spawned.budget is not None and 0 < spawned.budget["cost_usd"] < 0.25
    assert isinstance(child_start, RunStarted) and child_start.budget == spawned.budget
    assert ended.spent is not None and 0 < ended.spent["cost_usd"] < spawned.budget["cost_usd"]
    ledger = state.slot(BudgetLedger)
    assert not ledger.held  # returned: only what the child spent is counted
    assert ledger.children_cost == ended.spent["cost_usd"]
    assert abs(ledger_spent(state)["cost_usd"] - tree.charged) < 1e-9

"""A random tree of agents that spend money, shared by the budget tree tests, and run as
a process of its own (``python budget_tree.py DB SEED BUDGET BILL``) for the kill -9 test:
every call the model answers is first written to the BILL file, as a provider would
charge it, so the bill survives the process."""

from __future__ import annotations

import asyncio
import os
import random
import sys
import time
from pathlib import Path

from autonomic import Agent, Budget, FunctionModel, ModelRequest, Runtime
from autonomic.messages import ModelResponse, ToolCall, Usage
from autonomic.models.pricing import Price, register_price

PRICE = Price(10.0, 30.0)
register_price("tree-test", input=PRICE.input, output=PRICE.output)
MAX_TOKENS = 200
DEPTH = 3


class Tree:
    """A random tree of agents, decided by ``seed`` for each node's path; the model
    charges every call it answers (or is stopped in) to ``charged``."""

    def __init__(self, seed: int, crash_at: int | None, bill: Path | None = None) -> None:
        self.seed, self.crash_at, self.bill = seed, crash_at, bill
        self._charged = 0.0
        self.calls = 0
        self.crashed = asyncio.Event()

    @property
    def charged(self) -> float:
        """What the provider charged, in this process (or, with a bill, in all)."""
        if self.bill is None:
            return self._charged
        return sum(float(line) for line in self.bill.read_text().split())

    def _charge(self, cost: float) -> None:
        self._charged += cost
        if self.bill is not None:
            with self.bill.open("a") as f:
                f.write(f"{cost!r}\n")
                f.flush()
                os.fsync(f.fileno())

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
        self._charge(cost)
        self.calls += 1
        if self.bill is not None:
            await asyncio.sleep(0.02)  # an answer takes a while: a kill may land here
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


async def _main(db: str, seed: int, budget: float, bill: Path) -> None:
    tree = Tree(seed, None, bill)
    made = agents(tree, budget)
    async with Runtime(db, agents=made, poll_s=0.05, lease_s=0.5) as runtime:
        await runtime.start(made[-1], "node 0", run_id="root")
        await settle(runtime)


if __name__ == "__main__":
    db, seed, budget, bill = sys.argv[1:5]
    asyncio.run(_main(db, int(seed), float(budget), Path(bill)))

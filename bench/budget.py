"""The budget guard's cost: how long one decision takes, and what it adds to each step.

(a) Decision latency: ``Budget.check`` on a model call of a run 40 turns in (its prompt
    counted, a reservation priced, every limit compared), p50 and p95 in microseconds:
    cold (the prompt counted from scratch) and warm (the run's previous prompt was
    counted, as in a live run, so only what is new is).
(b) Per-step overhead: one agent making N tool round-trips (ScriptedModel, a no-op tool,
    in-memory store) without guards and with ``Budget(cost_usd=, tokens=, model_calls=)``;
    the difference per round-trip (median of alternating trials).

Prints one JSON object. Usage: python bench/budget.py [--quick]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import time

from autonomic import Agent, Budget, Runtime, ScriptedModel, tool, tool_call
from autonomic.events import ActionCompleted, ActionRequested, ModelResponded, RunStarted
from autonomic.guards.base import Guard
from autonomic.messages import Message, ModelRequest, ToolCall, Usage
from autonomic.state import RunState
from autonomic.steps import ModelCall


def decision_figures(trials: int) -> dict[str, object]:
    budget = Budget(cost_usd=100.0, tokens=10_000_000, model_calls=1000)
    state = RunState(run_id="bench")
    state.apply(RunStarted(goal="summarise the reports", agent="a", model="gpt-4o"), 1, 1.0)
    seq = 1
    for turn in range(40):
        call = ToolCall(f"c{turn}", "read", {"page": turn})
        events = [
            ModelResponded(tool_calls=(call,), usage=Usage(900, 40), model="gpt-4o", cost=0.003),
            ActionRequested(f"a{turn}", call.id, "read", {"page": turn}),
            ActionCompleted(f"a{turn}", "a page of the report " * 20),
        ]
        for event in events:
            seq += 1
            state.apply(event, seq, 1.0 + seq)
    request = ModelRequest(
        messages=(Message(role="system", content="You are careful."), *state.messages)
    )
    step = ModelCall(request)
    cold, warm = [], []
    for n in range(trials):
        state.run_id = f"bench-{n}"  # a run whose prompts were never counted
        started = time.perf_counter()
        budget.check(state, step)
        cold.append((time.perf_counter() - started) * 1e6)
        started = time.perf_counter()
        budget.check(state, step)
        warm.append((time.perf_counter() - started) * 1e6)
    cold.sort()
    warm.sort()
    return {
        "decision_messages": len(request.messages),
        "decision_cold_p50_us": round(cold[len(cold) // 2], 2),
        "decision_cold_p95_us": round(cold[int(len(cold) * 0.95)], 2),
        "decision_p50_us": round(warm[len(warm) // 2], 2),
        "decision_p95_us": round(warm[int(len(warm) * 0.95)], 2),
    }


@tool
async def noop(i: int) -> str:
    "Do nothing."
    return "ok"


async def timed_run(runtime: Runtime, steps: int, guards: list[Guard], name: str) -> float:
    script: list[object] = [tool_call("noop", i=i) for i in range(steps)] + ["done"]
    agent = Agent(
        name=name, model=ScriptedModel(script), tools=[noop], guards=guards, max_steps=steps + 2
    )
    started = time.perf_counter()
    result = await (await runtime.start(agent, "loop over the items")).wait()
    elapsed = time.perf_counter() - started
    assert result.status == "completed", result
    return elapsed * 1000 / steps


def budget() -> list[Guard]:
    return [Budget(cost_usd=1000.0, tokens=100_000_000, model_calls=100_000)]


async def overhead_figures(steps: int, trials: int) -> dict[str, object]:
    bare, guarded = [], []
    async with Runtime("memory://") as runtime:
        await timed_run(runtime, 5, budget(), "warm-guarded")
        await timed_run(runtime, 5, [], "warm-bare")
        for n in range(trials):
            bare.append(await timed_run(runtime, steps, [], f"bare-{n}"))
            guarded.append(await timed_run(runtime, steps, budget(), f"guarded-{n}"))
    base, full = statistics.median(bare), statistics.median(guarded)
    return {
        "overhead_steps": steps,
        "ms_per_step_no_budget": round(base, 4),
        "ms_per_step_with_budget": round(full, 4),
        "budget_overhead_ms_per_step": round(full - base, 4),
    }


async def main(quick: bool) -> None:
    figures: dict[str, object] = {}
    figures.update(decision_figures(2_000 if quick else 20_000))
    figures.update(await overhead_figures(50 if quick else 200, 3 if quick else 9))
    print(json.dumps(figures))


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="fewer trials")
    asyncio.run(main(parser.parse_args().quick))

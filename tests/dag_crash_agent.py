"""The agent the DAG crash test kills: a 16-node graph whose tools leave a mark per node.

Both tools append their action id to the effects file and then take a while to report
back, so kills land between a node's effect and its outcome. ``fetch`` is idempotent (a
node cut short is run again); ``work`` is not (its outcome becomes unknown).
"""

from __future__ import annotations

import asyncio
import os
import sys

from autonomic import Agent, Runtime, ScriptedModel, ToolContext, tool
from autonomic.strategies import DAGPlanner

EFFECTS = os.environ.get("DRILL_EFFECTS", "effects.txt")
LAYERS, WIDTH = 4, 4


def _append(line: str) -> None:
    with open(EFFECTS, "a") as f:
        f.write(line + "\n")
        f.flush()
        os.fsync(f.fileno())


async def _mark(step: str, context: ToolContext) -> str:
    _append(f"{context.action_id} {step}")
    await asyncio.sleep(0.04)
    return f"did {step.split()[0]}"


@tool
async def work(step: str, context: ToolContext) -> str:
    "Do one step of the job (not idempotent)."
    return await _mark(step, context)


@tool(idempotent=True)
async def fetch(step: str, context: ToolContext) -> str:
    "Fetch what one step needs (idempotent)."
    return await _mark(step, context)


def _plan() -> str:
    lines = []
    for layer in range(LAYERS):
        for i in range(WIDTH):
            n = layer * WIDTH + i + 1
            uses = f" after #E{n - WIDTH}" if layer else ""
            name = "work" if n % 2 else "fetch"
            lines.append(f'#E{n} = {name}[{{"step": "s{n}{uses}"}}]')
    return "\n".join(lines)


agent = Agent(
    name="dagcrash",
    model=ScriptedModel([_plan(), "Answer: all layers done"], latency=0.01),
    tools=[work, fetch],
    strategy=DAGPlanner(),
)


async def main(store_url: str, goal: str | None) -> None:
    async with Runtime(store_url, lease_s=0.3, max_recoveries=1000) as runtime:
        if goal is not None:
            run = await runtime.start(agent, goal)
            await run.wait(check=False)
            return
        for _ in range(100):
            handles = await runtime.resume_incomplete()
            if handles:
                await handles[0].wait(check=False)
                return
            await asyncio.sleep(0.1)


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], sys.argv[2] if len(sys.argv) > 2 else None))

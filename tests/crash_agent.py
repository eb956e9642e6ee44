"""The agent the crash test kills over and over: its tools leave marks in a file.

``charge`` is not idempotent: it appends its action id to the effects file, then takes a
while to report back, so a kill often lands after the effect and before the outcome is
journaled. ``note`` is idempotent: it writes its idempotency key only once however often
it is re-run.
"""

from __future__ import annotations

import asyncio
import os
import sys
import time

from autonomic import Agent, Runtime, ScriptedModel, ToolContext, tool, tool_call

EFFECTS = os.environ.get("DRILL_EFFECTS", "effects.txt")
STEPS = 24


def _append(line: str) -> None:
    with open(EFFECTS, "a") as f:
        f.write(line + "\n")
        f.flush()
        os.fsync(f.fileno())


@tool
def charge(amount: int, context: ToolContext) -> str:
    "Charge an amount (not idempotent)."
    _append(f"charge {context.action_id}")
    time.sleep(0.03)
    return f"charged {amount}"


@tool(idempotent=True)
def note(text: str, context: ToolContext) -> str:
    "Write a note once per idempotency key."
    with open(EFFECTS, "a+") as f:
        f.seek(0)
        if f"note {context.idempotency_key}\n" not in f.read():
            f.write(f"note {context.idempotency_key}\n")
    time.sleep(0.03)
    return "noted"


def _script() -> list[object]:
    script: list[object] = []
    for i in range(STEPS):
        if i % 4 == 3:
            script.append([tool_call("charge", amount=i), tool_call("note", text=f"n{i}")])
        elif i % 2:
            script.append(tool_call("note", text=f"n{i}"))
        else:
            script.append(tool_call("charge", amount=i))
    script.append("all done")
    return script


agent = Agent(
    name="crashy",
    model=ScriptedModel(_script(), latency=0.01),
    tools=[charge, note],
    max_steps=STEPS + 5,
)


async def main(store_url: str, goal: str | None) -> None:
    async with Runtime(store_url, lease_s=0.3, max_recoveries=1000) as runtime:
        if goal is not None:
            run = await runtime.start(agent, goal)
            print(run.run_id, flush=True)
            await run.wait()
            return
        for _ in range(100):
            handles = await runtime.resume_incomplete()
            if handles:
                await handles[0].wait()
                return
            await asyncio.sleep(0.1)


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], sys.argv[2] if len(sys.argv) > 2 else None))

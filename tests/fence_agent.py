"""The agent the fencing test stalls with SIGSTOP: each step does slow work that leaves a
mark (with the pid that did it) in a file.

Run as ``fence_agent.py URL start`` or ``fence_agent.py URL adopt`` (take over what a
stalled process holds, once its lease has run out).
"""

from __future__ import annotations

import asyncio
import os
import sys
import time

from autonomic import Agent, Runtime, ScriptedModel, tool, tool_call

EFFECTS = os.environ.get("DRILL_EFFECTS", "effects.txt")


@tool
def work(step: int) -> str:
    "Do one slow piece of work."
    with open(EFFECTS, "a") as f:
        f.write(f"work {step} {os.getpid()}\n")
    time.sleep(0.2)
    return f"did {step}"


agent = Agent(
    name="fenced",
    model=ScriptedModel([tool_call("work", step=i) for i in range(12)] + ["finished"]),
    tools=[work],
)


async def main(url: str, mode: str) -> None:
    async with Runtime(url, lease_s=0.6, resume_incomplete=mode == "adopt") as runtime:
        if mode == "start":
            await (await runtime.start(agent, "work")).wait(check=False)
            await asyncio.sleep(3)  # after SIGCONT: time to misbehave, if it could
            return
        (info,) = await runtime.list_runs()
        result = await runtime.handle(info.run_id).wait(check=False)
        print(result.status, flush=True)


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], sys.argv[2]))

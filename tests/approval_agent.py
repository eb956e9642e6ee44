"""The agent the approval crash test kills over and over: every call needs approval.

``transfer`` is not idempotent: it appends its action id and the arguments it actually
ran with to the effects file, then takes a while to report back, so a kill often lands
between the effect and its journaled outcome.

Run as ``approval_agent.py URL start GOAL`` (start it and drive until it waits),
``URL drive`` (take over whatever is ready and drive it until it waits or ends) or
``URL approve`` (decide every pending approval, as a person would, and exit).
"""

from __future__ import annotations

import asyncio
import os
import sys
import time

from autonomic import Agent, Runtime, ScriptedModel, ToolContext, tool, tool_call

EFFECTS = os.environ.get("DRILL_EFFECTS", "effects.txt")
STEPS = 8


def _append(line: str) -> None:
    with open(EFFECTS, "a") as f:
        f.write(line + "\n")
        f.flush()
        os.fsync(f.fileno())


@tool(requires_approval=True)
def transfer(account: str, amount: int, context: ToolContext) -> str:
    "Move money (not idempotent; always needs a person's approval)."
    _append(f"transfer {context.action_id} {account} {amount}")
    time.sleep(0.03)
    return f"sent {amount} to {account}"


def _script() -> list[object]:
    script: list[object] = []
    for i in range(STEPS):
        if i % 3 == 2:
            script.append(
                [
                    tool_call("transfer", account=f"a{i}", amount=10 * i),
                    tool_call("transfer", account=f"b{i}", amount=10 * i + 1),
                ]
            )
        else:
            script.append(tool_call("transfer", account=f"a{i}", amount=10 * i))
    script.append("all paid")
    return script


agent = Agent(
    name="approver-drill",
    model=ScriptedModel(_script(), latency=0.01),
    tools=[transfer],
    max_steps=STEPS + 5,
)


def decide(amount: int) -> str:
    """The approver's policy: deny amounts ending in 1, halve multiples of 20, approve the rest."""
    if amount % 10 == 1:
        return "deny"
    return "halve" if amount % 20 == 0 and amount else "approve"


async def main(url: str, mode: str, goal: str | None) -> None:
    async with Runtime(url, lease_s=0.3, max_recoveries=1000, wake=False) as runtime:
        if mode == "start":
            run = await runtime.start(agent, goal or "pay")
            await run.wait_until_waiting()
        elif mode == "drive":
            for _ in range(100):
                handles = await runtime.resume_incomplete()
                if handles:
                    await handles[0].wait_until_waiting()
                    return
                await asyncio.sleep(0.05)
        else:
            (info,) = await runtime.list_runs()
            for pending in await runtime.pending_approvals(info.run_id):
                amount = pending.args["amount"]
                choice = decide(amount)
                if choice == "deny":
                    await runtime.deny(info.run_id, pending.digest, approver="drill", reason="no")
                elif choice == "halve":
                    edited = {**pending.args, "amount": amount // 2}
                    await runtime.approve(
                        info.run_id, pending.digest, approver="drill", args=edited
                    )
                else:
                    await runtime.approve(info.run_id, pending.digest, approver="drill")
                print(f"decided {pending.action_id}", flush=True)


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], sys.argv[2], sys.argv[3] if len(sys.argv) > 3 else None))

"""Agents the Ray test drives: a parent that fans out, and a child whose tool leaves a
mark per attempt in a file (``RAY_MARKS``) and, on its first attempt for a child named
in ``RAY_STALL``, stalls until the test kills the Ray worker running it."""

from __future__ import annotations

import os
import time

from autonomic import (
    Agent,
    AgentView,
    Await,
    Children,
    ChildSpec,
    Finish,
    ScriptedModel,
    Spawn,
    Step,
    ToolContext,
    tool,
    tool_call,
)
from autonomic.state import RunState


def _marks() -> str:
    return os.environ["RAY_MARKS"]


@tool(idempotent=True)
def work(context: ToolContext) -> str:
    "Do the child's work (idempotent: safe to run again after a crash)."
    with open(_marks()) as f:
        seen = f.read()
    with open(_marks(), "a") as f:
        f.write(f"{context.run_id} {os.getpid()}\n")
    if context.run_id == os.environ.get("RAY_STALL") and context.run_id not in seen:
        time.sleep(120)  # the test kills this worker now
    return f"worked on {context.run_id}"


worker = Agent(name="ray-child", model=ScriptedModel([tool_call("work"), "done"]), tools=[work])


class FanOut:
    """One child per word of the goal; joins their answers."""

    name = "ray-fan-out"

    def next_step(self, state: RunState, agent: AgentView) -> Step:
        if not state.children:
            return Spawn(tuple(ChildSpec("ray-child", w) for w in state.goal.split()))
        if state.open_children:
            return Await(Children(tuple(state.children)), reason="the children")
        return Finish(" ".join(c.answer or "?" for c in state.children.values()))


parent = Agent(name="ray-parent", model=ScriptedModel([]), strategy=FanOut(), subagents=[worker])

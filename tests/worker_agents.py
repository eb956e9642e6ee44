"""Agents the worker tests serve from worker processes (imported by module name)."""

from __future__ import annotations

from autonomic import Agent, ScriptedModel, tool, tool_call


@tool
def bump(n: int) -> str:
    "Bump a counter."
    return f"bumped {n}"


quick = Agent(
    name="quick",
    model=ScriptedModel([tool_call("bump", n=1), "done"], latency=0.01),
    tools=[bump],
)
slow = Agent(name="slow", model=ScriptedModel(["done at last"], latency=60.0))
paced = Agent(name="paced", model=ScriptedModel(["done"], latency=0.6))

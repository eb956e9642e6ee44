"""The dreamer as a durable run, started every N model calls of the agent it serves.

``dreamer_agent(dreamer)`` is an agent whose run performs one consolidation pass (the
``dream`` tool) and ends with its report: the pass is in the log (each fact as a
``FactAsserted``), has its own budget (the dreamer's ``max_calls``, the run's
``max_wall_s``), survives crashes like any run, and may be started on a schedule with
``Runtime.start``. ``Dreaming(strategy, every=N)`` wraps an agent's strategy so that every
N of its model calls it starts that run as a child (the agent lists the dreamer in
``subagents``) and carries on; before it finishes it waits for a dream still running.
"""

from __future__ import annotations

import json

from autonomic.agent import Agent
from autonomic.errors import ConfigError
from autonomic.events import Event
from autonomic.memory.context import ContextSlot
from autonomic.memory.dreamer import Dreamer
from autonomic.memory.tools import FactAsserted
from autonomic.messages import ToolCall
from autonomic.state import RunState
from autonomic.steps import (
    Await,
    Children,
    ChildSpec,
    Fail,
    Finish,
    ModelCall,
    Spawn,
    Step,
    ToolCalls,
)
from autonomic.strategies.base import AgentView, Strategy
from autonomic.tools.base import FunctionTool, ToolContext, tool

__all__ = ["DreamOnce", "Dreaming", "dream_tool", "dreamer_agent"]

DREAM_GOAL = "Consolidate episodic memory into the knowledge graph."


def dream_tool(dreamer: Dreamer) -> FunctionTool:
    """A ``dream`` tool running one pass of ``dreamer`` (a second pass changes nothing)."""

    @tool(name="dream", idempotent=True, timeout=600.0)
    async def dream(context: ToolContext) -> str:
        """Consolidate episodic memories into knowledge-graph facts, once."""
        report = await dreamer.dream()
        for fact in map(dreamer.graph.get, report.facts):
            context.record(
                FactAsserted(context.action_id, fact.id, fact.subject, fact.relation, fact.object)
            )
        return json.dumps(
            {
                "considered": report.considered,
                "clusters": report.clusters,
                "model_calls": report.model_calls,
                "facts": list(report.facts),
                "pruned": list(report.pruned),
                "left_for_later": report.left_for_later,
            }
        )

    return dream


class DreamOnce:
    """Call ``dream`` once, then finish with its report (no model is asked anything)."""

    name = "dream-once"

    def next_step(self, state: RunState, agent: AgentView) -> Step:
        if not state.actions_requested:
            return ToolCalls((ToolCall("dream-1", "dream", {}),), rationale="consolidate memory")
        last = state.messages[-1]
        if last.role != "tool":
            return Fail("the dream tool left no result")
        if last.content.startswith("Error"):
            return Fail(last.content)
        return Finish(last.content)


def dreamer_agent(dreamer: Dreamer, *, name: str = "dreamer", max_wall_s: float = 600.0) -> Agent:
    """An agent whose every run is one durable consolidation pass of ``dreamer``."""
    return Agent(
        name,
        instructions="Consolidate memory.",
        model=dreamer.model,
        tools=[dream_tool(dreamer)],
        strategy=DreamOnce(),
        max_steps=1,
        max_wall_s=max_wall_s,
    )


class Dreaming:
    """``inner``, starting the ``dreamer`` agent as a child run every ``every`` model calls."""

    def __init__(self, inner: Strategy, *, every: int, dreamer: str = "dreamer") -> None:
        if every < 1:
            raise ConfigError("Dreaming: every must be at least 1 model call")
        self.inner, self.every, self.dreamer = inner, every, dreamer
        self.name = f"{inner.name}+dreaming"
        self.events: tuple[type[Event], ...] = tuple(getattr(inner, "events", ()))

    def next_step(self, state: RunState, agent: AgentView) -> Step:
        step = self.inner.next_step(state, agent)
        if self.dreamer not in agent.subagents:
            return step
        dreams = [cid for cid, c in state.children.items() if c.agent == self.dreamer]
        if isinstance(step, ModelCall):
            calls = state.slot(ContextSlot).act_responses
            if calls // self.every > len(dreams):
                return Spawn((ChildSpec(self.dreamer, DREAM_GOAL),))
        if isinstance(step, Finish):
            running = tuple(cid for cid in dreams if state.children[cid].status == "running")
            if running:
                return Await(Children(running), reason="the dreamer to finish")
        return step

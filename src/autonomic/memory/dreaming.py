"""The dreamer as a durable run, started every N model calls of the agent it serves.

``dreamer_agent(dreamer)`` is an agent whose run performs one consolidation pass as
ordinary steps: the ``dream_plan`` tool lists the clusters to consolidate, then for each
cluster one model call (purpose ``dream``, a ``ModelCalled``/``ModelResponded`` pair in
the log, counted by the run's ``Budget`` guard) and one ``dream_consolidate`` tool call
that records its facts (each a ``FactAsserted``) and prunes what they replace. The
strategy (``DreamPass``) is pure: it reads its progress from the log, so a run resumed
after a crash goes on at the first cluster not consolidated, and the tools are
idempotent. The run may be started on a schedule with ``Runtime.start``.
``Dreaming(strategy, every=N)`` wraps an agent's strategy so that every N of its model
calls it starts that run as a child (the agent lists the dreamer in ``subagents``) and
carries on; before it finishes it waits for a dream still running.
"""

from __future__ import annotations

import json
from typing import Any

from autonomic.agent import Agent
from autonomic.errors import ConfigError
from autonomic.events import Event
from autonomic.guards.budget import Budget
from autonomic.memory.context import ContextSlot
from autonomic.memory.dreamer import DREAM_PURPOSE, Dreamer, dream_request, triples
from autonomic.memory.tools import FactAsserted
from autonomic.messages import Message, ToolCall
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

__all__ = ["DreamPass", "Dreaming", "dreamer_agent", "dreamer_tools"]

DREAM_GOAL = "Consolidate episodic memory into the knowledge graph."
PLAN_TOOL, CONSOLIDATE_TOOL = "dream_plan", "dream_consolidate"


def dreamer_tools(dreamer: Dreamer) -> list[FunctionTool]:
    """The dreamer's two tools: ``dream_plan`` and ``dream_consolidate`` (both idempotent)."""

    @tool(name=PLAN_TOOL, idempotent=True, timeout=600.0)
    async def dream_plan() -> str:
        """List the clusters of memories not yet consolidated, best member first."""
        plan = await dreamer.plan()
        return json.dumps(
            {
                "considered": plan.considered,
                "clusters": [
                    {"ids": [m.id for m in c], "texts": [m.text for m in c]} for c in plan.clusters
                ],
                "left_for_later": plan.left_for_later,
            }
        )

    @tool(name=CONSOLIDATE_TOOL, idempotent=True, timeout=600.0)
    async def dream_consolidate(
        context: ToolContext, ids: list[int], facts: list[list[str]]
    ) -> str:
        """Record a cluster's facts, derived from its memories, and prune all but the first."""
        found, pruned = dreamer.consolidate(ids, [(f[0], f[1], f[2]) for f in facts])
        for fact in map(dreamer.graph.get, found):
            context.record(
                FactAsserted(context.action_id, fact.id, fact.subject, fact.relation, fact.object)
            )
        return json.dumps({"facts": found, "pruned": pruned})

    return [dream_plan, dream_consolidate]


def _results(state: RunState, name: str) -> list[Message]:
    return [m for m in state.messages if m.role == "tool" and m.name == name]


class DreamPass:
    """One consolidation pass: plan, then per cluster a ``dream`` model call and a
    ``dream_consolidate`` call; finishes with a JSON report. Pure: progress is the log."""

    name = "dream-pass"

    def next_step(self, state: RunState, agent: AgentView) -> Step:
        plans = _results(state, PLAN_TOOL)
        if not plans:
            return ToolCalls((ToolCall("dream-plan", PLAN_TOOL, {}),), rationale="plan")
        try:
            plan = json.loads(plans[0].content)
        except ValueError:
            return Fail(f"the dream plan failed: {plans[0].content[:200]}")
        clusters: list[dict[str, Any]] = plan["clusters"]
        done = _results(state, CONSOLIDATE_TOOL)
        reports = []
        for message in done:
            try:
                reports.append(json.loads(message.content))
            except ValueError:
                return Fail(f"consolidating a cluster failed: {message.content[:200]}")
        answers = state.transcripts.get(DREAM_PURPOSE, [])
        n = len(done)
        if n < len(clusters):
            cluster = clusters[n]
            if len(answers) <= n:
                return ModelCall(dream_request(cluster["texts"]))
            facts = [list(t) for t in triples(answers[n].content)]
            call = ToolCall(
                f"dream-{n + 1}", CONSOLIDATE_TOOL, {"ids": cluster["ids"], "facts": facts}
            )
            return ToolCalls((call,), rationale=f"cluster {n + 1} of {len(clusters)}")
        return Finish(
            json.dumps(
                {
                    "considered": plan["considered"],
                    "clusters": len(clusters) + plan["left_for_later"],
                    "model_calls": len(answers),
                    "facts": [f for r in reports for f in r["facts"]],
                    "pruned": [p for r in reports for p in r["pruned"]],
                    "left_for_later": plan["left_for_later"],
                }
            )
        )


def dreamer_agent(
    dreamer: Dreamer,
    *,
    name: str = "dreamer",
    max_wall_s: float = 600.0,
    budget: Budget | None = None,
) -> Agent:
    """An agent whose every run is one durable consolidation pass of ``dreamer``.

    Its budget is ``budget``, by default ``Budget(model_calls=dreamer.max_calls + 1)``
    (the plan never asks for more than ``max_calls``; the budget keeps one call back for
    a wrap-up turn). A run out of budget waits, its work in the log, until
    ``Runtime.topup`` raises it.
    """
    calls = max(1, dreamer.max_calls)
    return Agent(
        name,
        instructions="Consolidate memory.",
        model=dreamer.model,
        tools=dreamer_tools(dreamer),
        strategy=DreamPass(),
        max_steps=calls,
        max_wall_s=max_wall_s,
        guards=[budget or Budget(model_calls=calls + 1)],
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

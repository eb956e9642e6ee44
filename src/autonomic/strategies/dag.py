"""The DAG planner (LLMCompiler-style): a graph of tool calls, a join, and re-planning.

The planner writes the whole graph at once; a node's inputs are the earlier nodes its
arguments name (``#E<n>``). Scheduling is eager (``more_calls``): the moment a node
finishes, every node whose inputs are now all ready starts, while unrelated slow nodes
still run. A sub-agent task is a node too: give the agent an ``Agent.as_tool()``
and the node becomes a durable child run. When the graph is done, a join call either
answers or asks to re-plan (up to ``max_replans`` times), seeing every result so far.

Each plan is a ``PlanRecorded`` event and each node an ordinary action whose call id names
the plan and node, so a run that crashed mid-graph resumes with every finished node
known from its log and runs none of them again.
"""

from __future__ import annotations

from autonomic.messages import Message, ModelRequest
from autonomic.state import RunState
from autonomic.steps import Fail, Finish, ModelCall, Step, ToolCalls
from autonomic.strategies._planning import planning_step, rounds
from autonomic.strategies.base import AgentView
from autonomic.strategies.plans import (
    PlanBook,
    PlanNode,
    PlanRecorded,
    call_id,
    node_calls,
    plan_progress,
)
from autonomic.strategies.rewoo import rationale

__all__ = ["DAGPlanner"]

PLANNER_ROLE = (
    "Plan the goal as a graph of tool calls: steps that do not use each other's results "
    "run in parallel, so prefer independent steps. You will see every result afterwards."
)
JOIN = (
    "These are the plan's steps and their results. If they are enough, reply "
    "'Answer: <the final answer>'. If something is missing, reply 'Replan: <what is "
    "missing>' and you will plan again."
)
REPLAN = "Write a new plan for what is missing (its steps are numbered from #E1 again)."


class DAGPlanner:
    name = "dag"
    events = (PlanRecorded,)

    def __init__(self, *, max_repairs: int = 1, max_replans: int = 2) -> None:
        self.max_repairs, self.max_replans = max_repairs, max_replans

    def next_step(self, state: RunState, agent: AgentView) -> Step:
        book = state.slot(PlanBook)
        joins = state.transcripts.get("join", [])

        def verdicts(index: int) -> list[Message]:
            if index > len(joins):
                return []
            verdict = [Message(role="assistant", content=joins[index - 1].content)]
            if _replan(joins[index - 1].content) is not None:
                verdict.append(Message(role="user", content=REPLAN))
            return verdict

        plan = book.plan
        if plan is None:
            dialogue = rounds(state, agent, PLANNER_ROLE, JOIN, verdicts)
            return planning_step(self.name, state, agent, dialogue, max_repairs=self.max_repairs)
        ready, _, _ = plan_progress(plan, book)
        if ready:
            return ToolCalls(node_calls(plan, ready, book), rationale=rationale(ready))
        if len(joins) < plan.index:
            dialogue = rounds(state, agent, PLANNER_ROLE, JOIN, verdicts)
            return ModelCall(ModelRequest(messages=tuple(dialogue), purpose="join"))
        text = joins[plan.index - 1].content.strip()
        reason = _replan(text)
        if reason is None:
            answer = text[7:].strip() if text.lower().startswith("answer:") else text
            return Finish(answer) if answer else Fail("the join wrote an empty answer")
        if plan.index > self.max_replans:
            return Fail(f"still missing after {plan.index} plans: {reason}")
        dialogue = rounds(state, agent, PLANNER_ROLE, JOIN, verdicts)
        return planning_step(
            self.name, state, agent, dialogue, max_repairs=self.max_repairs, reason=reason
        )

    def more_calls(self, state: RunState, agent: AgentView) -> ToolCalls | None:
        """Called after each node's outcome while other nodes still run: the nodes that
        have become ready and are not started yet, to start now."""
        book = state.slot(PlanBook)
        plan = book.plan
        if plan is None:
            return None
        ready = _unstarted(plan_progress(plan, book)[0], plan, book)
        return (
            ToolCalls(node_calls(plan, ready, book), rationale=rationale(ready)) if ready else None
        )


def _unstarted(ready: list[PlanNode], plan: PlanRecorded, book: PlanBook) -> list[PlanNode]:
    """``ready`` less the nodes already asked for (running, or awaiting an approval)."""
    asked = {*book.calls.values(), *book.approvals.values()}
    return [n for n in ready if call_id(plan, n) not in asked]


def _replan(text: str) -> str | None:
    """What the join says is missing, or None when it answered."""
    stripped = text.strip()
    if stripped.lower().startswith("replan:"):
        return stripped[7:].strip() or "the join asked to re-plan"
    return None

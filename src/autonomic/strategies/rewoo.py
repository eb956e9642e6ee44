"""ReWOO: plan once, run the tools, then write the answer (two model calls, not one per step).

The planner writes every step up front with ``#E<n>`` placeholders for results it does
not have yet; the runtime runs the steps whose inputs are ready (those that do not depend
on each other together); a solver call reads the evidence and writes the answer. A
malformed plan gets ``max_repairs`` requests to fix it, then the run fails saying why.
"""

from __future__ import annotations

from autonomic.messages import ModelRequest
from autonomic.state import RunState
from autonomic.steps import Fail, Finish, ModelCall, Step, ToolCalls
from autonomic.strategies._planning import planning_step, rounds
from autonomic.strategies.base import AgentView
from autonomic.strategies.plans import PlanBook, PlanNode, PlanRecorded, node_calls, plan_progress

__all__ = ["ReWOO"]

PLANNER_ROLE = (
    "First make a complete plan to reach the goal with the tools; you will not see the "
    "results until every step has run."
)
SOLVE = "These are the plan's steps and their results. Write the final answer to the goal."


class ReWOO:
    name = "rewoo"
    events = (PlanRecorded,)

    def __init__(self, *, max_repairs: int = 1) -> None:
        self.max_repairs = max_repairs

    def next_step(self, state: RunState, agent: AgentView) -> Step:
        book = state.slot(PlanBook)
        plan = book.plan
        if plan is None:
            dialogue = rounds(state, agent, PLANNER_ROLE, SOLVE, lambda _: ())
            return planning_step(self.name, state, agent, dialogue, max_repairs=self.max_repairs)
        ready, _, _ = plan_progress(plan, book)
        if ready:
            return ToolCalls(node_calls(plan, ready, book), rationale=rationale(ready))
        answers = state.transcripts.get("solve", [])
        if answers:
            text = answers[-1].content.strip()
            return Finish(text) if text else Fail("the solver wrote an empty answer")
        dialogue = rounds(state, agent, PLANNER_ROLE, SOLVE, lambda _: ())
        return ModelCall(ModelRequest(messages=tuple(dialogue), purpose="solve"))


def rationale(nodes: list[PlanNode]) -> str:
    """Why these steps run now: the plan's notes for them."""
    return "; ".join(f"#{n.id}: {n.note}" if n.note else f"#{n.id}" for n in nodes)

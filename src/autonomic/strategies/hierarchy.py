"""A hierarchy: an architect splits the goal into specialist tasks, a resolver orders them,
the specialists run as child runs, and the architect writes the answer from their reports.

The architect writes its plan in the ``#E1 = specialist["task"]`` format; a task that
names another's placeholder waits for it ("IT setup waits for HR compliance") and gets
its report in place of the placeholder. The resolver puts the tasks in dependency order
(they may be written in any order; a cycle is sent back for repair). Tasks whose inputs
are ready run together as child runs of their specialist agents; a specialist reports
upward only whether it succeeded and a short summary (never its history), and a task
whose input failed is not started. Delegations are events, so a crash re-runs no task.
"""

from __future__ import annotations

from collections.abc import Mapping

from autonomic.messages import Message, ModelRequest, ToolSpec
from autonomic.state import ChildState, RunState
from autonomic.steps import Fail, Finish, ModelCall, Step
from autonomic.strategies._planning import attempts, head, planning_step
from autonomic.strategies.base import AgentView
from autonomic.strategies.plans import PlanBook, PlanNode, PlanRecorded, substitute
from autonomic.strategies.team import (
    Delegated,
    delegate,
    spawn_delegated,
    summary,
    wait_for_children,
)
from autonomic.strategies.team import (
    attempts as children_of,
)

__all__ = ["Hierarchy"]

ARCHITECT = (
    "You are the architect. Split the goal into tasks for the specialists below (the "
    "'tools' here are specialist agents; each takes the task as its goal). A task that "
    "needs another's outcome names its placeholder (#E1) in its text and waits for it."
)
ANSWER = "These are the specialists' reports. Write the final answer to the goal."


class Hierarchy:
    name = "hierarchy"
    events = (PlanRecorded, Delegated)

    def __init__(self, specialists: Mapping[str, str], *, max_repairs: int = 1) -> None:
        """``specialists``: agent name → what it does (its agent must be a subagent)."""
        if not specialists:
            raise ValueError("a hierarchy needs at least one specialist")
        self.specialists = dict(specialists)
        self.max_repairs = max_repairs
        self._specs = tuple(
            ToolSpec(
                name,
                what,
                {"type": "object", "properties": {"goal": {"type": "string"}}},
            )
            for name, what in self.specialists.items()
        )

    def next_step(self, state: RunState, agent: AgentView) -> Step:
        strangers = sorted(set(self.specialists) - set(agent.subagents))
        if strangers:
            return Fail(
                f"specialist {strangers[0]!r} is not a subagent of this agent: add it to "
                "Agent(subagents=[...])"
            )
        view = AgentView(agent.instructions, self._specs, agent.max_malformed, agent.subagents)
        plan = state.slot(PlanBook).plan
        replies = state.transcripts.get("plan", [])
        if plan is None:
            dialogue = head(view, state, ARCHITECT) + attempts(replies, self._specs, any_order=True)
            return planning_step(
                self.name,
                state,
                view,
                dialogue,
                max_repairs=self.max_repairs,
                any_order=True,
            )
        reports = _reports(state, plan)
        spawn = spawn_delegated(state, plan, lambda n: _goal(n, reports))
        if spawn is not None:
            return spawn
        start = [
            n
            for n in plan.nodes
            if not children_of(state, plan.index, n.id)
            and all(reports.get(d, ChildState("")).status == "completed" for d in n.deps)
        ]
        if start:
            return delegate(plan, start)
        if state.open_children:
            return wait_for_children(state, f"{len(state.open_children)} specialist(s)")
        answers = state.transcripts.get("join", [])
        if answers:
            text = answers[-1].content.strip()
            return Finish(text) if text else Fail("the architect wrote an empty answer")
        lines = []
        for node in plan.nodes:
            report = reports.get(node.id)
            told = summary(report) if report else "not started: a task it waits for failed"
            lines.append(f"#{node.id} {node.tool}: {node.args.get('goal', '')}\n  → {told}")
        dialogue = [
            *head(view, state, ARCHITECT),
            *attempts(replies[:-1], self._specs, any_order=True),
            Message(role="assistant", content=plan.text),
            Message(role="user", content="\n".join(lines) + f"\n\n{ANSWER}"),
        ]
        return ModelCall(ModelRequest(messages=tuple(dialogue), purpose="join"))


def _reports(state: RunState, plan: PlanRecorded) -> dict[str, ChildState]:
    """Each task's latest child run, by node id."""
    reports = {}
    for node in plan.nodes:
        tried = children_of(state, plan.index, node.id)
        if tried:
            reports[node.id] = tried[-1][1]
    return reports


def _goal(node: PlanNode, reports: Mapping[str, ChildState]) -> str:
    """The task's goal with each input's report in place of its placeholder."""
    texts = {k: summary(v) for k, v in reports.items() if v.status != "running"}
    return str(substitute(node.args.get("goal", ""), texts))

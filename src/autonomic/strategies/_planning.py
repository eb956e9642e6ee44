"""What ReWOO and the DAG planner share: the planner's dialogue, rebuilt from the log.

The dialogue is one growing conversation: the planner's replies (with a repair request
after each malformed one), then the evidence of each plan and the model's verdict on it.
Rebuilding it from the log at every step keeps the strategies pure and makes a resumed
run ask exactly what the crashed one would have.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence

from autonomic.messages import Message, ModelRequest, ToolSpec
from autonomic.state import RunState
from autonomic.steps import Fail, ModelCall, Record, Step
from autonomic.strategies.base import AgentView
from autonomic.strategies.plans import (
    PLAN_FORMAT,
    PlanBook,
    PlanError,
    PlanRecorded,
    evidence,
    parse_plan,
)

__all__ = ["attempts", "head", "planning_step", "rounds", "tool_list"]

Verdicts = Callable[[int], Sequence[Message]]
"""For plan ``k`` (1-based), the messages that follow its evidence (the model's verdict
on it and what it was told next); empty while there is none."""


def tool_list(tools: Sequence[ToolSpec]) -> str:
    return "\n".join(
        f"- {t.name}: {t.description} Arguments (JSON schema): "
        f"{json.dumps(t.parameters.get('properties', {}))}"
        for t in tools
    )


def head(agent: AgentView, state: RunState, role: str) -> list[Message]:
    """The system prompt (instructions, role, tools, plan format) and the goal."""
    system = f"{agent.instructions}\n\n{role}\n\nTools:\n{tool_list(agent.tools)}\n\n{PLAN_FORMAT}"
    return [Message(role="system", content=system), Message(role="user", content=state.goal)]


def _repair(error: str) -> Message:
    return Message(
        role="user",
        content=f"That plan cannot be used: {error}. Write the whole plan again.",
    )


def attempts(
    replies: Sequence[Message], tools: Sequence[ToolSpec], *, any_order: bool = False
) -> list[Message]:
    """The replies, each malformed one followed by the request to repair it."""
    messages: list[Message] = []
    for reply in replies:
        messages.append(Message(role="assistant", content=reply.content))
        try:
            parse_plan(reply.content, tools, any_order=any_order)
        except PlanError as e:
            messages.append(_repair(str(e)))
    return messages


def rounds(
    state: RunState, agent: AgentView, role: str, closing: str, verdicts: Verdicts
) -> list[Message]:
    """The dialogue so far: every plan (with its repairs), its evidence followed by
    ``closing``, and what ``verdicts`` adds after it; then any replies to a plan not yet
    recorded."""
    book = state.slot(PlanBook)
    replies = state.transcripts.get("plan", [])
    messages = head(agent, state, role)
    start = 0
    for plan, end in zip(book.plans, book.replies_at, strict=True):
        messages += attempts(replies[start : end - 1], agent.tools)
        messages.append(Message(role="assistant", content=plan.text))
        messages.append(Message(role="user", content=f"{evidence(plan, book)}\n\n{closing}"))
        messages += verdicts(plan.index)
        start = end
    messages += attempts(replies[start:], agent.tools)
    return messages


def planning_step(
    name: str,
    state: RunState,
    agent: AgentView,
    dialogue: list[Message],
    *,
    max_repairs: int,
    reason: str = "",
    any_order: bool = False,
) -> Step:
    """Ask for a plan, record the one the model wrote, or ask it to repair a malformed
    one; fail once ``max_repairs`` repairs did not help. ``dialogue`` ends where the
    model must write the plan (or its repair)."""
    book = state.slot(PlanBook)
    new = state.transcripts.get("plan", [])[book.replies_used :]
    if new:
        text = new[-1].content
        try:
            nodes = parse_plan(text, agent.tools, any_order=any_order)
        except PlanError as e:
            if len(new) > max_repairs:
                return Fail(f"the planner wrote no usable plan in {len(new)} tries: {e}")
        else:
            return Record((PlanRecorded(name, len(book.plans) + 1, nodes, text, reason),))
    return ModelCall(ModelRequest(messages=tuple(dialogue), purpose="plan"))

"""The critic: a second model reviews a proposed action before it runs.

``CriticGuard`` answers a tool call with a ``Consult`` verdict: the runtime asks the
critic's model (a call recorded under the purpose ``guard:critic``, so it counts against
the run's budget and stays out of the acting model's transcript) and the critic's first
word decides: ``APPROVE`` runs the call, ``REVISE`` sends it back to the acting model with
the critic's reason, ``DENY`` refuses it, ``ESCALATE`` asks a person. Anything else is
taken as a refusal: a critic that cannot say yes has not said yes.
"""

from __future__ import annotations

import json
from collections.abc import Collection

from autonomic.guards.base import (
    ALLOW,
    Allow,
    CallVerdict,
    Consult,
    Deny,
    Guard,
    RequireApproval,
    run_tools,
)
from autonomic.guards.shields import has_side_effects
from autonomic.messages import Message, ModelRequest, ModelResponse, ToolCall
from autonomic.models import Model, resolve_model
from autonomic.state import RunState

__all__ = ["CRITIC_PURPOSE", "CriticGuard", "verdict_of"]

CRITIC_PURPOSE = "guard:critic"

INSTRUCTIONS = (
    "You review one action an autonomous agent proposes, before it runs. Answer with one "
    "word, APPROVE, REVISE, DENY or ESCALATE, then a colon and one sentence of reason. "
    "APPROVE only if the action serves the user's task and is safe; REVISE if a better "
    "action would serve it; DENY if it is harmful or was not asked for; ESCALATE if only a "
    "person can judge."
)


def verdict_of(text: str) -> Allow | Deny | RequireApproval:
    """The critic's answer as a verdict on the call."""
    word, _, reason = text.strip().partition(":")
    word = word.strip().strip("*").upper()
    reason = reason.strip() or text.strip()[:200]
    if word == "APPROVE":
        return ALLOW
    if word == "REVISE":
        return Deny(f"revise: {reason}")
    if word == "ESCALATE":
        return RequireApproval(f"the critic asks a person: {reason}")
    if word == "DENY":
        return Deny(reason)
    return Deny(f"the critic did not approve (its answer: {text.strip()[:200]!r})")


class CriticGuard(Guard):
    """Review tool calls with a second model before they run.

    ``tools``: the tools whose calls are reviewed (by default every tool with side
    effects). ``context``: how many of the newest transcript messages the critic sees.
    """

    name = "critic"

    def __init__(
        self,
        model: Model | str,
        *,
        tools: Collection[str] | None = None,
        instructions: str = INSTRUCTIONS,
        context: int = 6,
    ) -> None:
        self.model = resolve_model(model)
        self.tools = None if tools is None else frozenset(tools)
        self.instructions, self.context = instructions, context

    def _reviews(self, call: ToolCall) -> bool:
        if self.tools is not None:
            return call.name in self.tools
        tool = run_tools().get(call.name)
        return tool is not None and has_side_effects(tool)

    def check_call(self, state: RunState, call: ToolCall) -> CallVerdict:
        if not self._reviews(call):
            return ALLOW
        recent = "\n".join(
            f"{m.role}: {m.content[:500]}" for m in state.messages[-self.context :] if m.content
        )
        proposal = json.dumps({"tool": call.name, "arguments": call.arguments}, default=str)
        question = (
            f"The user's task: {state.goal}\n\nRecent conversation:\n{recent}\n\n"
            f"Proposed action: {proposal}"
        )
        request = ModelRequest(
            messages=(
                Message(role="system", content=self.instructions),
                Message(role="user", content=question),
            ),
            purpose=CRITIC_PURPOSE,
        )
        return Consult(self.model, request, self._decide)

    @staticmethod
    def _decide(response: ModelResponse) -> Allow | Deny | RequireApproval:
        return verdict_of(response.text)

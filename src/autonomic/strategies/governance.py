"""A governance board for high-stakes decisions: proposer, devil's advocate, compliance, chair.

Each round, the proposer drafts (text, and any actions in the plan format), the
advocate describes the worst case, compliance applies fixed rules — the tool policy's
verdict on every proposed action and the ``rules`` given — and the chair decides
``GO`` or ``NO-GO: reason``. A compliance failure is a no-go without asking the chair:
fixed rules are not overruled. Every role's output is a ``BoardSpoke`` event and every
decision a ``BoardDecided`` one. A no-go sends the reason back to the proposer for
another round (up to ``max_rounds``), then fails the run with it. On a go, the
proposal's actions run (inputs first, as in ReWOO) and the answer is the proposal and
their results.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import msgspec

from autonomic.events import Event, register_event
from autonomic.guards.base import Deny
from autonomic.guards.policy import ToolPolicy
from autonomic.messages import Message, ModelRequest, ToolCall
from autonomic.state import RunState, folds, register_slot
from autonomic.steps import Fail, Finish, ModelCall, Record, Step, ToolCalls
from autonomic.strategies.base import AgentView
from autonomic.strategies.plans import (
    PLAN_FORMAT,
    PlanBook,
    PlanError,
    PlanNode,
    PlanRecorded,
    evidence,
    node_calls,
    parse_plan,
    plan_progress,
)

__all__ = ["BoardDecided", "BoardSpoke", "GovernanceBoard", "Minutes"]

Rule = Callable[[str], "str | None"]
"""A fixed rule on the proposal's text: the violation, or None."""

ROLES = (
    "This decision goes to a board. The proposer drafts a proposal for the goal; the "
    "devil's advocate finds its worst case; compliance checks fixed rules; the chair "
    "decides GO or NO-GO."
)
PROPOSE = (
    "As the proposer, write the proposal. If it needs actions, list them at the end.\n"
    + PLAN_FORMAT.replace("Write nothing else.", "")
)
ADVOCATE = "As the devil's advocate: what is the worst that could happen if this goes ahead?"
CHAIR = "As the chair: reply 'GO' or 'NO-GO: <reason>'."


@register_event
class BoardSpoke(Event, frozen=True, tag=True):
    role: str
    round: int
    text: str
    ok: bool = True

    def trace_line(self) -> str:
        mark = "" if self.ok else " ✗"
        flat = " ".join(self.text.split())
        return f"  ⚖ {self.role}{mark} (round {self.round}): {flat[:100]}"


@register_event
class BoardDecided(Event, frozen=True, tag=True):
    round: int
    go: bool
    reason: str = ""

    def trace_line(self) -> str:
        verdict = "GO" if self.go else f"NO-GO: {self.reason}"
        return f"⚖ board decided (round {self.round}): {verdict}"


@register_slot
class Minutes(msgspec.Struct, gc=False):
    spoken: list[BoardSpoke] = []
    decisions: list[BoardDecided] = []


@folds(BoardSpoke)
def _spoke(s: RunState, e: BoardSpoke, ts: float) -> None:
    s.slot(Minutes).spoken.append(e)


@folds(BoardDecided)
def _decided(s: RunState, e: BoardDecided, ts: float) -> None:
    s.slot(Minutes).decisions.append(e)


class GovernanceBoard:
    name = "governance-board"
    events = (BoardSpoke, BoardDecided, PlanRecorded)

    def __init__(
        self,
        *,
        policy: ToolPolicy | None = None,
        rules: Sequence[Rule] = (),
        max_rounds: int = 2,
    ) -> None:
        """``policy``: the tool policy whose verdict on each proposed action compliance
        applies (give the agent the same one as a guard); ``rules``: fixed rules on the
        proposal's text."""
        self.policy, self.rules, self.max_rounds = policy, tuple(rules), max_rounds

    def next_step(self, state: RunState, agent: AgentView) -> Step:
        minutes = state.slot(Minutes)
        last = minutes.decisions[-1] if minutes.decisions else None
        if last is not None and last.go:
            return self._carry_out(state, agent, minutes)
        if last is not None and len(minutes.decisions) >= self.max_rounds:
            return Fail(f"the board said no-go after {last.round} round(s): {last.reason}")
        round_ = len(minutes.decisions) + 1
        said = {s.role for s in minutes.spoken if s.round == round_}
        proposals = state.transcripts.get("propose", [])
        if "proposer" not in said:
            if len(proposals) >= round_:
                return Record((BoardSpoke("proposer", round_, proposals[round_ - 1].content),))
            return self._ask(state, agent, "propose", "")
        proposal = proposals[round_ - 1].content
        worst = state.transcripts.get("advocate", [])
        if "advocate" not in said:
            if len(worst) < round_:
                return self._ask(state, agent, "advocate", ADVOCATE)
            # one Record per step: what the advocate said, and compliance's verdict
            violations = self._violations(state, agent, proposal)
            text = "; ".join(violations) if violations else "no rule is broken"
            events: list[Event] = [
                BoardSpoke("advocate", round_, worst[round_ - 1].content),
                BoardSpoke("compliance", round_, text, ok=not violations),
            ]
            if violations:
                events.append(BoardDecided(round_, False, f"compliance: {text}"))
            return Record(tuple(events))
        replies = state.transcripts.get("chair", [])
        if len(replies) < round_:
            return self._ask(state, agent, "chair", CHAIR)
        text = replies[round_ - 1].content.strip()
        verdict = text.upper()
        if verdict.startswith("NO-GO") or verdict.startswith("NO GO"):
            reason = text[5:].lstrip(" :-") or "the chair said no"
            decision = BoardDecided(round_, False, reason)
        elif verdict.startswith("GO"):
            decision = BoardDecided(round_, True)
        else:
            decision = BoardDecided(round_, False, "the chair's reply was neither GO nor NO-GO")
        decided: list[Event] = [BoardSpoke("chair", round_, text), decision]
        nodes = _actions(proposal, agent) if decision.go else ()
        if nodes:
            decided.append(PlanRecorded(self.name, 1, nodes, proposal))
        return Record(tuple(decided))

    def _violations(self, state: RunState, agent: AgentView, proposal: str) -> list[str]:
        found = [v for rule in self.rules if (v := rule(proposal))]
        try:
            nodes: Sequence[PlanNode] = _actions(proposal, agent)
        except PlanError as e:
            return [*found, f"its actions cannot be run: {e}"]
        if self.policy is not None:
            for node in nodes:
                verdict = self.policy.check_call(state, ToolCall(node.id, node.tool, node.args))
                if isinstance(verdict, Deny):
                    found.append(f"#{node.id} {verdict.reason}")
        return found

    def _ask(self, state: RunState, agent: AgentView, purpose: str, prompt: str) -> ModelCall:
        messages = _minutes(state, agent)
        if prompt:
            messages.append(Message(role="user", content=prompt))
        return ModelCall(ModelRequest(messages=tuple(messages), purpose=purpose))

    def _carry_out(self, state: RunState, agent: AgentView, minutes: Minutes) -> Step:
        proposal = next(s.text for s in reversed(minutes.spoken) if s.role == "proposer")
        book = state.slot(PlanBook)
        plan = book.plan
        if plan is None:
            return Finish(proposal)
        ready, _, _ = plan_progress(plan, book)
        if ready:
            return ToolCalls(node_calls(plan, ready, book), rationale="approved by the board")
        return Finish(f"{proposal}\n\nResults:\n{evidence(plan, book)}")


def _actions(proposal: str, agent: AgentView) -> tuple[PlanNode, ...]:
    """The proposal's actions; none when it lists none; PlanError when they are broken."""
    if "#E" not in proposal:
        return ()
    return parse_plan(proposal, agent.tools)


def _minutes(state: RunState, agent: AgentView) -> list[Message]:
    """The board's conversation so far, rebuilt from its events."""
    minutes = state.slot(Minutes)
    messages = [
        Message(role="system", content=f"{agent.instructions}\n\n{ROLES}"),
        Message(role="user", content=f"{state.goal}\n\n{PROPOSE}"),
    ]
    decisions = {d.round: d for d in minutes.decisions}
    for spoke in minutes.spoken:
        if spoke.role == "advocate":
            messages.append(Message(role="user", content=ADVOCATE))
        elif spoke.role == "chair":
            messages.append(Message(role="user", content=CHAIR))
        if spoke.role == "compliance":
            messages.append(Message(role="user", content=f"Compliance: {spoke.text}"))
        else:
            messages.append(Message(role="assistant", content=spoke.text))
        decided = decisions.get(spoke.round)
        if decided is not None and not decided.go and spoke.role in ("chair", "compliance"):
            if spoke.role == "compliance" and spoke.ok:
                continue
            messages.append(
                Message(
                    role="user",
                    content=f"NO-GO: {decided.reason}\n\nAs the proposer, revise the proposal.",
                )
            )
    return messages

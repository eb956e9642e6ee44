"""The Guard hook: every step passes ``check``, every tool call ``check_call``, before it
runs; every recorded event passes ``observe``.

Budgets, tool policy, approvals and the other guards plug in here. The driver calls them
in order for every step of every run, and waits for each verdict before anything
happens, so nothing the model asks for can go around them. Hooks may be plain or
``async`` methods.
"""

from __future__ import annotations

from collections.abc import Awaitable, Sequence
from dataclasses import dataclass

from autonomic.events import Event
from autonomic.messages import ToolCall
from autonomic.state import RunState
from autonomic.steps import Step

__all__ = [
    "ALLOW",
    "Allow",
    "CallVerdict",
    "Deny",
    "Guard",
    "RequireApproval",
    "Rewrite",
    "Verdict",
]


@dataclass(frozen=True, slots=True)
class Allow:
    pass


@dataclass(frozen=True, slots=True)
class Deny:
    """Refuse. A refused tool call becomes an error the model sees; any other refused
    step fails the run."""

    reason: str


@dataclass(frozen=True, slots=True)
class Rewrite:
    """Perform this step instead."""

    step: Step


@dataclass(frozen=True, slots=True)
class RequireApproval:
    """Run this tool call only once a person approves exactly it."""

    reason: str = ""


Verdict = Allow | Deny | Rewrite
CallVerdict = Allow | Deny | RequireApproval

ALLOW = Allow()


class Guard:
    """Base class for guards: override any hook; the defaults allow everything.

    ``name`` appears in ``GuardTripped`` events and in the agent's digest.
    """

    name: str = "guard"
    replays: bool = False
    """True when ``check`` is a pure, synchronous function of the run's state: replay
    then applies its rewrites, as the run did."""

    def check(self, state: RunState, step: Step) -> Verdict | Awaitable[Verdict]:
        """A verdict on the whole step, before it runs."""
        return ALLOW

    def check_call(self, state: RunState, call: ToolCall) -> CallVerdict | Awaitable[CallVerdict]:
        """A verdict on one tool call of a ``ToolCalls`` step, before it runs."""
        return ALLOW

    def observe(self, state: RunState, event: Event) -> Sequence[Event]:
        """Extra events to record after ``event`` (e.g. a warning); folded like any other.

        Only registered event types of the guard's own (or ``GuardTripped``) may be added:
        a guard cannot forge what the runtime records (a run's ending, an approval...).
        A guard that raises, or answers something that is not a verdict, fails the run."""
        return ()

"""The Guard hook: every step passes ``check`` before it runs, every event passes ``observe``.

Budgets, tool policy, approvals and the other guards plug in here; the runtime calls
them in order and nothing the agent does can go around them.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from autonomic.events import Event
from autonomic.state import RunState
from autonomic.steps import Step

__all__ = ["Allow", "Deny", "Guard", "Rewrite", "Verdict"]


@dataclass(frozen=True, slots=True)
class Allow:
    pass


@dataclass(frozen=True, slots=True)
class Deny:
    """Refuse the step. A refused tool call becomes an error the model sees; any other
    refused step fails the run."""

    reason: str


@dataclass(frozen=True, slots=True)
class Rewrite:
    """Perform this step instead."""

    step: Step


Verdict = Allow | Deny | Rewrite

ALLOW = Allow()


class Guard:
    """Base class for guards: override ``check`` and/or ``observe``; defaults do nothing."""

    name: str = "guard"

    def check(self, state: RunState, step: Step) -> Verdict:
        return ALLOW

    def observe(self, state: RunState, event: Event) -> Sequence[Event]:
        return ()

"""A child run keeps its ancestors' guards: an agent given as a tool, or started as a
sub-agent, cannot run with fewer guards than the agent that started it.

Budgets are not inherited this way: a child's budget is carved out of its parent's
remainder when it is spawned (``with_inherited_budget``).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING

from autonomic.guards.base import Guard
from autonomic.guards.budget import Budget

if TYPE_CHECKING:
    from autonomic.agent import Agent

__all__ = ["with_ancestor_guards"]


def with_ancestor_guards(
    guards: Sequence[Guard], ancestors: Iterable[Agent | None]
) -> tuple[Guard, ...]:
    """``guards``, then every guard of ``ancestors`` (root first) that is not among them
    already (the same object, or one with the same digest spec). ``None`` stands for an
    ancestor this process does not know."""
    from autonomic.agent import guard_spec

    merged = list(guards)
    specs = [guard_spec(g) for g in merged]
    for agent in ancestors:
        for guard in agent.guards if agent is not None else ():
            if isinstance(guard, Budget) or any(g is guard for g in merged):
                continue
            spec = guard_spec(guard)
            if spec in specs:
                continue
            merged.append(guard)
            specs.append(spec)
    return tuple(merged)

"""A blackboard controller: picks which specialist acts next from what the board says.

The controller's run is the root of the board's scope, so every write to the board
arrives in its log as a ``board:<key>`` signal; its view of the board is a fold over those
signals (the highest version of each key), the same after a crash or in a replay.
``pick(view)`` (pure) names the next specialist, or None when the work is done; the
specialist runs as a child run towards the controller's goal, reading and writing the
board with its tools. ``max_turns`` bounds the loop, so a selector that keeps picking
without progress fails with the picks it made instead of looping forever.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from typing import Any

from autonomic.blackboard import SIGNAL_PREFIX
from autonomic.state import RunState
from autonomic.steps import Await, Children, ChildSpec, Fail, Finish, Spawn, Step
from autonomic.strategies.base import AgentView

__all__ = ["BoardController", "board_view"]

Pick = Callable[[Mapping[str, Any]], "str | None"]


def board_view(state: RunState) -> dict[str, Any]:
    """The board as the run's signals tell it: each key's value at its highest version."""
    latest: dict[str, tuple[int, Any]] = {}
    for name, items in state.signals.items():
        if not name.startswith(SIGNAL_PREFIX):
            continue
        for data in items:
            if isinstance(data, dict) and isinstance(data.get("version"), int):
                key = name[len(SIGNAL_PREFIX) :]
                if key not in latest or data["version"] > latest[key][0]:
                    latest[key] = (data["version"], data.get("value"))
    return {k: v for k, (_, v) in sorted(latest.items())}


class BoardController:
    name = "board-controller"

    def __init__(
        self,
        pick: Pick,
        *,
        answer: Callable[[Mapping[str, Any]], str] | None = None,
        max_turns: int = 20,
    ) -> None:
        """``answer(view)`` writes the final answer (default: the board as JSON)."""
        self.pick, self.answer, self.max_turns = pick, answer, max_turns

    def next_step(self, state: RunState, agent: AgentView) -> Step:
        if state.open_children:
            return Await(Children(tuple(state.open_children)), reason="the specialist at work")
        view = board_view(state)
        choice = self.pick(view)
        if choice is None:
            return Finish(self.answer(view) if self.answer else json.dumps(view, sort_keys=True))
        turns = [c.agent for c in state.children.values()]
        if len(turns) >= self.max_turns:
            return Fail(
                f"the controller picked {len(turns)} specialists without finishing "
                f"(max_turns); last picks: {', '.join(turns[-5:])}"
            )
        if choice not in agent.subagents:
            return Fail(f"the controller picked {choice!r}, which is not one of its subagents")
        return Spawn((ChildSpec(choice, state.goal),))

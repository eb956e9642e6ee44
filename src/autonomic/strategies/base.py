"""The Strategy protocol: a pure function from a run's state to its next step."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from autonomic.messages import ToolSpec
from autonomic.state import RunState
from autonomic.steps import Step

__all__ = ["AgentView", "Strategy"]


@dataclass(frozen=True, slots=True)
class AgentView:
    """What a strategy may know of the agent: plain data, no model and no tool objects.

    ``subagents`` names the agents it may start as child runs (``Spawn``).
    """

    instructions: str
    tools: tuple[ToolSpec, ...]
    max_malformed: int = 3
    subagents: tuple[str, ...] = ()


class Strategy(Protocol):
    """Decides the next step. Must not do I/O, read clocks or draw random numbers.

    A strategy that records events of its own (``Record``) may list their types in an
    ``events`` attribute, so that replay checks them too.

    A strategy that schedules eagerly (the DAG planner) has a ``more_calls(state, agent)
    -> ToolCalls | None`` method too: while its tool calls run, the runtime asks it after
    each outcome for calls to start at once, next to those still running (they pass
    the guards as any step does). Without it, a step's calls all end before the next
    step is decided.
    """

    @property
    def name(self) -> str: ...

    def next_step(self, state: RunState, agent: AgentView) -> Step:
        """Called only while the run is live and no action, approval or durable wait is
        outstanding. Tool results, children's ends, signals and fired timers are in
        ``state`` by then."""
        ...

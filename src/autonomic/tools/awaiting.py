"""Tools whose effect is a durable wait: an agent called as a tool, and ``sleep``.

The runtime never ``invoke``s these in-process: a call becomes child runs and/or a
timer recorded in the log, the run suspends, and the call's outcome is recorded when the
children end or the timer fires, in whatever process wakes the run. A child may run for
hours across crashes; the caller holds no task, memory or lease meanwhile.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

from autonomic.errors import ConfigError, ToolError
from autonomic.messages import ToolSpec
from autonomic.steps import ChildSpec
from autonomic.store.base import checked_priority
from autonomic.tools.base import Tool, ToolContext
from autonomic.tools.options import DEFAULT_OPTIONS

if TYPE_CHECKING:
    from autonomic.agent import Agent
    from autonomic.state import ChildState

__all__ = ["AgentTool", "AwaitingTool", "Deferral", "SleepTool", "sleep"]


@dataclass(frozen=True, slots=True)
class Deferral:
    """What a call waits for: child runs to spawn, and/or a number of seconds."""

    children: tuple[ChildSpec, ...] = ()
    after_s: float | None = None


@runtime_checkable
class AwaitingTool(Tool, Protocol):
    """A tool performed as a durable wait instead of an in-process call."""

    def defer(self, arguments: dict[str, Any]) -> Deferral:
        """Validate the arguments and say what the call waits for; raises ToolError."""
        ...

    def outcome(self, arguments: dict[str, Any], children: Sequence[ChildState]) -> str:
        """The observation once the wait is over; raises ToolError for a failure."""
        ...


class _Deferred:
    """Shared plumbing: these tools are idempotent waits with no in-process timeout."""

    spec: ToolSpec
    idempotent = True
    timeout: float | None = None
    options = DEFAULT_OPTIONS

    async def invoke(self, arguments: dict[str, Any], context: ToolContext) -> str:
        raise ToolError(f"{type(self).__name__} runs as a durable wait, not in-process")


class AgentTool(_Deferred):
    """Another agent as a tool: each call is a child run towards the given goal, of
    ``priority`` if given, else of the calling run's priority."""

    def __init__(
        self,
        agent: Agent,
        *,
        name: str | None = None,
        description: str | None = None,
        priority: int | None = None,
    ):
        self.agent = agent
        self.priority = None if priority is None else checked_priority(priority)
        self.spec = ToolSpec(
            name=name or agent.name,
            description=description
            or f"Ask the agent {agent.name!r} to do a task; it answers with its result. "
            + agent.instructions[:200],
            parameters={
                "type": "object",
                "properties": {
                    "goal": {"type": "string", "description": "what the agent should do"}
                },
                "required": ["goal"],
                "additionalProperties": False,
            },
        )

    def defer(self, arguments: dict[str, Any]) -> Deferral:
        goal = arguments.get("goal")
        if not isinstance(goal, str) or not goal.strip() or set(arguments) - {"goal"}:
            raise ToolError("invalid arguments: give exactly one non-empty string, 'goal'")
        return Deferral(children=(ChildSpec(self.agent.name, goal, self.priority),))

    def outcome(self, arguments: dict[str, Any], children: Sequence[ChildState]) -> str:
        child = children[0]
        if child.status == "completed":
            return child.answer
        raise ToolError(f"agent {self.agent.name!r} {child.status}: {child.error or 'no answer'}")

    def __repr__(self) -> str:
        return f"<agent tool {self.spec.name}>"


class SleepTool(_Deferred):
    """``sleep(seconds)``: a durable pause that survives restarts and holds nothing."""

    def __init__(self, max_seconds: float) -> None:
        if max_seconds <= 0:
            raise ConfigError("sleep(max_seconds=...) must be positive")
        self.max_seconds = max_seconds
        self.spec = ToolSpec(
            name="sleep",
            description=f"Pause for a number of seconds (at most {max_seconds:g}) before going on.",
            parameters={
                "type": "object",
                "properties": {"seconds": {"type": "number", "minimum": 0, "maximum": max_seconds}},
                "required": ["seconds"],
                "additionalProperties": False,
            },
        )

    def _seconds(self, arguments: dict[str, Any]) -> float:
        seconds = arguments.get("seconds")
        if (
            isinstance(seconds, bool)
            or not isinstance(seconds, int | float)
            or not 0 <= seconds <= self.max_seconds
            or set(arguments) - {"seconds"}
        ):
            raise ToolError(
                f"invalid arguments: 'seconds' must be a number from 0 to {self.max_seconds:g}"
            )
        return float(seconds)

    def defer(self, arguments: dict[str, Any]) -> Deferral:
        return Deferral(after_s=self._seconds(arguments))

    def outcome(self, arguments: dict[str, Any], children: Sequence[ChildState]) -> str:
        return f"slept {self._seconds(arguments):g}s"


def sleep(max_seconds: float = 86_400.0) -> SleepTool:
    """The ``sleep`` tool, for pauses of up to ``max_seconds`` (a day by default)."""
    return SleepTool(max_seconds)

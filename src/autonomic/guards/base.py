"""The Guard hook: every step passes ``check``, every tool call ``check_call``, before it
runs; every recorded event passes ``observe``. What crosses the run's boundary passes
guards too: a new run's goal (``screen_goal``), what a tool receives (``tool_input``,
never recorded) and what it gave back (``tool_output``, before it is recorded or seen by
the model): the PII vault and the injection shields work there.

Budgets, tool policy, approvals and the other guards plug in here. The driver calls them
in order for every step of every run, and waits for each verdict before anything
happens, so nothing the model asks for can go around them. Hooks may be plain or
``async`` methods.
"""

from __future__ import annotations

import inspect
from collections.abc import Awaitable, Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any

from autonomic.errors import ConfigError
from autonomic.events import ActionCompleted, ActionFailed, ActionRequested, Event
from autonomic.messages import ToolCall
from autonomic.state import RunState
from autonomic.steps import Step

__all__ = [
    "ALLOW",
    "GUARD_PURPOSE",
    "Allow",
    "CallVerdict",
    "Consult",
    "Deny",
    "Guard",
    "RequireApproval",
    "Rewrite",
    "Verdict",
    "crossing_guards",
    "run_store",
    "run_tools",
    "screen_goal",
    "screen_inbound",
    "store_scope",
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
    """Perform this step instead. With a ``reason``, the rewrite is recorded as a
    ``GuardTripped`` (a loop nudge, say); without one it is silent."""

    step: Step
    reason: str = ""


@dataclass(frozen=True, slots=True)
class RequireApproval:
    """Run this tool call only once a person approves exactly it."""

    reason: str = ""


@dataclass(frozen=True, slots=True)
class Consult:
    """Ask ``model`` first (a critic): the runtime makes the call, records it under
    ``request.purpose`` (which must start with ``guard:``, keeping it out of the acting
    transcript; its cost counts like any other call), and the verdict on the tool call is
    ``decide(response)``. A model that fails denies the call."""

    model: Any
    request: Any
    decide: Callable[[Any], Allow | Deny | RequireApproval]


GUARD_PURPOSE = "guard:"
"""Model calls a guard asked for have a purpose starting with this (replay skips them)."""

Verdict = Allow | Deny | Rewrite
Outcome = ActionCompleted | ActionFailed
CallVerdict = Allow | Deny | RequireApproval | Consult

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

    def screen_goal(self, run_id: str, goal: str) -> str | Awaitable[str]:
        """What a new run records as its goal (and its model reads), given the goal asked
        for. ``run_store()`` is the store the run is created in."""
        return goal

    def screen_inbound(self, state: RunState, kind: str, data: Any) -> Any | Awaitable[Any]:
        """What a run records of ``data`` sent to it from outside: a signal's data (``kind``
        "signal") or the arguments an approver edited ("approval"). Asked before it enters
        the run's inbox, so nothing unscreened is stored; edited arguments then reach their
        tool through ``tool_input``, like the model's."""
        return data

    def tool_input(
        self, state: RunState, request: ActionRequested
    ) -> ActionRequested | Awaitable[ActionRequested]:
        """What the tool receives for ``request`` (its arguments restored, say). Never
        recorded: the log keeps the request as the model made it."""
        return request

    def tool_output(
        self, state: RunState, request: ActionRequested, outcome: Outcome
    ) -> Outcome | Awaitable[Outcome]:
        """What is recorded of a tool's ``outcome``, and so what the model sees of it."""
        return outcome

    def tool_events(
        self, state: RunState, request: ActionRequested, events: list[Event]
    ) -> Sequence[Event] | Awaitable[Sequence[Event]]:
        """What is recorded of the events an action's attempts recorded (retries, breaker
        changes, the tool's own), asked with ``tool_output`` by the guards that have it."""
        return events


_CROSSING_HOOKS = ("screen_goal", "screen_inbound", "tool_input", "tool_output")
_HOOKS = (*_CROSSING_HOOKS, "check", "check_call", "observe", "tool_events")
_SCOPE: ContextVar[tuple[Any, Mapping[str, Any]] | None] = ContextVar(
    "autonomic_guard_scope", default=None
)


def crossing_guards(guards: Sequence[Guard], hook: str) -> list[Guard]:
    """The guards that override ``hook`` (the others need not be asked)."""
    if hook not in _CROSSING_HOOKS:
        raise ValueError(f"unknown hook {hook!r}")
    return hooked(guards, hook)


def hooked(guards: Sequence[Guard], hook: str) -> list[Guard]:
    """The guards that override ``hook``, in order: the others would allow everything
    (or add nothing), so the driver need not ask them on every step."""
    if hook not in _HOOKS:
        raise ValueError(f"unknown hook {hook!r}")
    return [g for g in guards if getattr(type(g), hook, None) is not getattr(Guard, hook)]


def _scope() -> tuple[Any, Mapping[str, Any]]:
    scope = _SCOPE.get()
    if scope is None:
        raise ConfigError("no run is being driven here: run_store() and run_tools() are for guards")
    return scope


def run_store() -> Any:
    """The store of the run being driven (or created) in this task, for a guard that keeps
    something beside the run's events (the PII vault). ConfigError outside a run."""
    return _scope()[0]


def run_tools() -> Mapping[str, Any]:
    """The tools of the agent whose run is being driven in this task, by name (a guard
    judging a call needs to know whether its tool has side effects)."""
    return _scope()[1]


@contextmanager
def store_scope(store: Any, tools: Mapping[str, Any] | None = None) -> Iterator[None]:
    """Make ``store`` and ``tools`` what ``run_store()`` and ``run_tools()`` answer in
    this task, for the duration. Guards see a read-only copy: a tool that runs inside the
    scope cannot hide a tool (or itself) from them."""
    token = _SCOPE.set((store, MappingProxyType(dict(tools or {}))))
    try:
        yield
    finally:
        _SCOPE.reset(token)


async def screen_goal(guards: Sequence[Guard], store: Any, run_id: str, goal: str) -> str:
    """``goal`` after every guard's ``screen_goal``; a guard that fails refuses the run."""
    screening = crossing_guards(guards, "screen_goal")
    if not screening:
        return goal
    with store_scope(store):
        for guard in screening:
            result = guard.screen_goal(run_id, goal)
            goal = await result if inspect.isawaitable(result) else result
            if not isinstance(goal, str):
                raise ConfigError(
                    f"guard {guard.name!r} screened the goal into a {type(goal).__name__}, not text"
                )
    return goal


async def screen_inbound(
    guards: Sequence[Guard], store: Any, state: RunState, kind: str, data: Any
) -> Any:
    """``data`` sent to the run of ``state`` after every guard's ``screen_inbound``."""
    screening = crossing_guards(guards, "screen_inbound")
    if not screening:
        return data
    with store_scope(store):
        for guard in screening:
            result = guard.screen_inbound(state, kind, data)
            data = await result if inspect.isawaitable(result) else result
    return data

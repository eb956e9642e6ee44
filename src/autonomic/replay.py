"""Deterministic replay: re-run a run's strategy against its own log, calling nothing.

Model responses, tool outcomes, approvals and children's results come from the log; at
every point where the runtime asked the strategy for a step, the strategy must ask for
exactly what was recorded (the same model request, byte for byte by digest, the same
tool calls, children, events and answer), or replay stops with ReplayDivergence.
"""

from __future__ import annotations

from collections.abc import Sequence

from autonomic.agent import Agent
from autonomic.digest import RequestDigester, request_digest
from autonomic.errors import ReplayDivergence
from autonomic.events import (
    ActionDeferred,
    ActionFailed,
    ActionRequested,
    ApprovalRequested,
    ChildSpawned,
    Event,
    GuardTripped,
    ModelCalled,
    ModelResponded,
    RunCompleted,
)
from autonomic.guards.base import GUARD_PURPOSE, Guard, Rewrite, store_scope
from autonomic.guards.budget import with_inherited_budget
from autonomic.guards.inherit import with_ancestor_guards
from autonomic.loader import StoredEvent
from autonomic.state import RunState
from autonomic.steps import Finish, ModelCall, Record, Spawn, Step, ToolCalls

__all__ = ["replay_events"]

_CALL_GROUP = (
    ActionRequested,
    ApprovalRequested,
    ActionFailed,
    GuardTripped,
    ActionDeferred,
    ChildSpawned,
)


def _describe(step: object) -> str:
    if isinstance(step, ModelCall):
        return f"a model call ({request_digest(step.request)})"
    if isinstance(step, ToolCalls):
        return "tool calls " + ", ".join(c.name for c in step.calls)
    if isinstance(step, Finish):
        return f"finish {step.answer!r}"
    return type(step).__name__.lower()


def _group(events: Sequence[StoredEvent], start: int, kinds: tuple[type[Event], ...]) -> int:
    """The index just after the events of one step that begin at ``start`` (a guard's
    consultation of a model between its calls included)."""
    end = start + 1
    while end < len(events) and (
        isinstance(events[end].event, kinds) or _consulting(events[end].event)
    ):
        end += 1
    return end


def _consulting(event: Event) -> bool:
    """Is ``event`` part of a model call a guard made (a critic), not a decision?"""
    return isinstance(event, ModelCalled | ModelResponded) and event.purpose.startswith(
        GUARD_PURPOSE
    )


def _recorded_calls(events: Sequence[StoredEvent]) -> list[tuple[str, str, dict[str, object]]]:
    return [
        (e.event.call_id, e.event.tool, dict(e.event.args))
        for e in events
        if isinstance(e.event, ActionRequested | ApprovalRequested)
    ]


def _check(
    step: Step | None, events: Sequence[StoredEvent], digester: RequestDigester
) -> str | None:
    """Why ``step`` is not what ``events`` (one step's record) say; None when it is."""
    first = events[0].event
    if isinstance(first, ModelCalled):
        if isinstance(step, ModelCall) and digester.digest(step.request) == first.request_digest:
            return None
        return f"the log has a model call ({first.request_digest})"
    if isinstance(first, ActionRequested | ApprovalRequested):
        expected = (
            [(c.id, c.name, dict(c.arguments)) for c in step.calls]
            if isinstance(step, ToolCalls)
            else None
        )
        return None if expected == _recorded_calls(events) else "the log has tool calls"
    if isinstance(first, ChildSpawned):
        spawned = [
            (e.event.agent, e.event.goal) for e in events if isinstance(e.event, ChildSpawned)
        ]
        asked = [(c.agent, c.goal) for c in step.children] if isinstance(step, Spawn) else None
        return None if asked == spawned else "the log has child runs"
    if isinstance(first, RunCompleted):
        return None if step == Finish(first.answer) else f"the log has the answer {first.answer!r}"
    recorded = [e.event for e in events]
    return (
        None
        if isinstance(step, Record) and list(step.events) == recorded
        else "the log has the strategy's own events"
    )


def _decision_extent(events: Sequence[StoredEvent], i: int, agent: Agent) -> int | None:
    """If event ``i`` records a step the strategy chose, the index after that step's events."""
    event = events[i].event
    if _consulting(event):
        return None
    if isinstance(event, ModelCalled | RunCompleted):
        return i + 1
    if isinstance(event, ActionRequested | ApprovalRequested):
        return _group(events, i, _CALL_GROUP)
    if isinstance(event, ChildSpawned):
        return _group(events, i, (ChildSpawned,))
    own: tuple[type[Event], ...] = tuple(getattr(agent.strategy, "events", ()))
    if own and isinstance(event, own):
        return _group(events, i, own)
    return None


def _guarded(agent: Agent, guards: Sequence[Guard], state: RunState, step: Step) -> Step:
    """``step`` as the guards that replay (pure ones, such as a budget) rewrote it."""
    with store_scope(None, agent.tool_map):  # a guard may ask what a tool declares
        for guard in with_inherited_budget(guards, state):
            if guard.replays:
                verdict = guard.check(state, step)
                if isinstance(verdict, Rewrite):
                    step = verdict.step
    return step


def replay_events(
    run_id: str,
    events: list[StoredEvent],
    agent: Agent,
    ancestors: Sequence[Agent | None] = (),
) -> RunState:
    """Rebuild the run's state by re-deciding every step; raises ReplayDivergence.

    ``ancestors``: the agents of a child run's lineage, root first, whose guards it ran
    under as well as its own (as when it was driven)."""
    guards = with_ancestor_guards(agent.guards, ancestors)
    state = RunState(run_id=run_id)
    digester = RequestDigester()
    more = getattr(agent.strategy, "more_calls", None)
    i = 0
    while i < len(events):
        deciding = state.status == "running" and not (
            state.pending or state.approvals or state.granted or state.deferred
        )
        # an eager strategy's calls, asked for while others ran (not an approved call)
        eager = (
            callable(more)
            and state.status == "running"
            and bool(state.pending)
            and not state.granted
            and isinstance(events[i].event, ActionRequested | ApprovalRequested)
        )
        end = _decision_extent(events, i, agent) if deciding or eager else None
        if end is not None:
            asked = (
                agent.strategy.next_step(state, agent.view())
                if deciding
                else more(state, agent.view())  # type: ignore[misc]
            )
            step = _guarded(agent, guards, state, asked) if asked is not None else asked
            if isinstance(step, Record) and end is not None:  # steps' own events may abut
                end = min(end, i + len(step.events))
            why = _check(step, events[i:end], digester)
            if why is not None:
                stored = events[i]
                raise ReplayDivergence(
                    f"event {stored.seq} ({type(stored.event).__name__}): {why} "
                    f"but the strategy asked for {_describe(step)}"
                )
        for stored in events[i : end or i + 1]:
            state.apply(stored.event, stored.seq, stored.ts)
        i = end or i + 1
    return state

"""Deterministic replay: re-run a run's strategy against its own log, calling nothing.

Model responses and tool outcomes come from the log; at every decision the strategy
must ask for exactly what was recorded (the same model request, byte for byte by
digest, the same tool calls, the same answer), or replay stops with ReplayDivergence.
"""

from __future__ import annotations

from autonomic.agent import Agent
from autonomic.digest import RequestDigester, request_digest
from autonomic.errors import ReplayDivergence
from autonomic.events import ActionFailed, ActionRequested, ModelCalled, RunCompleted
from autonomic.loader import StoredEvent
from autonomic.state import RunState
from autonomic.steps import Finish, ModelCall, Step, ToolCalls

__all__ = ["replay_events"]


def _describe(step: Step) -> str:
    if isinstance(step, ModelCall):
        return f"a model call ({request_digest(step.request)})"
    if isinstance(step, ToolCalls):
        return "tool calls " + ", ".join(c.name for c in step.calls)
    return type(step).__name__.lower() + (f" {step.answer!r}" if isinstance(step, Finish) else "")


def _recorded_calls(
    events: list[StoredEvent], start: int
) -> list[tuple[str, str, dict[str, object]]]:
    calls = []
    for stored in events[start:]:
        if isinstance(stored.event, ActionRequested):
            calls.append((stored.event.call_id, stored.event.tool, dict(stored.event.args)))
        elif not isinstance(stored.event, ActionFailed):
            break
    return calls


def _check(
    events: list[StoredEvent], i: int, state: RunState, agent: Agent, digester: RequestDigester
) -> None:
    event = events[i].event
    previous = events[i - 1].event if i else None
    decision = isinstance(event, ModelCalled | RunCompleted) or (
        isinstance(event, ActionRequested)
        and not isinstance(previous, ActionRequested | ActionFailed)
    )
    if not decision:
        return
    step = agent.strategy.next_step(state, agent.view())
    where = f"event {events[i].seq} ({type(event).__name__})"
    if isinstance(event, ModelCalled):
        if not isinstance(step, ModelCall) or digester.digest(step.request) != event.request_digest:
            raise ReplayDivergence(
                f"{where}: the log has a model call ({event.request_digest}) "
                f"but the strategy asked for {_describe(step)}"
            )
    elif isinstance(event, ActionRequested):
        expected = (
            [(c.id, c.name, dict(c.arguments)) for c in step.calls]
            if isinstance(step, ToolCalls)
            else None
        )
        if expected != _recorded_calls(events, i):
            raise ReplayDivergence(
                f"{where}: the log has tool calls but the strategy asked for {_describe(step)}"
            )
    elif isinstance(event, RunCompleted) and step != Finish(event.answer):
        raise ReplayDivergence(
            f"{where}: the log has the answer {event.answer!r} "
            f"but the strategy asked for {_describe(step)}"
        )


def replay_events(run_id: str, events: list[StoredEvent], agent: Agent) -> RunState:
    """Rebuild the run's state by re-deciding every step; raises ReplayDivergence."""
    state = RunState(run_id=run_id)
    digester = RequestDigester()
    for i, stored in enumerate(events):
        if state.status == "running" and not state.pending:
            _check(events, i, state, agent, digester)
        state.apply(stored.event, stored.seq, stored.ts)
    return state

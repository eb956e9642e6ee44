"""The state of a run: a fold over its events.

``RunState.apply`` is the only place that knows how each event changes a run. The
runtime keeps the folded state in memory while it drives a run and snapshots it every
few events, so loading a run reads a snapshot and the events after it.
"""

from __future__ import annotations

from typing import Any

import msgspec

from autonomic.events import (
    ActionCompleted,
    ActionFailed,
    ActionRequested,
    Event,
    GuardTripped,
    ModelCalled,
    ModelResponded,
    Resumed,
    RunCancelled,
    RunCompleted,
    RunFailed,
    RunForked,
    RunStarted,
    Suspended,
    Thought,
)
from autonomic.models.base import Message, Usage

__all__ = ["TERMINAL", "RunState", "malformed_reason"]

TERMINAL = frozenset({"completed", "failed", "cancelled"})


def malformed_reason(event: ModelResponded) -> str | None:
    """Why a model response cannot be used, or None when it can."""
    broken = [c for c in event.tool_calls if c.error]
    if broken:
        return f"tool call {broken[0].name!r} has malformed arguments: {broken[0].error}"
    if not event.text.strip() and not event.tool_calls:
        return "the response was empty (no text and no tool call)"
    return None


class RunState(msgspec.Struct, kw_only=True, gc=False):
    """Everything known about a run at event ``seq``."""

    run_id: str
    seq: int = 0
    status: str = "pending"
    goal: str = ""
    agent: str = ""
    agent_path: str | None = None
    agent_digest: str = ""
    limits: dict[str, Any] = {}
    parent_run_id: str | None = None
    forked_from: str | None = None
    started_at: float = 0.0
    active_since: float = 0.0
    active_before: float = 0.0
    last_ts: float = 0.0
    messages: list[Message] = msgspec.field(default_factory=list)
    model_calls: int = 0
    usage: Usage = Usage()
    cost: float = 0.0
    unpriced_calls: int = 0
    """Model calls with no known price: counted at the price table's highest price, or not
    at all when the model reported none."""
    actions_requested: int = 0
    pending: dict[str, ActionRequested] = msgspec.field(default_factory=dict)
    malformed_streak: int = 0
    last_malformed: str = ""
    guard_trips: int = 0
    answer: str | None = None
    error: str | None = None
    strategy: dict[str, Any] = msgspec.field(default_factory=dict)

    @property
    def terminal(self) -> bool:
        return self.status in TERMINAL

    def active_seconds(self, now: float) -> float:
        """Wall time the run has been driven, not counting time it lay crashed or suspended."""
        return self.active_before + max(0.0, now - self.active_since)

    def apply(self, event: Event, seq: int, ts: float) -> None:
        """Fold one event into the state."""
        handler = _HANDLERS.get(type(event))
        if handler is not None:
            handler(self, event, ts)
        self.seq = seq
        self.last_ts = ts


def _run_started(s: RunState, e: RunStarted, ts: float) -> None:
    s.status = "running"
    s.goal, s.agent, s.agent_path, s.agent_digest = e.goal, e.agent, e.agent_path, e.agent_digest
    s.limits, s.parent_run_id = dict(e.limits), e.parent_run_id
    s.started_at = s.active_since = ts
    s.messages.append(Message(role="user", content=e.goal))


def _restart_clock(s: RunState, ts: float) -> None:
    s.active_before += max(0.0, s.last_ts - s.active_since) if s.active_since else 0.0
    s.active_since = ts


def _run_forked(s: RunState, e: RunForked, ts: float) -> None:
    s.status, s.answer, s.error, s.forked_from = "running", None, None, e.from_run_id
    s.active_before, s.active_since = 0.0, ts


def _model_called(s: RunState, e: ModelCalled, ts: float) -> None:
    s.model_calls += 1


def _model_responded(s: RunState, e: ModelResponded, ts: float) -> None:
    s.usage = s.usage + e.usage
    if e.cost is None:
        s.unpriced_calls += 1
    else:
        s.cost += e.cost
        if e.meta.get("price_unknown"):
            s.unpriced_calls += 1
    s.messages.append(Message(role="assistant", content=e.text, tool_calls=e.tool_calls))
    reason = malformed_reason(e)
    if reason is None:
        s.malformed_streak, s.last_malformed = 0, ""
    else:
        s.malformed_streak += 1
        s.last_malformed = reason


def _action_requested(s: RunState, e: ActionRequested, ts: float) -> None:
    s.actions_requested += 1
    s.pending[e.action_id] = e


def _action_completed(s: RunState, e: ActionCompleted, ts: float) -> None:
    request = s.pending.pop(e.action_id, None)
    if request is not None:
        s.messages.append(
            Message(
                role="tool", content=e.observation, tool_call_id=request.call_id, name=request.tool
            )
        )


def _action_failed(s: RunState, e: ActionFailed, ts: float) -> None:
    request = s.pending.pop(e.action_id, None)
    if request is not None:
        s.messages.append(
            Message(
                role="tool",
                content=f"Error: {e.error}",
                tool_call_id=request.call_id,
                name=request.tool,
            )
        )


def _guard_tripped(s: RunState, e: GuardTripped, ts: float) -> None:
    s.guard_trips += 1


def _suspended(s: RunState, e: Suspended, ts: float) -> None:
    s.status = "suspended"


def _resumed(s: RunState, e: Resumed, ts: float) -> None:
    s.status = "running"
    _restart_clock(s, ts)


def _completed(s: RunState, e: RunCompleted, ts: float) -> None:
    s.status, s.answer = "completed", e.answer


def _failed(s: RunState, e: RunFailed, ts: float) -> None:
    s.status, s.error = "failed", e.error


def _cancelled(s: RunState, e: RunCancelled, ts: float) -> None:
    s.status, s.error = "cancelled", f"cancelled by {e.by}"


def _thought(s: RunState, e: Thought, ts: float) -> None:
    return None


_HANDLERS: dict[type[Event], Any] = {
    RunStarted: _run_started,
    RunForked: _run_forked,
    ModelCalled: _model_called,
    ModelResponded: _model_responded,
    Thought: _thought,
    ActionRequested: _action_requested,
    ActionCompleted: _action_completed,
    ActionFailed: _action_failed,
    GuardTripped: _guard_tripped,
    Suspended: _suspended,
    Resumed: _resumed,
    RunCompleted: _completed,
    RunFailed: _failed,
    RunCancelled: _cancelled,
}
